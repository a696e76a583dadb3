package runner

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/state"
)

// TestKilledRunnersLoseAndDuplicateNothing runs `sluice runner` as a real process and kills
// it with SIGKILL at 20 random moments (mid-batch included), starting a replacement each time
// as the Job would. At the end the sink must equal the source, the committed counters must
// count every row once, and the checkpoint must never have moved backwards.
func TestKilledRunnersLoseAndDuplicateNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs it many times")
	}
	bin := buildSluice(t)
	for _, tp := range topologies {
		t.Run(tp.name, func(t *testing.T) {
			main, dst := dbsFor(t, tp)
			const rows = 50000
			createSource(t, main, rows)
			createTarget(t, dst, "items")
			cfg := writeConfig(t, testConfig(main, dst))
			spec := specJSON(t, specOpts{mode: etlv1.ModeIncremental, sourceConn: "main", targetConn: dst.name, batch: 500,
				attempts: 3, backoff: 200 * time.Millisecond})
			env := runEnv(envOf(main, dst), spec, "run-1")

			d := calibrate(t, bin, cfg, env, main, dst)
			ctx, cancel := context.WithCancel(context.Background())
			watch, watchDone := watchCheckpoint(ctx, t, main,
				`SELECT incremental_checkpoint[1]::timestamptz, incremental_checkpoint[2]::bigint FROM etl.etl_state`)

			args := []string{"--config", cfg, "--no-status", "--termination-log", "", "--log-level", "warn"}
			kills, total := 20, rows
			// Anywhere in the first quarter of a whole run's duration: before the first batch,
			// inside batches and between them.
			completions := killRunsAtRandom(t, bin, env, args, killPlan{kills: kills, window: d / 4, stream: 42,
				more: func() { insertRows(t, main, total+1, total+10000); total += 10000 }})
			p := startRunner(t, bin, env, "--config", cfg, "--no-status", "--termination-log", "", "--log-level", "warn")
			if code := p.wait(t, 2*time.Minute); code != configv1.ExitOK {
				t.Fatalf("final runner exited %d; its log:\n%s", code, p.log)
			}
			cancel()
			<-watchDone
			t.Logf("uninterrupted run %s; %d kills, %d runs completed before their kill, %d rows, %d checkpoint samples",
				d, kills, completions, total, watch.samples)

			sinkMatchesSource(t, main, dst, "items")
			if n := main.queryInt(t, `SELECT rows_read FROM etl.etl_state`); n != int64(total) {
				t.Fatalf("committed counters say %d rows read, want %d: a batch was counted twice or lost", n, total)
			}
			if len(watch.backwards) > 0 {
				t.Fatalf("the checkpoint moved backwards: %v", watch.backwards)
			}
			if watch.samples < 10 {
				t.Fatalf("only %d checkpoint samples: the watch did not observe the run", watch.samples)
			}
		})
	}
}

// TestKilledFullRunResumesInsideTheRun kills a full run's processes; each replacement (same
// run id) continues after the run's checkpoint instead of starting over.
func TestKilledFullRunResumesInsideTheRun(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs it many times")
	}
	bin := buildSluice(t)
	main := newTestDB(t, "main")
	const rows = 30000
	createSource(t, main, rows)
	createTarget(t, main, "items")
	cfg := writeConfig(t, testConfig(main))
	spec := specJSON(t, specOpts{mode: etlv1.ModeFull, sourceConn: "main", batch: 500})
	env := runEnv(envOf(main), spec, "run-1")
	d := calibrate(t, bin, cfg, env, main, main)
	ctx, cancel := context.WithCancel(context.Background())
	watch, watchDone := watchCheckpoint(ctx, t, main, `SELECT NULL::timestamptz, full_checkpoint[1]::bigint FROM etl.etl_state`)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	kills := 0
	for ; kills < 10; kills++ {
		p := startRunner(t, bin, env, "--config", cfg, "--no-status", "--termination-log", "", "--log-level", "warn")
		select {
		case <-p.done:
			// The run completed before this kill; the checks below still hold.
			kills = 100
		case <-time.After(time.Duration(rng.Int64N(int64(d / 5)))):
			_ = p.cmd.Process.Kill()
			<-p.done
			// Killed after it recorded the run as completed: without a status to fence it, a
			// replacement would run the completed run again.
			if main.queryInt(t, `SELECT count(*) FROM etl.etl_runs WHERE run_id = 'run-1' AND outcome = $1`, state.OutcomeSucceeded) > 0 {
				kills = 100
			}
		}
	}
	if kills > 10 && watch.samples == 0 {
		t.Fatalf("the full run completed before any checkpoint was observed")
	}
	if kills <= 10 {
		// Not completed yet: a last runner carries the run to its end.
		p := startRunner(t, bin, env, "--config", cfg, "--no-status", "--termination-log", "", "--log-level", "warn")
		if code := p.wait(t, 2*time.Minute); code != configv1.ExitOK {
			t.Fatalf("final runner exited %d; its log:\n%s", code, p.log)
		}
	}
	cancel()
	<-watchDone
	sinkMatchesSource(t, main, main, "items")
	if n := main.queryInt(t, `SELECT rows_read FROM etl.etl_state`); n != rows {
		t.Fatalf("the full run read %d rows over its pods, want %d: a replacement started over or skipped", n, rows)
	}
	if len(watch.backwards) > 0 {
		t.Fatalf("the checkpoint moved backwards: %v", watch.backwards)
	}
}
