package runner

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/state"
)

// TestElasticsearchRejectsAreKeptAndReplayed runs the three steps against a real
// Elasticsearch whose mapping makes 10 of 10,000 documents fail: without spec.errors the run
// fails naming the first bad document's key; with maxRejectedRows 100 the run completes with
// the 9,990 good documents in the index, equal to their source rows, and the 10 bad ones in
// etl_rejects with the mapping error; once the mapping is fixed, a replay moves them into the
// index and clears them.
func TestElasticsearchRejectsAreKeptAndReplayed(t *testing.T) {
	t.Parallel()
	main := newTestDB(t, "main")
	createSource(t, main, 10000)
	main.exec(t, `ALTER TABLE src ADD COLUMN code text`)
	main.exec(t, `UPDATE src SET code = CASE WHEN id % 1000 = 7 THEN 'n/a' ELSE (id * 3)::text END`)
	ix := newESIndex(t, `{"properties":{"code":{"type":"long"},"doc":{"properties":{"big":{"type":"keyword"}}}}}`)
	query := "SELECT id, updated_at, name, amount, doc, code FROM src"
	spec := esSpec(t, specOpts{sourceConn: "main", target: "es:" + ix.name, batch: 1000, query: query}, etlv1.ActionIndex)
	r := &inProcess{cfg: esConfig(ix.url, main, ix.name), env: envOf(main), spec: spec}

	res := r.run(t)
	requireOutcome(t, res, OutcomeFailed, configv1.ExitBusiness)
	for _, want := range []string{"es:" + ix.name, "reader row (id=7)", `_id "7"`, "document_parsing_exception"} {
		if !strings.Contains(res.Message, want) {
			t.Fatalf("the failure lacks %q: %s", want, res.Message)
		}
	}

	r.spec, r.runID, r.rep = withErrors(t, spec, map[string]any{"maxRejectedRows": 100}), "run-2", nil
	res = r.run(t)
	requireOutcome(t, res, OutcomeIdle, configv1.ExitOK)
	var bad []int
	for id := 7; id <= 10000; id += 1000 {
		bad = append(bad, id)
	}
	requireRejects(t, main, bad, state.StageSink, "document_parsing_exception")
	for _, rj := range rejectsOf(t, main) {
		if !strings.Contains(rj.message, "[code]") || !strings.Contains(rj.message, "[long]") || strings.Contains(rj.message, "n/a") {
			t.Fatalf("a reject's message does not name the field and its type, or quotes the value: %s", rj.message)
		}
	}
	codes := func(t *testing.T, want int) {
		t.Helper()
		docs := ix.docs(t)
		if len(docs) != want {
			t.Fatalf("the index holds %d documents, want %d", len(docs), want)
		}
		for id, d := range docs {
			var n int
			if _, err := fmt.Sscan(id, &n); err != nil {
				t.Fatal(err)
			}
			code := fmt.Sprint(d.(map[string]any)["code"])
			if want := fmt.Sprint(n * 3); n%1000 != 7 && code != want {
				t.Fatalf("document %s has code %s, want %s", id, code, want)
			}
		}
	}
	codes(t, 9990)
	if r.rep.lastEnd(t).RowsRejected != 10 {
		t.Fatalf("the run reported %d rejects, want 10", r.rep.lastEnd(t).RowsRejected)
	}

	// The fix: the field keeps its type and ignores what does not parse.
	ix.must(t, http.MethodPut, "/"+ix.name+"/_mapping", `{"properties":{"code":{"type":"long","ignore_malformed":true}}}`)
	r.runID, r.rep = "run-3", &fakeReporter{trigger: etlv1.TriggerReplayRejects}
	res = r.run(t)
	requireOutcome(t, res, OutcomeIdle, configv1.ExitOK)
	codes(t, 10000)
	if n := main.queryInt(t, `SELECT count(*) FROM etl.etl_rejects`); n != 0 {
		t.Fatalf("%d rejects remain after the replay", n)
	}
	if end := r.rep.lastEnd(t); end.RejectsReplayed != 10 {
		t.Fatalf("the replay reported %d replayed rejects, want 10", end.RejectsReplayed)
	}
}
