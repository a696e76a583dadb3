package runner

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/state"
)

// TestForgetRemovesOnlyTheDeletedPipelinesState: the state of a deleted pipeline goes; a
// pipeline created again under the same name keeps what it has claimed since.
func TestForgetRemovesOnlyTheDeletedPipelinesState(t *testing.T) {
	db := newTestDB(t, "main")
	createSource(t, db, 100)
	createTarget(t, db, "items")
	old := state.Pipeline{Namespace: "tenant", Name: "items", UID: "uid-old"}
	r := &inProcess{cfg: testConfig(db), env: envOf(db), pipeline: old, spec: specJSON(t, specOpts{sourceConn: "main", batch: 10})}
	requireOutcome(t, r.run(t), OutcomeIdle, configv1.ExitOK)
	rows := func() int64 {
		return db.queryInt(t, `SELECT (SELECT count(*) FROM etl.etl_state WHERE name = 'items') + (SELECT count(*) FROM etl.etl_runs WHERE name = 'items')`)
	}
	lookup := func(k string) (string, bool) { v, ok := r.env[k]; return v, ok }
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// A re-created pipeline claimed the name before the old one's forget Job ran: nothing of it goes.
	r.pipeline, r.runID = state.Pipeline{Namespace: "tenant", Name: "items", UID: "uid-new"}, "run-new"
	requireOutcome(t, r.run(t), OutcomeIdle, configv1.ExitOK)
	before := rows()
	if code := Forget(ctx, ForgetParams{Config: r.cfg, Pipeline: old, LookupEnv: lookup}); code != configv1.ExitOK {
		t.Fatalf("Forget exit %d", code)
	}
	if rows() != before {
		t.Fatalf("forgetting the old pipeline removed the new one's state: %d rows, had %d", rows(), before)
	}
	if code := Forget(ctx, ForgetParams{Config: r.cfg, Pipeline: r.pipeline, LookupEnv: lookup}); code != configv1.ExitOK {
		t.Fatalf("Forget exit %d", code)
	}
	if n := rows(); n != 0 {
		t.Fatalf("%d state rows left after the pipeline was forgotten", n)
	}
	// A state database no run ever reached has nothing to forget.
	empty := newTestDB(t, "main")
	if code := Forget(ctx, ForgetParams{Config: testConfig(empty), Pipeline: old, LookupEnv: func(k string) (string, bool) {
		v, ok := envOf(empty)[k]
		return v, ok
	}}); code != configv1.ExitOK {
		t.Fatalf("Forget on an empty state database: exit %d", code)
	}
}

// TestRunLeavesItsEndInTheTerminationMessage: a run that ended well says so where the manager
// can read it if the status report did not get through.
func TestRunLeavesItsEndInTheTerminationMessage(t *testing.T) {
	db := newTestDB(t, "main")
	createSource(t, db, 120)
	createTarget(t, db, "items")
	r := &inProcess{cfg: testConfig(db), env: envOf(db), spec: specJSON(t, specOpts{sourceConn: "main", batch: 50}),
		termination: filepath.Join(t.TempDir(), "termination")}
	requireOutcome(t, r.run(t), OutcomeIdle, configv1.ExitOK)
	data, err := os.ReadFile(r.termination)
	if err != nil {
		t.Fatal(err)
	}
	var end configv1.RunEnd
	if err := json.Unmarshal(data, &end); err != nil {
		t.Fatalf("termination message %q: %v", data, err)
	}
	if end.RunID != "run-1" || end.Phase != "Idle" || end.RowsRead != 120 || end.RowsWritten != 120 || end.Batches != 3 {
		t.Fatalf("termination message %+v", end)
	}
}

// TestRecreatedPipelineStartsFromAnEmptyCheckpoint: the same name with another UID reads the
// whole source again and says so; its next run continues and clears the note.
func TestRecreatedPipelineStartsFromAnEmptyCheckpoint(t *testing.T) {
	db := newTestDB(t, "main")
	createSource(t, db, 300)
	createTarget(t, db, "items")
	r := &inProcess{cfg: testConfig(db), env: envOf(db), spec: specJSON(t, specOpts{sourceConn: "main", batch: 100}),
		pipeline: state.Pipeline{Namespace: "tenant", Name: "items", UID: "uid-1"}}
	requireOutcome(t, r.run(t), OutcomeIdle, configv1.ExitOK)
	db.exec(t, "TRUNCATE analytics.items") // the new pipeline's table is new

	r.pipeline.UID, r.runID, r.rep = "uid-2", "run-2", &fakeReporter{}
	res := r.run(t)
	requireOutcome(t, res, OutcomeIdle, configv1.ExitOK)
	if res.RowsRead != 300 {
		t.Fatalf("the re-created pipeline read %d rows, want all 300", res.RowsRead)
	}
	if c := lastCondition(r.rep, etlv1.ConditionCheckpointReset); c == nil || c.Reason != etlv1.ReasonPipelineRecreated {
		t.Fatalf("CheckpointReset = %+v", c)
	}
	sinkMatchesSource(t, db, db, "items")

	r.runID, r.rep = "run-3", &fakeReporter{}
	res = r.run(t)
	requireOutcome(t, res, OutcomeIdle, configv1.ExitOK)
	cleared := false
	for _, p := range r.rep.progress {
		cleared = cleared || slices.Contains(p.Cleared, etlv1.ConditionCheckpointReset)
	}
	if res.RowsRead != 0 || !cleared {
		t.Fatalf("the next run read %d rows (want 0) and cleared the note: %v", res.RowsRead, cleared)
	}
}
