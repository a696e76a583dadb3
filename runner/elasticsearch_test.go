package runner

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/test/testenv"
)

// esIndex is a test's index on the real Elasticsearch node, deleted at cleanup.
type esIndex struct {
	url, name string
}

// srcMappings maps the source's doc.big as a keyword: the number is beyond a long, which is
// what dynamic mapping would choose, and Elasticsearch would reject it.
const srcMappings = `{"properties":{"doc":{"properties":{"big":{"type":"keyword"}}}}}`

// newESIndex creates an index with no replica (the test node is alone, so it is green) and
// the given mappings.
func newESIndex(t *testing.T, mappings string) *esIndex {
	t.Helper()
	ix := &esIndex{url: testenv.ElasticsearchURL(t), name: testenv.UniqueName("sluice-runner-")}
	t.Cleanup(func() { _, _ = ix.do(http.MethodDelete, "/"+ix.name, "") })
	body := `{"settings":{"number_of_shards":1,"number_of_replicas":0}`
	if mappings != "" {
		body += `,"mappings":` + mappings
	}
	ix.must(t, http.MethodPut, "/"+ix.name, body+"}")
	return ix
}

func (ix *esIndex) do(method, path, body string) (int, []byte) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, ix.url+path, strings.NewReader(body))
	if err != nil {
		return 0, []byte(err.Error())
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer func() { _ = res.Body.Close() }()
	out, _ := io.ReadAll(res.Body)
	return res.StatusCode, out
}

func (ix *esIndex) must(t *testing.T, method, path, body string) []byte {
	t.Helper()
	code, out := ix.do(method, path, body)
	if code/100 != 2 {
		t.Fatalf("%s %s: %d %s", method, path, code, out)
	}
	return out
}

// docs refreshes the index (the sink never does) and returns every source by _id, decoded
// with numbers kept as written.
func (ix *esIndex) docs(t *testing.T) map[string]any {
	t.Helper()
	ix.must(t, http.MethodPost, "/"+ix.name+"/_refresh", "")
	docs := map[string]any{}
	body := `{"size":5000,"sort":["_doc"],"query":{"match_all":{}}}`
	out := ix.must(t, http.MethodPost, "/"+ix.name+"/_search?scroll=1m", body)
	for {
		var page struct {
			ScrollID string `json:"_scroll_id"`
			Hits     struct {
				Hits []struct {
					ID     string          `json:"_id"`
					Source json.RawMessage `json:"_source"`
				} `json:"hits"`
			} `json:"hits"`
		}
		if err := json.Unmarshal(out, &page); err != nil {
			t.Fatalf("decode search: %v", err)
		}
		if len(page.Hits.Hits) == 0 {
			_, _ = ix.do(http.MethodDelete, "/_search/scroll", fmt.Sprintf(`{"scroll_id":%q}`, page.ScrollID))
			return docs
		}
		for _, h := range page.Hits.Hits {
			if _, dup := docs[h.ID]; dup {
				t.Fatalf("_id %s returned twice", h.ID)
			}
			docs[h.ID] = decodeNumbers(t, h.Source)
		}
		out = ix.must(t, http.MethodPost, "/_search/scroll", fmt.Sprintf(`{"scroll":"1m","scroll_id":%q}`, page.ScrollID))
	}
}

func decodeNumbers(t *testing.T, js []byte) any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(string(js)))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode %s: %v", js, err)
	}
	return v
}

// indexMatchesSource compares every document with the source row of its key, as Postgres
// itself renders the row in JSON: the index holds the source's rows, each once, and nothing
// else.
func indexMatchesSource(t *testing.T, src *testDB, ix *esIndex) {
	t.Helper()
	indexMatches(t, src, "src", ix)
}

