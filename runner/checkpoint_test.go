package runner

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

// TestCheckpointChanges sets and resets the checkpoint of a pipeline between runs, as the
// manager's --checkpoint Job does: a set in the middle makes the next run read only the rows
// after it, a reset the whole source; values that are not of the cursor's types, or a wrong
// count of them, change nothing; each change is in etl_runs with who asked.
func TestCheckpointChanges(t *testing.T) {
	t.Parallel()
	main := newTestDB(t, "main")
	createSource(t, main, 3000)
	createTarget(t, main, "items")
	spec := specJSON(t, specOpts{sourceConn: "main", batch: 500})
	r := &inProcess{cfg: testConfig(main), env: envOf(main), spec: spec}
	requireOutcome(t, r.run(t), OutcomeIdle, configv1.ExitOK)

	change := func(id string, action etlv1.CheckpointAction, spec string, values ...string) configv1.CheckpointEnd {
		t.Helper()
		term := filepath.Join(t.TempDir(), "termination")
		code := ChangeCheckpoint(context.Background(), CheckpointParams{Config: r.cfg, Pipeline: r.pipelineOrDefault(), SpecJSON: spec,
			Generation: "1", Request: etlv1.CheckpointRequest{ID: id, Action: action, Values: values}, RequestedBy: "alice@example.com",
			LookupEnv: func(k string) (string, bool) { v, ok := r.env[k]; return v, ok }, TerminationLog: term})
		raw, err := os.ReadFile(term)
		if err != nil {
			t.Fatal(err)
		}
		var end configv1.CheckpointEnd
		if err := json.Unmarshal(raw, &end); err != nil {
			t.Fatalf("termination message %q: %v", raw, err)
		}
		if (code == configv1.ExitOK) != (end.Outcome == string(etlv1.CheckpointDone)) || end.ID != id {
			t.Fatalf("exit %d with %+v", code, end)
		}
		return end
	}
	checkpoint := func() string {
		var cp []string
		if err := main.conn.QueryRow(context.Background(), `SELECT coalesce(incremental_checkpoint, '{}') FROM etl.etl_state`).Scan(&cp); err != nil {
			t.Fatal(err)
		}
		return strings.Join(cp, ",")
	}
	before := checkpoint()

	for _, bad := range []struct {
		name   string
		values []string
		want   string
	}{
		{"not a time", []string{"soon", "1500"}, "is not a timestamp with time zone"},
		{"not a number", []string{"2024-01-01 00:08:20+00", "fifteen"}, "is not a bigint"},
		{"too few", []string{"2024-01-01 00:08:20+00"}, "give 2 values, got 1"},
	} {
		if end := change("bad-"+bad.name, etlv1.CheckpointSet, spec, bad.values...); end.Outcome != string(etlv1.CheckpointFailed) ||
			!strings.Contains(end.Message, bad.want) {
			t.Fatalf("%s: %+v, want Failed with %q", bad.name, end, bad.want)
		}
		if got := checkpoint(); got != before {
			t.Fatalf("%s: the refused change moved the checkpoint from %s to %s", bad.name, before, got)
		}
	}

	// Row 1500's position: the next run reads the 1500 rows after it.
	var at string
	if err := main.conn.QueryRow(context.Background(), `SELECT updated_at::text FROM src WHERE id = 1500`).Scan(&at); err != nil {
		t.Fatal(err)
	}
	end := change("mid", etlv1.CheckpointSet, spec, at, "1500")
	if end.Outcome != string(etlv1.CheckpointDone) || len(end.Values) != 2 || end.Values[1] != "1500" {
		t.Fatalf("set: %+v", end)
	}
	r.runID, r.rep = "run-2", nil
	res := r.run(t)
	requireOutcome(t, res, OutcomeIdle, configv1.ExitOK)
	if res.RowsRead != 1500 {
		t.Fatalf("after the set the run read %d rows, want the 1500 after it", res.RowsRead)
	}

	if end := change("all", etlv1.CheckpointReset, spec); end.Outcome != string(etlv1.CheckpointDone) || end.Values != nil {
		t.Fatalf("reset: %+v", end)
	}
	main.exec(t, `TRUNCATE analytics.items`)
	r.runID, r.rep = "run-3", nil
	res = r.run(t)
	requireOutcome(t, res, OutcomeIdle, configv1.ExitOK)
	if res.RowsRead != 3000 {
		t.Fatalf("after the reset the run read %d rows, want all 3000", res.RowsRead)
	}
	sinkMatchesSource(t, main, main, "items")

	if n := main.queryInt(t, `SELECT count(*) FROM etl.etl_runs WHERE requested_by = 'alice@example.com' AND
		((run_id = 'checkpoint-mid' AND outcome = 'checkpoint-set' AND checkpoint[2] = '1500') OR
		 (run_id = 'checkpoint-all' AND outcome = 'checkpoint-reset'))`); n != 2 {
		t.Fatalf("etl_runs records %d of the two changes with who asked", n)
	}
	if end := change("full", etlv1.CheckpointSet, strings.Replace(spec, `"Incremental"`, `"Full"`, 1), at, "1500"); end.Outcome != string(etlv1.CheckpointFailed) ||
		!strings.Contains(end.Message, "applies to an Incremental pipeline") {
		t.Fatalf("set on a Full pipeline: %+v", end)
	}
}
