package runner

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"

	"github.com/sluice-dev/sluice/test/testenv"
)

// buildSluice builds the sluice binary into the test's temporary directory. The Go build
// cache makes every build after the first one cheap.
func buildSluice(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "sluice")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = testenv.RepoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func writeConfig(t *testing.T, cfg *configv1.OperatorConfig) string {
	t.Helper()
	data, err := json.Marshal(cfg)
	if err != nil {
		t.Fatalf("marshal config: %v", err)
	}
	path := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatalf("write config: %v", err)
	}
	return path
}

// runnerProcess is a `sluice runner` subprocess.
type runnerProcess struct {
	cmd  *exec.Cmd
	log  *bytes.Buffer
	done chan struct{}
	err  error
}

func startRunner(t *testing.T, bin string, env map[string]string, args ...string) *runnerProcess {
	t.Helper()
	// No metrics endpoint: the runner's :8080 is the e2e suite's, which runs beside these tests.
	if !slices.Contains(args, "--metrics-bind-address") {
		args = append(args, "--metrics-bind-address", "0")
	}
	cmd := exec.Command(bin, append([]string{"runner"}, args...)...)
	cmd.Env = append(os.Environ(), "GOGC=100")
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	p := &runnerProcess{cmd: cmd, log: &bytes.Buffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start runner: %v", err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
	})
	return p
}

// wait returns the exit code.
func (p *runnerProcess) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Fatalf("runner did not finish within %s; its log:\n%s", timeout, p.log)
	}
	var exit *exec.ExitError
	if errors.As(p.err, &exit) {
		return exit.ExitCode()
	}
	if p.err != nil {
		t.Fatalf("runner: %v", p.err)
	}
	return 0
}

func runEnv(base map[string]string, spec, runID string) map[string]string {
	env := map[string]string{
		configv1.EnvPipelineNamespace: "tenant",
		configv1.EnvPipelineName:      "items",
		configv1.EnvRunID:             runID,
		configv1.EnvSpec:              spec,
		configv1.EnvGeneration:        "1",
	}
	for k, v := range base {
		env[k] = v
	}
	return env
}

// checkpointWatch polls the committed checkpoint and remembers whether it ever moved back.
type checkpointWatch struct {
	backwards []string
	samples   int
}

// watchCheckpoint polls on a connection of its own; a NULL checkpoint (a completed full run)
// starts a new sequence.
func watchCheckpoint(ctx context.Context, t *testing.T, db *testDB, sql string) (*checkpointWatch, chan struct{}) {
	w := &checkpointWatch{}
	done := make(chan struct{})
	conn, err := pgx.Connect(ctx, db.dsn)
	if err != nil {
		t.Fatalf("connect checkpoint watch: %v", err)
	}
	go func() {
		defer close(done)
		defer func() { _ = conn.Close(context.Background()) }()
		var lastT time.Time
		var lastID int64
		have := false
		for ctx.Err() == nil {
			var ts *time.Time
			var id *int64
			err := conn.QueryRow(ctx, sql).Scan(&ts, &id)
			if err == nil && id == nil {
				have = false
			}
			if err == nil && id != nil {
				t := time.Time{}
				if ts != nil {
					t = *ts
				}
				if have && (t.Before(lastT) || (t.Equal(lastT) && *id < lastID)) {
					w.backwards = append(w.backwards, fmt.Sprintf("(%s, %d) after (%s, %d)", t, *id, lastT, lastID))
				}
				lastT, lastID, have = t, *id, true
				w.samples++
			}
			time.Sleep(3 * time.Millisecond)
		}
	}()
	return w, done
}

// calibrate times one uninterrupted run of the data under a throwaway pipeline name, then
// removes its traces, so that kills can be spread over a run's real duration on this machine.
func calibrate(t *testing.T, bin, cfg string, env map[string]string, main, dst *testDB) time.Duration {
	t.Helper()
	calib := map[string]string{}
	for k, v := range env {
		calib[k] = v
	}
	calib[configv1.EnvPipelineName] = "calibration"
	start := time.Now()
	p := startRunner(t, bin, calib, "--config", cfg, "--no-status", "--termination-log", "", "--log-level", "warn")
	if code := p.wait(t, 2*time.Minute); code != configv1.ExitOK {
		t.Fatalf("calibration run exited %d; its log:\n%s", code, p.log)
	}
	d := time.Since(start)
	dst.exec(t, `TRUNCATE analytics.items`)
	main.exec(t, `TRUNCATE etl.etl_state, etl.etl_runs`)
	return d
}

// killPlan says how killRunsAtRandom interrupts runners.
type killPlan struct {
	// kills is how many runners are killed.
	kills int
	// window bounds the random moment of each kill after its runner starts.
	window time.Duration
	// stream makes the test's random sequence its own (with the logged seed it replays a run).
	stream uint64
	// more adds source rows when a runner caught up before its kill, so the next one has work.
	more func()
	// onKill, when set, runs just before a kill; the function it returns runs just after.
	onKill func(p *runnerProcess) (after func())
}

// killRunsAtRandom starts the runner again and again and SIGKILLs each one at a random moment
// of the plan's window, until it has killed plan.kills of them. It returns how many runners
// finished before their kill.
func killRunsAtRandom(t *testing.T, bin string, env map[string]string, args []string, plan killPlan) (completions int) {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	t.Logf("kill seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, plan.stream))
	for kills := 0; kills < plan.kills; {
		p := startRunner(t, bin, env, args...)
		select {
		case <-p.done:
			if code := p.wait(t, time.Second); code != configv1.ExitOK {
				t.Fatalf("runner exited %d; its log:\n%s", code, p.log)
			}
			completions++
			plan.more()
		case <-time.After(time.Duration(rng.Int64N(int64(plan.window)))):
			after := func() {}
			if plan.onKill != nil {
				after = plan.onKill(p)
			}
			_ = p.cmd.Process.Kill()
			<-p.done
			after()
			kills++
		}
	}
	return completions
}

// killUntilDone starts the runner of one run again and again and SIGKILLs each at a random
// moment of window, until one completes the run (or, after maxKills kills, waits for the next
// one to). A runner killed after it recorded the run as completed ends the loop too (done
// says so): without a status to fence it, a replacement would run the completed run again.
// It returns the number of kills.
func killUntilDone(t *testing.T, bin string, env map[string]string, args []string, window time.Duration, maxKills int, stream uint64,
	done func() bool) int {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	t.Logf("kill seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, stream))
	kills := 0
	for {
		p := startRunner(t, bin, env, args...)
		select {
		case <-p.done:
			if code := p.wait(t, time.Second); code != configv1.ExitOK {
				t.Fatalf("runner exited %d; its log:\n%s", code, p.log)
			}
			return kills
		case <-time.After(time.Duration(rng.Int64N(int64(window)))):
			if kills == maxKills {
				if code := p.wait(t, 2*time.Minute); code != configv1.ExitOK {
					t.Fatalf("final runner exited %d; its log:\n%s", code, p.log)
				}
				return kills
			}
			_ = p.cmd.Process.Kill()
			<-p.done
			kills++
			if done() {
				return kills
			}
		}
	}
}