// indexMatches is indexMatchesSource for the rows of from (src with a WHERE clause).
func indexMatches(t *testing.T, src *testDB, from string, ix *esIndex) {
	t.Helper()
	rows, err := src.conn.Query(context.Background(), `SELECT id::text, json_build_object(
			'id', id, 'updated_at', to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
			'name', name, 'amount', amount, 'doc', doc)::text
		FROM `+from)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{}
	for rows.Next() {
		var id, js string
		if err := rows.Scan(&id, &js); err != nil {
			t.Fatal(err)
		}
		want[id] = decodeNumbers(t, []byte(js))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	got := ix.docs(t)
	if len(got) != len(want) {
		t.Fatalf("index %s holds %d documents, the source %d rows", ix.name, len(got), len(want))
	}
	for id, w := range want {
		if !sameJSON(got[id], w) {
			t.Fatalf("document %s = %v, source row %v", id, got[id], w)
		}
	}
}

// sameJSON compares decoded JSON, numbers by value: an update re-serializes the document, and
// Elasticsearch writes 2.50 back as 2.5.
func sameJSON(a, b any) bool {
	switch a := a.(type) {
	case json.Number:
		b, ok := b.(json.Number)
		x, okx := new(big.Rat).SetString(a.String())
		y, oky := new(big.Rat).SetString(b.String())
		return ok && okx && oky && x.Cmp(y) == 0
	case map[string]any:
		b, ok := b.(map[string]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for k, v := range a {
			if !sameJSON(v, b[k]) {
				return false
			}
		}
		return true
	case []any:
		b, ok := b.([]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for i := range a {
			if !sameJSON(a[i], b[i]) {
				return false
			}
		}
		return true
	}
	if as, ok := a.(string); ok {
		// Timestamps compare as instants: the sink writes no fraction for whole seconds.
		bs, _ := b.(string)
		ta, erra := time.Parse(time.RFC3339Nano, as)
		tb, errb := time.Parse(time.RFC3339Nano, bs)
		if erra == nil && errb == nil {
			return ta.Equal(tb)
		}
	}
	return reflect.DeepEqual(a, b)
}

// esConfig is testConfig with an Elasticsearch connection to url and the indexes whitelisted.
func esConfig(url string, db *testDB, indexes ...string) *configv1.OperatorConfig {
	cfg := testConfig(db)
	cfg.Elasticsearch = []configv1.ElasticsearchConnection{{Name: "search", URLs: []string{url}}}
	cfg.AllowedTargets.ElasticsearchIndexes = indexes
	return cfg
}

// esSpec is specJSON for an Elasticsearch target with a bulk action.
func esSpec(t *testing.T, o specOpts, action etlv1.ElasticsearchAction) string {
	t.Helper()
	var spec map[string]any
	if err := json.Unmarshal([]byte(specJSON(t, o)), &spec); err != nil {
		t.Fatal(err)
	}
	target := spec["target"].(map[string]any)
	if action != "" {
		target["action"] = action
	}
	delete(target, "connection") // the configuration's only Elasticsearch connection
	js, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	return string(js)
}

func TestElasticsearchRunsCopyTheSourceExactly(t *testing.T) {
	for _, action := range []etlv1.ElasticsearchAction{etlv1.ActionUpdate, etlv1.ActionIndex} {
		for _, mode := range []etlv1.Mode{etlv1.ModeIncremental, etlv1.ModeFull} {
			t.Run(fmt.Sprintf("%s/%s", action, mode), func(t *testing.T) {
				main := newTestDB(t, "main")
				createSource(t, main, 2345)
				ix := newESIndex(t, srcMappings)
				r := &inProcess{cfg: esConfig(ix.url, main, ix.name), env: envOf(main),
					spec: esSpec(t, specOpts{mode: mode, sourceConn: "main", target: "es:" + ix.name, batch: 500}, action)}

				res := r.run(t)
				requireOutcome(t, res, OutcomeIdle, configv1.ExitOK)
				if res.RowsRead != 2345 || res.RowsWritten != 2345 || res.Batches != 5 {
					t.Fatalf("first run: read %d, wrote %d in %d batches; want 2345, 2345, 5", res.RowsRead, res.RowsWritten, res.Batches)
				}
				indexMatchesSource(t, main, ix)

				// Changed rows move past the checkpoint, new rows follow it: the next run
				// brings both, and the index equals the source again.
				// (The JSON keeps its keys: under Update, objects merge key by key.)
				main.exec(t, `UPDATE src SET name = 'changed ' || id, doc = doc || jsonb_build_object('big', id * 2),
					updated_at = timestamptz '2025-01-01 00:00:00+00' + id * interval '1 second' WHERE id % 97 = 0`)
				insertRows(t, main, 2346, 3000)
				r.runID, r.rep = "run-2", nil
				res = r.run(t)
				requireOutcome(t, res, OutcomeIdle, configv1.ExitOK)
				wantRead := int64(655 + 24)
				if mode == etlv1.ModeFull {
					wantRead = 3000
				}
				if res.RowsRead != wantRead {
					t.Fatalf("second run read %d rows, want %d", res.RowsRead, wantRead)
				}
				indexMatchesSource(t, main, ix)
			})
		}
	}
}

// TestElasticsearchMappingConflictFailsTheRun pre-creates the index with a mapping that one
// row violates: the run fails with Elasticsearch's reason, as a business error, and the
// checkpoint stays after the last batch that was wholly acknowledged.
func TestElasticsearchMappingConflictFailsTheRun(t *testing.T) {
	main := newTestDB(t, "main")
	main.exec(t, `CREATE TABLE src (id bigint PRIMARY KEY, updated_at timestamptz NOT NULL, name text)`)
	main.exec(t, `INSERT INTO src SELECT g, timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second',
		CASE WHEN g = 1234 THEN 'not a number' ELSE g::text END FROM generate_series(1, 2000) g`)
	ix := newESIndex(t, `{"properties":{"name":{"type":"long"}}}`)
	r := &inProcess{cfg: esConfig(ix.url, main, ix.name), env: envOf(main),
		spec: esSpec(t, specOpts{sourceConn: "main", target: "es:" + ix.name, batch: 500,
			query: "SELECT id, updated_at, name FROM src", attempts: 3}, "")}
	res := r.run(t)
	requireOutcome(t, res, OutcomeFailed, configv1.ExitBusiness)
	for _, want := range []string{"es:" + ix.name, "reader row (id=1234)", `_id "1234"`, "document_parsing_exception", "[long]"} {
		if !strings.Contains(res.Message, want) {
			t.Errorf("failure message lacks %q: %s", want, res.Message)
		}
	}
	if res.ErrorClass != etlv1.ErrorBusiness || len(r.sleeps) != 0 {
		t.Fatalf("class %s after %d retries: a mapping conflict is not retried", res.ErrorClass, len(r.sleeps))
	}
	if got := main.queryInt(t, `SELECT incremental_checkpoint[2]::bigint FROM etl.etl_state`); got != 1000 {
		t.Fatalf("checkpoint at id %d, want 1000: the failed batch must not move it", got)
	}
	if got := main.queryInt(t, `SELECT rows_written FROM etl.etl_state`); got != 1000 {
		t.Fatalf("%d rows counted as written, want 1000", got)
	}
}

func TestElasticsearchTargetOutsideTheWhitelistIsRefusedBeforeAnyRequest(t *testing.T) {
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		requests.Add(1)
		w.WriteHeader(http.StatusInternalServerError)
	}))
	defer srv.Close()
	main := newTestDB(t, "main")
	createSource(t, main, 10)
	r := &inProcess{cfg: esConfig(srv.URL, main, "orders"), env: envOf(main),
		spec: esSpec(t, specOpts{sourceConn: "main", target: "es:customers", batch: 5}, "")}
	res := r.run(t)
	requireOutcome(t, res, OutcomeFailed, configv1.ExitBusiness)
	if !strings.Contains(res.Message, "es:customers is not in the operator's whitelist") {
		t.Fatalf("message %q", res.Message)
	}
	if n := requests.Load(); n != 0 {
		t.Fatalf("%d requests reached Elasticsearch for a target outside the whitelist", n)
	}
}

