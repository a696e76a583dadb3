package runner

import (
	"context"
	"encoding/json"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/state"
	"github.com/sluice-dev/sluice/runner/status"
	"github.com/sluice-dev/sluice/test/testenv"
)

// esAlias is a test's alias and the indexes of its naming pattern, deleted at cleanup.
func esAlias(t *testing.T) *esIndex {
	t.Helper()
	ix := &esIndex{url: testenv.ElasticsearchURL(t), name: testenv.UniqueName("sluice-mirror-")}
	t.Cleanup(func() {
		_, _ = ix.do(http.MethodDelete, "/"+ix.name+"-*", "")
		_, _ = ix.do(http.MethodDelete, "/"+ix.name, "")
		_, _ = ix.do(http.MethodDelete, "/_index_template/"+ix.name, "")
	})
	return ix
}

// template puts an index template for the alias's indexes: one shard, no replica, and the
// mapping properties given.
func (ix *esIndex) template(t *testing.T, properties string) {
	t.Helper()
	ix.must(t, http.MethodPut, "/_index_template/"+ix.name, `{"index_patterns":["`+ix.name+`-*"],"priority":500,
		"template":{"settings":{"number_of_shards":1,"number_of_replicas":0},"mappings":{"properties":`+properties+`}}}`)
}

// behind returns the indexes behind the alias.
func (ix *esIndex) behind(t *testing.T) []string {
	t.Helper()
	code, out := ix.do(http.MethodGet, "/_alias/"+ix.name, "")
	if code == http.StatusNotFound {
		return nil
	}
	var m map[string]any
	if code != http.StatusOK || json.Unmarshal(out, &m) != nil {
		t.Fatalf("GET _alias/%s: %d %s", ix.name, code, out)
	}
	var names []string
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// pattern returns the indexes of the alias's naming pattern.
func (ix *esIndex) pattern(t *testing.T) []string {
	t.Helper()
	var rows []struct {
		Index string `json:"index"`
	}
	out := ix.must(t, http.MethodGet, "/_cat/indices/"+ix.name+"-*?format=json&h=index", "")
	if err := json.Unmarshal(out, &rows); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range rows {
		names = append(names, r.Index)
	}
	sort.Strings(names)
	return names
}

// fieldType returns the mapped type of field name in the index behind the alias.
func (ix *esIndex) fieldType(t *testing.T, field string) string {
	t.Helper()
	out := ix.must(t, http.MethodGet, "/"+ix.name+"/_mapping/field/"+field, "")
	var m map[string]struct {
		Mappings map[string]struct {
			Mapping map[string]struct {
				Type string `json:"type"`
			} `json:"mapping"`
		} `json:"mappings"`
	}
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatal(err)
	}
	for _, idx := range m {
		return idx.Mappings[field].Mapping[field].Type
	}
	return ""
}

// countPoller reads the alias's _count every 100 ms and keeps what it saw.
type countPoller struct {
	mu     sync.Mutex
	counts []int64
	bad    []string
}

func pollCount(ctx context.Context, ix *esIndex) (*countPoller, chan struct{}) {
	p := &countPoller{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			code, out := ix.do(http.MethodGet, "/"+ix.name+"/_count", "")
			var c struct {
				Count int64 `json:"count"`
			}
			p.mu.Lock()
			if code != http.StatusOK || json.Unmarshal(out, &c) != nil {
				p.bad = append(p.bad, string(out))
			} else if len(p.counts) == 0 || p.counts[len(p.counts)-1] != c.Count {
				p.counts = append(p.counts, c.Count)
			}
			p.mu.Unlock()
			time.Sleep(100 * time.Millisecond)
		}
	}()
	return p, done
}

