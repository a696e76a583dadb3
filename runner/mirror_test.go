package runner

import (
	"strings"
	"testing"
	"time"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/sink/postgres"
	"github.com/sluice-dev/sluice/runner/state"
)

var mirror = map[string]any{"fullSync": "Mirror"}

// TestMirrorLeavesTheTableEqualToTheSource deletes source rows between Full Mirror runs: the
// sink then equals the source by count and checksum, the run records what it swept, and no
// side table is left. A sweep that would empty the table is refused and deletes nothing.
func TestMirrorLeavesTheTableEqualToTheSource(t *testing.T) {
	t.Parallel()
	for _, tp := range topologies {
		t.Run(tp.name, func(t *testing.T) {
			t.Parallel()
			main, dst := dbsFor(t, tp)
			createSource(t, main, 20000)
			createTarget(t, dst, "items")
			// Rows the source never had, and a stale version of one it has.
			dst.exec(t, `INSERT INTO analytics.items SELECT g, now(), 'stale', 0, '{}' FROM generate_series(1000001, 1000250) g`)
			dst.exec(t, `INSERT INTO analytics.items VALUES (7, now(), 'stale', 0, '{}')`)
			spec := withTarget(t, specJSON(t, specOpts{mode: etlv1.ModeFull, sourceConn: "main", targetConn: dst.name, batch: 1500}), mirror)
			r := &inProcess{cfg: testConfig(main, dst), env: envOf(main, dst), spec: spec}
			pipeline := r.pipeline
			run := func(id string, swept int64) {
				t.Helper()
				r.rep, r.runID = nil, id
				requireOutcome(t, r.run(t), OutcomeIdle, configv1.ExitOK)
				sinkMatchesSource(t, main, dst, "items")
				if end := r.rep.lastEnd(t); end.RowsSwept != swept {
					t.Fatalf("run %s reported %d rows swept, want %d", id, end.RowsSwept, swept)
				}
				if n := main.queryInt(t, `SELECT rows_swept FROM etl.etl_runs WHERE run_id = $1`, id); n != swept {
					t.Fatalf("etl_runs records %d rows swept for %s, want %d", n, id, swept)
				}
			}
			run("run-1", 250)
			main.exec(t, `DELETE FROM src WHERE id IN (SELECT id FROM src ORDER BY md5(id::text) LIMIT 1000)`)
			insertRows(t, main, 30001, 30500)
			run("run-2", 1000)
			if pipeline.Name == "" {
				pipeline = r.pipeline
			}
			side := postgres.MirrorTable(pipeline.String() + "/" + pipeline.UID).Sanitize()
			if n := dst.queryInt(t, `SELECT count(*) FROM pg_class WHERE oid = to_regclass($1)`, side); n != 0 {
				t.Fatalf("the side table %s is left after a completed run", side)
			}

			// An emptied source must not empty the sink.
			main.exec(t, `DELETE FROM src`)
			before := dst.queryInt(t, `SELECT count(*) FROM analytics.items`)
			r.rep, r.runID = nil, "run-3"
			res := r.run(t)
			requireOutcome(t, res, OutcomeFailed, configv1.ExitBusiness)
			if !strings.Contains(res.Message, "more than target.maxDeleteRatio 0.5 allows: nothing was deleted") {
				t.Fatalf("message %q does not explain the refusal", res.Message)
			}
			if n := dst.queryInt(t, `SELECT count(*) FROM analytics.items`); n != before {
				t.Fatalf("the refused sweep left %d of %d rows", n, before)
			}
			// Asked for, it goes through.
			r.spec = withTarget(t, spec, map[string]any{"maxDeleteRatio": 1})
			run("run-4", before)
		})
	}
}

// TestKilledMirrorRunsStayExact kills the processes of one Mirror run at random moments, mid-
// batch and mid-sweep included; each replacement continues the run. The sink ends equal to
// the source, rows the source never had are swept, and the committed counters count every row
// once.
func TestKilledMirrorRunsStayExact(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the binary and runs it many times")
	}
	bin := buildSluice(t)
	for _, tp := range topologies {
		t.Run(tp.name, func(t *testing.T) {
			t.Parallel()
			main, dst := dbsFor(t, tp)
			const rows = 150000
			createSource(t, main, rows)
			createTarget(t, dst, "items")
			dst.exec(t, `INSERT INTO analytics.items SELECT g, now(), 'stale', 0, '{}' FROM generate_series(1, 160000, 3) g
				ON CONFLICT DO NOTHING`)
			dst.exec(t, `INSERT INTO analytics.items SELECT g, now(), 'gone', 0, '{}' FROM generate_series(1000001, 1003000) g`)
			cfg := writeConfig(t, testConfig(main, dst))
			spec := withTarget(t, specJSON(t, specOpts{mode: etlv1.ModeFull, sourceConn: "main", targetConn: dst.name, batch: 1000,
				attempts: 3, backoff: 200 * time.Millisecond}), mirror)
			env := runEnv(envOf(main, dst), spec, "run-1")
			args := []string{"--config", cfg, "--no-status", "--termination-log", "", "--log-level", "warn"}
			// A calibration run on a copy of the pipeline measures a whole run.
			start := time.Now()
			p := startRunner(t, bin, runEnv(envOf(main, dst), spec, "calibrate"), args...)
			if code := p.wait(t, 2*time.Minute); code != configv1.ExitOK {
				t.Fatalf("calibration exited %d; its log:\n%s", code, p.log)
			}
			d := time.Since(start)
			// Undo the calibration: the stale and foreign rows come back.
			dst.exec(t, `UPDATE analytics.items SET name = 'stale' WHERE id % 3 = 1`)
			dst.exec(t, `INSERT INTO analytics.items SELECT g, now(), 'gone', 0, '{}' FROM generate_series(1000001, 1003000) g`)
			// Each replacement has less left to do: a third of a whole run's time reaches the
			// sweep at the end too. The kills stop when a runner completes the run.
			kills := killUntilDone(t, bin, env, args, d/3, 12, 12, func() bool {
				return main.queryInt(t, `SELECT count(*) FROM etl.etl_runs WHERE run_id = 'run-1' AND outcome = $1`, state.OutcomeSucceeded) > 0
			})
			t.Logf("uninterrupted run %s, %d kills", d, kills)
			if kills < 2 {
				t.Fatalf("only %d kills: the test did not exercise crashes", kills)
			}
			sinkMatchesSource(t, main, dst, "items")
			if n := main.queryInt(t, `SELECT rows_read FROM etl.etl_state`); n != rows {
				t.Fatalf("the run read %d rows over its pods, want %d: a replacement started over or skipped", n, rows)
			}
			if n := main.queryInt(t, `SELECT rows_swept FROM etl.etl_runs WHERE run_id = 'run-1'`); n != 3000 {
				t.Fatalf("run-1 swept %d rows, want 3000", n)
			}
			if n := dst.queryInt(t, `SELECT count(*) FROM pg_tables WHERE schemaname = 'etl' AND tablename LIKE 'mirror_%'`); n != 0 {
				t.Fatalf("%d side tables left", n)
			}
		})
	}
}