// TestElasticsearchOverloadIsSurvived puts a proxy in front of the node that answers 429 to
// the first bulk requests, more of them than one Write resends: the executor's retry takes
// over with a new session, and the index ends equal to the source.
func TestElasticsearchOverloadIsSurvived(t *testing.T) {
	if testing.Short() {
		t.Skip("waits through the sink's real backoff (about 8s)")
	}
	target, err := url.Parse(testenv.ElasticsearchURL(t))
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	var bulks atomic.Int64
	const rejected = 14 // two workers: 7 attempts of the first batch, one more than a Write makes
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/_bulk") && bulks.Add(1) <= rejected {
			w.Header().Set("X-Elastic-Product", "Elasticsearch")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = io.WriteString(w, `{"error":{"type":"es_rejected_execution_exception","reason":"injected"},"status":429}`)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	defer srv.Close()
	main := newTestDB(t, "main")
	createSource(t, main, 1500)
	ix := newESIndex(t, srcMappings)
	r := &inProcess{cfg: esConfig(srv.URL, main, ix.name), env: envOf(main),
		spec: esSpec(t, specOpts{sourceConn: "main", target: "es:" + ix.name, batch: 500, attempts: 3}, "")}
	res := r.run(t)
	requireOutcome(t, res, OutcomeIdle, configv1.ExitOK)
	if len(r.sleeps) == 0 {
		t.Fatalf("the executor never retried: %d bulk requests", bulks.Load())
	}
	indexMatchesSource(t, main, ix)
	if n := main.queryInt(t, `SELECT rows_read FROM etl.etl_state`); n != 1500 {
		t.Fatalf("committed counters say %d rows read, want 1500", n)
	}
}

