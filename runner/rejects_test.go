package runner

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/state"
)

func TestToleranceExceeded(t *testing.T) {
	n := func(v int64) *int64 { return &v }
	f := func(v float64) *float64 { return &v }
	cases := []struct {
		name           string
		tol            tolerance
		rejected, read int64
		final, want    bool
	}{
		{"no rejects never exceed", tolerance{}, 0, 100, true, false},
		{"without spec.errors one reject fails", tolerance{}, 1, 100, false, true},
		{"rows: at the bound", tolerance{maxRows: n(5)}, 5, 10, false, false},
		{"rows: past the bound", tolerance{maxRows: n(5)}, 6, 1000000, false, true},
		{"rows: zero tolerates none", tolerance{maxRows: n(0)}, 1, 1000000, true, true},
		{"ratio: too few rows read to judge", tolerance{maxRatio: f(0.001)}, 3, 999, false, false},
		{"ratio: judged once 1/ratio rows are read", tolerance{maxRatio: f(0.001)}, 2, 1000, false, true},
		{"ratio: within", tolerance{maxRatio: f(0.001)}, 1, 1000, false, false},
		{"ratio: one reject is always allowed", tolerance{maxRatio: f(0.001)}, 1, 10, true, false},
		{"ratio: judged at the end however few rows", tolerance{maxRatio: f(0.001)}, 2, 10, true, true},
		{"ratio: past it at the end", tolerance{maxRatio: f(0.01)}, 11, 1000, true, true},
		{"ratio: zero tolerates none", tolerance{maxRatio: f(0)}, 1, 1000000, false, true},
		{"ratio one tolerates all", tolerance{maxRatio: f(1)}, 1000, 1000, true, false},
		{"both: rows pass first", tolerance{maxRows: n(2), maxRatio: f(0.5)}, 3, 100, false, true},
		{"both: ratio passes first", tolerance{maxRows: n(100), maxRatio: f(0.01)}, 3, 100, false, true},
		{"both: within both", tolerance{maxRows: n(100), maxRatio: f(0.01)}, 1, 100, true, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.tol.exceeded(tc.rejected, tc.read, tc.final); got != tc.want {
				t.Fatalf("exceeded(%d, %d, %v) with %s = %v, want %v", tc.rejected, tc.read, tc.final, tc.tol, got, tc.want)
			}
		})
	}
}

func TestRejectsCondition(t *testing.T) {
	p := state.Pipeline{Namespace: "tenant", Name: "items"}
	cases := []struct {
		name                 string
		unresolved, rejected int64
		tolerates            bool
		status               metav1.ConditionStatus
		reason               string
		clear                bool
	}{
		{"rejects remain", 5, 5, true, metav1.ConditionTrue, etlv1.ReasonRowsRejected, false},
		{"rejects of earlier runs remain after spec.errors went", 3, 0, false, metav1.ConditionTrue, etlv1.ReasonRowsRejected, false},
		{"all resolved", 0, 0, true, metav1.ConditionFalse, etlv1.ReasonNoRejects, false},
		{"a pipeline that never tolerated any", 0, 0, false, "", "", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, clear := rejectsCondition(p, tc.unresolved, tc.rejected, tc.tolerates)
			if clear != tc.clear || (!clear && (c.Status != tc.status || c.Reason != tc.reason)) {
				t.Fatalf("got %+v (clear %v), want %s/%s (clear %v)", c, clear, tc.status, tc.reason, tc.clear)
			}
			if tc.unresolved > 0 && (!strings.Contains(c.Message, fmt.Sprint(tc.unresolved)) ||
				!strings.Contains(c.Message, etlv1.AnnotationReplayRejectsRequestedAt)) {
				t.Fatalf("message %q names neither the count nor how to replay", c.Message)
			}
		})
	}
}

// withErrors sets spec.errors.
func withErrors(t *testing.T, spec string, errs map[string]any) string {
	t.Helper()
	return editSpec(t, spec, func(m map[string]any) { m["errors"] = errs })
}

// rejectRow is a row of etl.etl_rejects as a test reads it.
type rejectRow struct {
	key, stage, class, message, row string
	attempts                        int
}