// TestMirrorRebuildsBehindTheAlias rebuilds an alias's index with Full Mirror runs: readers of
// the alias see the old index until the swap and the whole new one after it, a template's
// mapping change takes effect through one run, old indexes go, a paused rebuild resumes into
// its own index and a new run discards an abandoned one. A plain index and an alias on two
// indexes are refused before anything is written.
func TestMirrorRebuildsBehindTheAlias(t *testing.T) {
	t.Parallel()
	db := newTestDB(t, "main")
	createSource(t, db, 30000)
	ix := esAlias(t)
	template := func(nameType string) {
		ix.template(t, `{"name":{"type":"`+nameType+`"},"doc":{"properties":{"big":{"type":"keyword"}}}}`)
	}
	template("keyword")
	spec := withTarget(t, esSpec(t, specOpts{mode: etlv1.ModeFull, sourceConn: "main", target: "es:" + ix.name, batch: 1000},
		etlv1.ActionIndex), mirror)
	r := &inProcess{cfg: esConfig(ix.url, db, ix.name), env: envOf(db), spec: spec}
	run := func(id string, rep *fakeReporter) Result {
		t.Helper()
		r.rep, r.runID = rep, id
		return r.run(t)
	}

	requireOutcome(t, run("run-1", nil), OutcomeIdle, configv1.ExitOK)
	if got := ix.behind(t); len(got) != 1 || got[0] != ix.name+"-run-1" {
		t.Fatalf("after the first rebuild the alias points at %v", got)
	}
	indexMatches(t, db, "src", ix)
	if typ := ix.fieldType(t, "name"); typ != "keyword" {
		t.Fatalf("name is mapped %q, the template says keyword", typ)
	}

	// Another alias of the index moves with the rebuild, its filter included.
	reader := "read-" + ix.name
	ix.must(t, http.MethodPost, "/_aliases", `{"actions":[{"add":{"index":"`+ix.name+`-run-1","alias":"`+reader+`",
		"filter":{"range":{"id":{"lte":100}}}}}]}`)
	// A mapping change and deleted rows, rebuilt while a reader polls the alias.
	template("text")
	db.exec(t, `DELETE FROM src WHERE id % 30 = 0`)
	ctx, cancel := context.WithCancel(context.Background())
	poll, polled := pollCount(ctx, ix)
	time.Sleep(300 * time.Millisecond)
	res := run("run-2", nil)
	time.Sleep(300 * time.Millisecond)
	cancel()
	<-polled
	requireOutcome(t, res, OutcomeIdle, configv1.ExitOK)
	if len(poll.bad) > 0 || len(poll.counts) != 2 || poll.counts[0] != 30000 || poll.counts[1] != 29000 {
		t.Fatalf("the alias's _count went %v (failed reads: %v), want 30000 then 29000", poll.counts, poll.bad)
	}
	if end := r.rep.lastEnd(t); end.RowsSwept != 1000 {
		t.Fatalf("the rebuild reported %d rows swept, want 1000", end.RowsSwept)
	}
	indexMatches(t, db, "src", ix)
	if typ := ix.fieldType(t, "name"); typ != "text" {
		t.Fatalf("name is mapped %q after the rebuild, the template says text", typ)
	}
	if got := ix.pattern(t); len(got) != 1 || got[0] != ix.name+"-run-2" {
		t.Fatalf("indexes left after the swap: %v", got)
	}
	var filtered struct{ Count int64 }
	if err := json.Unmarshal(ix.must(t, http.MethodGet, "/"+reader+"/_count", ""), &filtered); err != nil || filtered.Count != 97 {
		t.Fatalf("the filtered alias %s counts %d documents after the swap, want 97 (%v)", reader, filtered.Count, err)
	}

	// A paused rebuild leaves the alias where it was; a new run discards it; a resumed one
	// continues into its own index.
	r.opts.CheckInterval = time.Nanosecond
	pause := func(trigger etlv1.RunTrigger) *fakeReporter {
		return &fakeReporter{trigger: trigger, signal: func(n int) status.Signal {
			if n >= 6 {
				return status.Pause
			}
			return status.Continue
		}}
	}
	requireOutcome(t, run("run-3", pause("")), OutcomePaused, configv1.ExitOK)
	if got := ix.behind(t); len(got) != 1 || got[0] != ix.name+"-run-2" {
		t.Fatalf("a paused rebuild moved the alias to %v", got)
	}
	requireOutcome(t, run("run-4", pause("")), OutcomePaused, configv1.ExitOK)
	if got := ix.pattern(t); strings.Join(got, ",") != ix.name+"-run-2,"+ix.name+"-run-4" {
		t.Fatalf("a new rebuild left %v, want the alias's index and its own", got)
	}
	r.opts.CheckInterval = 0
	requireOutcome(t, run("run-5", &fakeReporter{trigger: etlv1.TriggerResume}), OutcomeIdle, configv1.ExitOK)
	if got := ix.behind(t); len(got) != 1 || got[0] != ix.name+"-run-4" {
		t.Fatalf("the resumed rebuild put the alias on %v, want the paused run's index", got)
	}
	if got := ix.pattern(t); len(got) != 1 {
		t.Fatalf("indexes left after the resumed rebuild: %v", got)
	}
	indexMatches(t, db, "src", ix)

	// Incremental runs write through the alias, soft deletes included.
	db.exec(t, `ALTER TABLE src ADD COLUMN deleted_at timestamptz`)
	db.exec(t, `UPDATE src SET deleted_at = now(), updated_at = '2025-01-01' WHERE id % 7 = 0`)
	r.spec = withTarget(t, esSpec(t, specOpts{sourceConn: "main", target: "es:" + ix.name, query: softQuery, batch: 1000},
		etlv1.ActionIndex), softDelete)
	requireOutcome(t, run("run-inc", nil), OutcomeIdle, configv1.ExitOK)
	indexMatches(t, db, liveRows, ix)
	if got := ix.pattern(t); len(got) != 1 || got[0] != ix.name+"-run-4" {
		t.Fatalf("after an Incremental run the alias's indexes are %v", got)
	}

	// An emptied source does not empty the alias.
	db.exec(t, `CREATE TABLE src_kept AS SELECT * FROM src`)
	db.exec(t, `DELETE FROM src WHERE id > 100`)
	r.spec = spec
	res = run("run-empty", nil)
	requireOutcome(t, res, OutcomeFailed, configv1.ExitBusiness)
	if !strings.Contains(res.Message, "is more than target.maxDeleteRatio 0.5 allows, so the alias stays on "+ix.name+"-run-4") {
		t.Fatalf("a rebuild of an emptied source failed with %q", res.Message)
	}
	if got := ix.behind(t); len(got) != 1 || got[0] != ix.name+"-run-4" {
		t.Fatalf("a refused rebuild moved the alias to %v", got)
	}
	db.exec(t, `INSERT INTO src SELECT * FROM src_kept WHERE id > 100`)

	// Refusals, before anything is written.
	plain := newESIndex(t, srcMappings)
	r.cfg = esConfig(ix.url, db, ix.name, plain.name)
	r.spec = withTarget(t, esSpec(t, specOpts{mode: etlv1.ModeFull, sourceConn: "main", target: "es:" + plain.name},
		etlv1.ActionIndex), mirror)
	res = run("run-6", nil)
	requireOutcome(t, res, OutcomeFailed, configv1.ExitBusiness)
	if !strings.Contains(res.Message, "is an index, not an alias") {
		t.Fatalf("a plain index target failed with %q", res.Message)
	}
	ix.must(t, http.MethodPost, "/_aliases", `{"actions":[{"add":{"index":"`+plain.name+`","alias":"`+ix.name+`"}}]}`)
	r.spec = spec
	res = run("run-7", nil)
	requireOutcome(t, res, OutcomeFailed, configv1.ExitBusiness)
	if !strings.Contains(res.Message, "the alias points at 2 indexes") {
		t.Fatalf("an alias on two indexes failed with %q", res.Message)
	}
	if n := len(plain.docs(t)); n != 0 {
		t.Fatalf("%d documents written before the refusals", n)
	}
	ix.must(t, http.MethodPost, "/_aliases", `{"actions":[{"remove":{"index":"`+plain.name+`","alias":"`+ix.name+`"}}]}`)
	ix.must(t, http.MethodPut, "/_index_template/"+ix.name, `{"index_patterns":["`+ix.name+`-*"],"priority":500,
		"template":{"aliases":{"`+ix.name+`":{}}}}`)
	res = run("run-8", nil)
	requireOutcome(t, res, OutcomeFailed, configv1.ExitBusiness)
	if !strings.Contains(res.Message, "adds the alias") {
		t.Fatalf("a template that adds the alias failed with %q", res.Message)
	}
}