// TestKilledRunnersLeaveTheIndexEqualToTheSource kills `sluice runner` processes writing to
// Elasticsearch with SIGKILL at random moments; replacements continue from the checkpoint and
// the final index equals the source.
func TestKilledRunnersLeaveTheIndexEqualToTheSource(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs it many times")
	}
	bin := buildSluice(t)
	main := newTestDB(t, "main")
	const rows = 20000
	createSource(t, main, rows)
	ix, calib := newESIndex(t, srcMappings), newESIndex(t, srcMappings)
	cfg := writeConfig(t, esConfig(ix.url, main, ix.name, calib.name))
	spec := esSpec(t, specOpts{mode: etlv1.ModeIncremental, sourceConn: "main", target: "es:" + ix.name, batch: 500,
		attempts: 3, backoff: 200 * time.Millisecond}, "")
	env := runEnv(envOf(main), spec, "run-1")

	// One uninterrupted run into a throwaway index times the kills.
	calibEnv := runEnv(envOf(main), strings.Replace(spec, "es:"+ix.name, "es:"+calib.name, 1), "calibration")
	calibEnv[configv1.EnvPipelineName] = "calibration"
	start := time.Now()
	p := startRunner(t, bin, calibEnv, "--config", cfg, "--no-status", "--termination-log", "", "--log-level", "warn")
	if code := p.wait(t, 2*time.Minute); code != configv1.ExitOK {
		t.Fatalf("calibration run exited %d; its log:\n%s", code, p.log)
	}
	d := time.Since(start)

	ctx, cancel := context.WithCancel(context.Background())
	watch, watchDone := watchCheckpoint(ctx, t, main,
		`SELECT incremental_checkpoint[1]::timestamptz, incremental_checkpoint[2]::bigint FROM etl.etl_state WHERE name = 'items'`)
	kills, total := 10, rows
	completions := killRunsAtRandom(t, bin, env,
		[]string{"--config", cfg, "--no-status", "--termination-log", "", "--log-level", "warn"},
		killPlan{kills: kills, window: d / 3, stream: 43,
			more: func() { insertRows(t, main, total+1, total+5000); total += 5000 }})
	p = startRunner(t, bin, env, "--config", cfg, "--no-status", "--termination-log", "", "--log-level", "warn")
	if code := p.wait(t, 2*time.Minute); code != configv1.ExitOK {
		t.Fatalf("final runner exited %d; its log:\n%s", code, p.log)
	}
	cancel()
	<-watchDone
	t.Logf("uninterrupted run %s; %d kills, %d runs completed before their kill, %d rows, %d checkpoint samples",
		d, kills, completions, total, watch.samples)
	indexMatchesSource(t, main, ix)
	if n := main.queryInt(t, `SELECT rows_read FROM etl.etl_state WHERE name = 'items'`); n != int64(total) {
		t.Fatalf("committed counters say %d rows read, want %d: a batch was counted twice or lost", n, total)
	}
	if len(watch.backwards) > 0 {
		t.Fatalf("the checkpoint moved backwards: %v", watch.backwards)
	}
}
