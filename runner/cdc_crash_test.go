package runner

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	"github.com/sluice-dev/sluice/runner/state"
)

// slotWatch samples, on a connection of its own, the slot's confirmed position and then the
// committed checkpoint: the slot may never confirm past what the sink committed.
type slotWatch struct {
	mu         sync.Mutex
	violations []string
	samples    int
}

func watchSlot(ctx context.Context, t *testing.T, db *testDB, p state.Pipeline) (*slotWatch, chan struct{}) {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), db.dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	w, done := &slotWatch{}, make(chan struct{})
	go func() {
		defer close(done)
		defer func() { _ = conn.Close(context.Background()) }()
		for ctx.Err() == nil {
			var confirmed *string
			err := conn.QueryRow(ctx, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots
				WHERE database = current_database()`).Scan(&confirmed)
			if err == nil && confirmed != nil {
				c, _ := pglogrepl.ParseLSN(*confirmed)
				var cols, vals []string
				err = conn.QueryRow(ctx, `SELECT coalesce(incremental_columns, '{}'), coalesce(incremental_checkpoint, '{}')
					FROM etl.etl_state WHERE namespace = $1 AND name = $2`, p.Namespace, p.Name).Scan(&cols, &vals)
				if err == nil && len(cols) == 1 && cols[0] == lsnColumn {
					cp, _ := pglogrepl.ParseLSN(vals[0])
					w.mu.Lock()
					w.samples++
					if c > cp {
						w.violations = append(w.violations, fmt.Sprintf("confirmed %s past checkpoint %s", c, cp))
					}
					w.mu.Unlock()
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	return w, done
}

// TestKilledCDCRunnersStayExact SIGKILLs CDC runners at random moments, during the initial
// copy and while they stream, while writers insert, update (keys too) and delete rows in
// transactions, some held open. Each replacement continues from the committed checkpoint. At
// the end the sink equals the source by count and checksum (every document, for
// Elasticsearch), and the slot never confirmed a position past the committed checkpoint.
func TestKilledCDCRunnersStayExact(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the binary and runs it many times")
	}
	bin := buildSluice(t)
	for i, sk := range cdcSinks {
		t.Run(sk.name, func(t *testing.T) {
			t.Parallel()
			main, dst := dbsFor(t, topology{sk.name, sk.shared})
			dropSlotsAtCleanup(t, main)
			createSource(t, main, 60000)
			cfg, env, spec, sinkMatches := cdcTarget(t, sk, main, dst, 250)
			cfgPath := writeConfig(t, cfg)
			p := state.Pipeline{Namespace: "tenant", Name: "items"}
			args := []string{"--config", cfgPath, "--no-status", "--termination-log", "", "--log-level", "warn"}
			renv := runEnv(env, spec, "run-1")

			ctx, stop := context.WithCancel(context.Background())
			defer stop()
			watch, watched := watchSlot(ctx, t, main, p)
			wctx, stopWriters := context.WithCancel(ctx)
			wait := cdcWriters(wctx, t, main, 3)
			copyKills, streamKills := killDuringCopy(t, bin, renv, args, main, p, 4, uint64(100+i))
			// One runner finishes the copy, so that the kills below find the stream.
			if checkpointLSNOf(t, main, p) == 0 {
				r := startRunner(t, bin, renv, args...)
				for deadline := time.Now().Add(2 * time.Minute); checkpointLSNOf(t, main, p) == 0; {
					if time.Now().After(deadline) {
						t.Fatalf("the copy did not finish; the runner's log:\n%s", r.log)
					}
					time.Sleep(20 * time.Millisecond)
				}
				_ = r.cmd.Process.Kill()
				<-r.done
				streamKills++
			}
			phase := func(*runnerProcess) func() {
				if checkpointLSNOf(t, main, p) == 0 {
					copyKills++
				} else {
					streamKills++
				}
				return func() {}
			}
			completions := killRunsAtRandom(t, bin, renv, args, killPlan{kills: 8, window: 1500 * time.Millisecond,
				stream: uint64(200 + i), more: func() {}, onKill: phase})
			stopWriters()
			txns := wait()
			final := startRunner(t, bin, renv, args...)
			if code := final.wait(t, 2*time.Minute); code != configv1.ExitOK {
				t.Fatalf("final runner exited %d; its log:\n%s", code, final.log)
			}
			stop()
			<-watched
			t.Logf("%d kills during the copy, %d while streaming, %d runs completed, %d writer transactions, %d slot samples",
				copyKills, streamKills, completions, txns, watch.samples)
			if len(watch.violations) > 0 {
				t.Fatalf("the slot confirmed past the sink: %v", watch.violations[:min(5, len(watch.violations))])
			}
			if copyKills < 2 || streamKills < 5 || txns < 50 || watch.samples < 20 {
				t.Fatalf("the test exercised too little: %d copy kills, %d stream kills, %d transactions, %d samples",
					copyKills, streamKills, txns, watch.samples)
			}
			sinkMatches(t)
		})
	}
}

// cdcSink is a sink the CDC tests run against.
type cdcSink struct {
	name string
	// shared: Postgres in the state database; es: Elasticsearch (else Postgres in another
	// database).
	shared, es bool
}

var cdcSinks = []cdcSink{{"postgres sink in state database", true, false}, {"postgres sink in another database", false, false}, {"elasticsearch", true, true}}

// cdcTarget readies sk's target for a bounded CDC pipeline of main's src, and returns its
// operator configuration, environment and spec, and the check that the target equals src.
func cdcTarget(t *testing.T, sk cdcSink, main, dst *testDB, batch int32) (*configv1.OperatorConfig, map[string]string, string, func(*testing.T)) {
	t.Helper()
	if sk.es {
		ix := newESIndex(t, srcMappings)
		return esConfig(ix.url, main, ix.name), envOf(main), cdcSpec(t, "es:"+ix.name, "", batch, true, nil),
			func(t *testing.T) { t.Helper(); indexMatchesSource(t, main, ix) }
	}
	createTarget(t, dst, "items")
	return testConfig(main, dst), envOf(main, dst), cdcSpec(t, "analytics.items", dst.name, batch, true, nil),
		func(t *testing.T) { t.Helper(); sinkMatchesSource(t, main, dst, "items") }
}

// killDuringCopy SIGKILLs runners of a CDC pipeline while they copy the table: each is killed
// at a random moment shortly after its first batch committed, until the copy is done or kills
// runners copied. It returns how many kills found the copy unfinished, and how many found it
// streaming already.
func killDuringCopy(t *testing.T, bin string, env map[string]string, args []string, db *testDB, p state.Pipeline,
	kills int, stream uint64) (copying, streaming int) {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	t.Logf("copy kill seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, stream))
	position := func() string {
		var cp string
		_ = db.conn.QueryRow(context.Background(), `SELECT coalesce(array_to_string(incremental_checkpoint, ','), '')
			FROM etl.etl_state WHERE namespace = $1 AND name = $2`, p.Namespace, p.Name).Scan(&cp)
		return cp
	}
	for copying < kills && checkpointLSNOf(t, db, p) == 0 {
		before := position()
		r := startRunner(t, bin, env, args...)
		deadline := time.Now().Add(time.Minute)
		for position() == before && time.Now().Before(deadline) {
			select {
			case <-r.done:
				t.Fatalf("runner exited during the copy before it was killed; its log:\n%s", r.log)
			case <-time.After(5 * time.Millisecond):
			}
		}
		time.Sleep(time.Duration(rng.Int64N(int64(150 * time.Millisecond))))
		lsn := checkpointLSNOf(t, db, p)
		_ = r.cmd.Process.Kill()
		<-r.done
		if lsn == 0 {
			copying++
		} else {
			streaming++
		}
	}
	return copying, streaming
}