// TestKilledMirrorRebuildsStayExact kills the processes of one Mirror rebuild at random
// moments, the swap included; each replacement carries the run on. The alias ends on one
// index equal to the source, and no other index of its pattern is left.
func TestKilledMirrorRebuildsStayExact(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the binary and runs it many times")
	}
	bin := buildSluice(t)
	db := newTestDB(t, "main")
	createSource(t, db, 100000)
	ix := esAlias(t)
	ix.template(t, `{"doc":{"properties":{"big":{"type":"keyword"}}}}`)
	cfg := writeConfig(t, esConfig(ix.url, db, ix.name))
	spec := withTarget(t, esSpec(t, specOpts{mode: etlv1.ModeFull, sourceConn: "main", target: "es:" + ix.name, batch: 1000,
		attempts: 3, backoff: 200 * time.Millisecond}, etlv1.ActionIndex), mirror)
	args := []string{"--config", cfg, "--no-status", "--termination-log", "", "--log-level", "warn"}
	start := time.Now()
	p := startRunner(t, bin, runEnv(envOf(db), spec, "first"), args...)
	if code := p.wait(t, 2*time.Minute); code != configv1.ExitOK {
		t.Fatalf("first rebuild exited %d; its log:\n%s", code, p.log)
	}
	d := time.Since(start)
	db.exec(t, `DELETE FROM src WHERE id % 9 = 0`)
	db.exec(t, `UPDATE src SET name = 'changed ' || id WHERE id % 5 = 0`)

	kills := killUntilDone(t, bin, runEnv(envOf(db), spec, "second"), args, d/3, 12, 13, func() bool {
		return db.queryInt(t, `SELECT count(*) FROM etl.etl_runs WHERE run_id = 'second' AND outcome = $1`, state.OutcomeSucceeded) > 0
	})
	t.Logf("uninterrupted rebuild %s, %d kills", d, kills)
	if kills < 2 {
		t.Fatalf("only %d kills: the test did not exercise crashes", kills)
	}
	indexMatches(t, db, "src", ix)
	// A kill between the swap and the run's record makes the replacement rebuild once more,
	// into <alias>-second-1.
	if got := ix.behind(t); len(got) != 1 || !strings.HasPrefix(got[0], ix.name+"-second") {
		t.Fatalf("the alias points at %v, want the second rebuild's index", got)
	}
	if got := ix.pattern(t); len(got) != 1 {
		t.Fatalf("indexes left: %v", got)
	}
}