func rejectsOf(t *testing.T, db *testDB) []rejectRow {
	t.Helper()
	rows, err := db.conn.Query(context.Background(),
		`SELECT key::text, stage, error_class, message, coalesce("row"::text, ''), attempts FROM etl.etl_rejects ORDER BY key`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []rejectRow
	for rows.Next() {
		var r rejectRow
		if err := rows.Scan(&r.key, &r.stage, &r.class, &r.message, &r.row, &r.attempts); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// requireRejects checks that etl_rejects holds exactly the keys want, each once, refused at
// stage for class, with the reader row as JSON.
func requireRejects(t *testing.T, db *testDB, want []int, stage, class string) {
	t.Helper()
	got := rejectsOf(t, db)
	keys := map[string]bool{}
	for _, r := range got {
		keys[r.key] = true
		if r.stage != stage || r.class != class || r.attempts != 1 || !strings.HasPrefix(r.row, `{"id":`) {
			t.Fatalf("reject %+v: want stage %s, class %s, one attempt and the reader row", r, stage, class)
		}
	}
	if len(got) != len(want) || len(keys) != len(want) {
		t.Fatalf("etl_rejects holds %d rows (%d keys), want %d: %+v", len(got), len(keys), len(want), got)
	}
	for _, id := range want {
		if !keys[fmt.Sprintf(`["%d"]`, id)] {
			t.Fatalf("etl_rejects lacks key %d: %+v", id, got)
		}
	}
	if n := db.queryInt(t, `SELECT count(*) FROM etl.rejects WHERE key = jsonb_build_object('id', $1::text)`, fmt.Sprint(want[0])); n != 1 {
		t.Fatalf("the etl.rejects view shows key %d %d times, want once", want[0], n)
	}
}

// badRows are the source rows the tests' targets refuse: in the first batch, in the middle,
// two adjacent ones and the last one.
var badRows = []int{7, 20011, 45000, 45001, 99999}

func inList(ids []int) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = fmt.Sprint(id)
	}
	return strings.Join(s, ", ")
}

// TestPostgresRejectsAreKeptAndReplayed runs the three steps against a check
// constraint that 5 of 100,000 rows violate, in both topologies: without spec.errors the run
// fails naming the first bad row's key; with a tolerance the run completes with the 99,995
// good rows in the sink (by count and checksum) and the 5 in etl_rejects; once the constraint
// is fixed, a replay moves them into the sink and clears them.
func TestPostgresRejectsAreKeptAndReplayed(t *testing.T) {
	t.Parallel()
	for _, tp := range topologies {
		t.Run(tp.name, func(t *testing.T) {
			t.Parallel()
			main, dst := dbsFor(t, tp)
			createSource(t, main, 100000)
			main.exec(t, `UPDATE src SET amount = -amount WHERE id IN (`+inList(badRows)+`)`)
			createTarget(t, dst, "items")
			dst.exec(t, `ALTER TABLE analytics.items ADD CONSTRAINT amount_positive CHECK (amount >= 0)`)
			spec := specJSON(t, specOpts{sourceConn: "main", targetConn: dst.name, batch: 2000})
			r := &inProcess{cfg: testConfig(main, dst), env: envOf(main, dst), spec: spec}

			res := r.run(t)
			requireOutcome(t, res, OutcomeFailed, configv1.ExitBusiness)
			if !strings.Contains(res.Message, "id=7") || !strings.Contains(res.Message, "amount_positive") {
				t.Fatalf("the failure does not name the bad row's key and the constraint: %s", res.Message)
			}
			if n := main.queryInt(t, `SELECT count(*) FROM etl.etl_rejects`); n != 0 {
				t.Fatalf("a run without spec.errors kept %d rejects", n)
			}

			r.spec = withErrors(t, spec, map[string]any{"maxRejectedRows": 100})
			r.runID, r.rep = "run-2", nil
			res = r.run(t)
			requireOutcome(t, res, OutcomeIdle, configv1.ExitOK)
			good := "src WHERE id NOT IN (" + inList(badRows) + ")"
			sinkMatches(t, main, good, dst, "items")
			requireRejects(t, main, badRows, state.StageSink, "23514")
			end := r.rep.lastEnd(t)
			if end.RowsRejected != 5 || end.UnresolvedRejects == nil || *end.UnresolvedRejects != 5 {
				t.Fatalf("end report counts %d rejects, %v unresolved; want 5 and 5", end.RowsRejected, end.UnresolvedRejects)
			}
			if c := meta.FindStatusCondition(end.Conditions, etlv1.ConditionRowsRejected); c == nil || c.Status != metav1.ConditionTrue {
				t.Fatalf("RowsRejected condition %+v, want True", c)
			}
			if msg := rejectsOf(t, main)[0].message; strings.Contains(msg, "-") && strings.Contains(msg, "8.75") {
				t.Fatalf("a reject's message quotes the row's values: %s", msg)
			}

			dst.exec(t, `ALTER TABLE analytics.items DROP CONSTRAINT amount_positive`)
			r.runID, r.rep = "run-3", &fakeReporter{trigger: etlv1.TriggerReplayRejects}
			res = r.run(t)
			requireOutcome(t, res, OutcomeIdle, configv1.ExitOK)
			sinkMatchesSource(t, main, dst, "items")
			if n := main.queryInt(t, `SELECT count(*) FROM etl.etl_rejects`); n != 0 {
				t.Fatalf("%d rejects remain after the replay", n)
			}
			end = r.rep.lastEnd(t)
			if end.RejectsReplayed != 5 || *end.UnresolvedRejects != 0 || res.RowsRead != 5 {
				t.Fatalf("replay: %d replayed, %d unresolved, %d rows read; want 5, 0, 5", end.RejectsReplayed, *end.UnresolvedRejects, res.RowsRead)
			}
			if c := meta.FindStatusCondition(end.Conditions, etlv1.ConditionRowsRejected); c == nil || c.Status != metav1.ConditionFalse {
				t.Fatalf("RowsRejected condition %+v, want False after the replay", c)
			}
			if n := main.queryInt(t, `SELECT rejects_replayed FROM etl.etl_runs WHERE run_id = 'run-3'`); n != 5 {
				t.Fatalf("etl_runs records %d replayed rejects, want 5", n)
			}
		})
	}
}

// TestRejectsBeyondTheToleranceFailTheRun: a run fails once its rejects pass the bound, with
// the count in its message; the rejects of its committed batches stay, none of the failing
// batch's.
func TestRejectsBeyondTheToleranceFailTheRun(t *testing.T) {
	t.Parallel()
	main := newTestDB(t, "main")
	createSource(t, main, 10000)
	main.exec(t, `UPDATE src SET amount = -amount WHERE id % 1000 = 500`) // 10 rows, one per batch
	createTarget(t, main, "items")
	main.exec(t, `ALTER TABLE analytics.items ADD CONSTRAINT amount_positive CHECK (amount >= 0)`)
	r := &inProcess{cfg: testConfig(main), env: envOf(main),
		spec: withErrors(t, specJSON(t, specOpts{sourceConn: "main", batch: 1000}), map[string]any{"maxRejectedRows": 3})}
	res := r.run(t)
	requireOutcome(t, res, OutcomeFailed, configv1.ExitBusiness)
	if !strings.Contains(res.Message, "rejected 4 rows") || !strings.Contains(res.Message, "maxRejectedRows 3") {
		t.Fatalf("the failure does not say how many rows were rejected against what bound: %s", res.Message)
	}
	requireRejects(t, main, []int{500, 1500, 2500}, state.StageSink, "23514")
	if n := main.queryInt(t, `SELECT count(*) FROM analytics.items`); n != 3000-3 {
		t.Fatalf("the sink holds %d rows, want the 2997 good rows of the three committed batches", n)
	}
}

// TestPythonRejectsAreKeptAndReplayed: a task that raises for some rows. Without spec.errors
// the run fails naming the row; with a tolerance the other rows are written and the raising
// ones are kept with the exception's type; once the task is fixed, a replay writes them.
func TestPythonRejectsAreKeptAndReplayed(t *testing.T) {
	t.Parallel()
	main := newTestDB(t, "main")
	createSource(t, main, 20000)
	createTarget(t, main, "items")
	raising := pyTask{"check", `
def transform(row):
    if row["id"] % 5000 == 17:
        raise ValueError("bad row " + row["name"])
    return row
`}
	o := specOpts{sourceConn: "main", batch: 1000}
	r := &inProcess{cfg: testConfig(main), env: envOf(main), spec: tasksSpecJSON(t, o, 0, raising),
		opts: Options{Python: pythonForTests()}}
	res := r.run(t)
	requireOutcome(t, res, OutcomeFailed, configv1.ExitBusiness)
	if !strings.Contains(res.Message, "id=17") || !strings.Contains(res.Message, "ValueError") || strings.Contains(res.Message, "bad row row 17") {
		t.Fatalf("the failure does not name the row and the exception (or quotes its message): %s", res.Message)
	}

	r.spec, r.runID, r.rep = withErrors(t, tasksSpecJSON(t, o, 0, raising), map[string]any{"maxRejectedRatio": 0.01}), "run-2", nil
	res = r.run(t)
	requireOutcome(t, res, OutcomeIdle, configv1.ExitOK)
	bad := []int{17, 5017, 10017, 15017}
	sinkMatches(t, main, "src WHERE id % 5000 <> 17", main, "items")
	requireRejects(t, main, bad, state.StageTransform, "ValueError")
	if res.RowsRejected != 4 {
		t.Fatalf("the run counts %d rejects, want 4", res.RowsRejected)
	}

	fixed := pyTask{"check", "def transform(row):\n    return row\n"}
	r.spec, r.runID, r.rep = tasksSpecJSON(t, o, 0, fixed), "run-3", &fakeReporter{trigger: etlv1.TriggerReplayRejects}
	res = r.run(t)
	requireOutcome(t, res, OutcomeIdle, configv1.ExitOK)
	sinkMatchesSource(t, main, main, "items")
	if n := main.queryInt(t, `SELECT count(*) FROM etl.etl_rejects`); n != 0 {
		t.Fatalf("%d rejects remain after the replay", n)
	}
	// The pipeline no longer tolerates rejects and has none: the condition goes.
	if end := r.rep.lastEnd(t); !slices.Contains(end.Cleared, etlv1.ConditionRowsRejected) {
		t.Fatalf("the replay left the RowsRejected condition: cleared %v", end.Cleared)
	}
}

// TestARejectedRowWrittenLaterIsResolved: a row refused in one run and fixed in the source is
// written by the next Incremental run, which removes its reject.
func TestARejectedRowWrittenLaterIsResolved(t *testing.T) {
	t.Parallel()
	main := newTestDB(t, "main")
	createSource(t, main, 3000)
	main.exec(t, `UPDATE src SET amount = -1 WHERE id IN (10, 2000)`)
	createTarget(t, main, "items")
	main.exec(t, `ALTER TABLE analytics.items ADD CONSTRAINT amount_positive CHECK (amount >= 0)`)
	r := &inProcess{cfg: testConfig(main), env: envOf(main),
		spec: withErrors(t, specJSON(t, specOpts{sourceConn: "main", batch: 500}), map[string]any{"maxRejectedRows": 10})}
	requireOutcome(t, r.run(t), OutcomeIdle, configv1.ExitOK)
	requireRejects(t, main, []int{10, 2000}, state.StageSink, "23514")

	main.exec(t, `UPDATE src SET amount = 5, updated_at = now() WHERE id = 10`)
	r.runID, r.rep = "run-2", nil
	res := r.run(t)
	requireOutcome(t, res, OutcomeIdle, configv1.ExitOK)
	requireRejects(t, main, []int{2000}, state.StageSink, "23514")
	sinkMatches(t, main, "src WHERE id <> 2000", main, "items")
	if end := r.rep.lastEnd(t); *end.UnresolvedRejects != 1 || res.RowsRejected != 0 {
		t.Fatalf("after the fix: %d unresolved, %d rejected by the run; want 1 and 0", *end.UnresolvedRejects, res.RowsRejected)
	}
}

// TestKilledRunnersNeitherLoseNorDoubleRejects kills `sluice runner` at random moments of
// runs that reject rows, while concurrent writers keep updating good and bad rows in long and
// short transactions: in the end every good row is in the sink (count and checksum) and every
// bad one is in etl_rejects once, as its latest version.
func TestKilledRunnersNeitherLoseNorDoubleRejects(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs it many times")
	}
	t.Parallel()
	bin := buildSluice(t)
	for _, tp := range topologies {
		t.Run(tp.name, func(t *testing.T) {
			main, dst := dbsFor(t, tp)
			stampedSource(t, main, 100000)
			main.exec(t, `UPDATE src SET amount = -amount WHERE id % 997 = 0`)
			createTarget(t, dst, "items")
			dst.exec(t, `ALTER TABLE analytics.items ADD CONSTRAINT amount_positive CHECK (amount >= 0)`)
			cfg := writeConfig(t, testConfig(main, dst))
			spec := withErrors(t, specJSON(t, specOpts{sourceConn: "main", targetConn: dst.name, batch: 500,
				attempts: 3, backoff: 200 * time.Millisecond}), map[string]any{"maxRejectedRows": 100000})
			// A bad row stays bad and a good one good: the writers change names and amounts. A
			// short catch-up run may read mostly updated bad rows, so the tolerance is a count
			// no run reaches, not a ratio (which TestToleranceExceeded judges).
			update := `UPDATE src SET name = $2, amount = CASE WHEN id % 997 = 0 THEN -1 - $3::int ELSE $3::int END
				WHERE id = $1 AND $4::int >= 0`
			killUnderLoad(t, bin, main, envOf(main, dst), spec, cfg, update)
			sinkMatches(t, main, "src WHERE id % 997 <> 0", dst, "items")
			bad := main.queryInt(t, `SELECT count(*) FROM src WHERE id % 997 = 0`)
			if n := main.queryInt(t, `SELECT count(*) FROM etl.etl_rejects`); n != bad {
				t.Fatalf("etl_rejects holds %d rows, the source %d bad ones", n, bad)
			}
			if n := main.queryInt(t, `SELECT count(*) FROM src s JOIN etl.etl_rejects r ON r.key->>0 = s.id::text
				AND r."row"->>'name' = s.name AND (r."row"->>'amount')::numeric = s.amount WHERE s.id % 997 = 0`); n != bad {
				t.Fatalf("%d of the %d rejects hold the bad row's latest version", n, bad)
			}
		})
	}
}