// TestMirrorPassStartedOverForgetsTheOldCheckpoint: a resumed Mirror run whose rebuild the
// sink lost starts over from the beginning, into a new index. If that new pass dies before
// its first batch commits (here a document the index refuses, half the batch written), the
// run resumed after it must not carry the lost pass's checkpoint into the new index: the
// rows before it would be missing from the index the alias then points at.
func TestMirrorPassStartedOverForgetsTheOldCheckpoint(t *testing.T) {
	t.Parallel()
	db := newTestDB(t, "main")
	createSource(t, db, 20000)
	ix := esAlias(t)
	ix.template(t, `{"doc":{"properties":{"big":{"type":"keyword"},"g":{"type":"long"}}}}`)
	spec := withTarget(t, esSpec(t, specOpts{mode: etlv1.ModeFull, sourceConn: "main", target: "es:" + ix.name, batch: 1000},
		etlv1.ActionIndex), mirror)
	r := &inProcess{cfg: esConfig(ix.url, db, ix.name), env: envOf(db), spec: spec, runID: "run-1",
		opts: Options{CheckInterval: time.Nanosecond}}
	r.rep = &fakeReporter{signal: func(n int) status.Signal {
		if n >= 6 {
			return status.Pause
		}
		return status.Continue
	}}
	requireOutcome(t, r.run(t), OutcomePaused, configv1.ExitOK)
	if n := db.queryInt(t, `SELECT (full_checkpoint[1])::bigint FROM etl.etl_state`); n < 2000 {
		t.Fatalf("the paused pass committed up to %d, want a few batches", n)
	}

	// The rebuild is lost; the pass started over fails in its first batch.
	ix.must(t, http.MethodDelete, "/"+ix.name+"-run-1", "")
	db.exec(t, `UPDATE src SET doc = '{"g": "not a number"}' WHERE id = 10`)
	r.opts.CheckInterval = 0
	r.rep = &fakeReporter{trigger: etlv1.TriggerResume}
	requireOutcome(t, r.run(t), OutcomeFailed, configv1.ExitBusiness)

	db.exec(t, `UPDATE src SET doc = '{"g": 10}' WHERE id = 10`)
	r.rep = &fakeReporter{trigger: etlv1.TriggerResume}
	requireOutcome(t, r.run(t), OutcomeIdle, configv1.ExitOK)
	indexMatches(t, db, "src", ix)
}

// TestIncrementalRunsOfAMirrorPipelineWriteThroughItsAlias: before any rebuild, an Incremental
// run of a pipeline with fullSync Mirror creates the alias on an index of its own instead of
// letting Elasticsearch create a plain index of that name; the first rebuild replaces it.
func TestIncrementalRunsOfAMirrorPipelineWriteThroughItsAlias(t *testing.T) {
	t.Parallel()
	db := newTestDB(t, "main")
	createSource(t, db, 5000)
	ix := esAlias(t)
	ix.template(t, `{"doc":{"properties":{"big":{"type":"keyword"}}}}`)
	inc := withTarget(t, esSpec(t, specOpts{sourceConn: "main", target: "es:" + ix.name, batch: 1000}, etlv1.ActionIndex), mirror)
	r := &inProcess{cfg: esConfig(ix.url, db, ix.name), env: envOf(db), spec: inc}
	requireOutcome(t, r.run(t), OutcomeIdle, configv1.ExitOK)
	if got := ix.behind(t); len(got) != 1 || got[0] != ix.name+"-initial" {
		t.Fatalf("after an Incremental run the alias points at %v", got)
	}
	indexMatches(t, db, "src", ix)

	db.exec(t, `DELETE FROM src WHERE id % 10 = 0`)
	r.spec = withTarget(t, esSpec(t, specOpts{mode: etlv1.ModeFull, sourceConn: "main", target: "es:" + ix.name, batch: 1000},
		etlv1.ActionIndex), mirror)
	r.rep, r.runID = nil, "run-2"
	requireOutcome(t, r.run(t), OutcomeIdle, configv1.ExitOK)
	indexMatches(t, db, "src", ix)
	if got := ix.pattern(t); len(got) != 1 || got[0] != ix.name+"-run-2" {
		t.Fatalf("after the first rebuild the alias's indexes are %v", got)
	}
}
