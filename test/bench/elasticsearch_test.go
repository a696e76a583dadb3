package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/sink/elasticsearch"
	"github.com/sluice-dev/sluice/test/testenv"
)

// esRows is how many source rows the Elasticsearch figures move: the million rows of the
// source, or fewer with SLUICE_BENCH_ES_ROWS (a million take about a minute per run into the
// test node, and the benchmark makes eight runs).
func esRows(b *testing.B) int {
	n := bigRows
	if v := os.Getenv("SLUICE_BENCH_ES_ROWS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n <= 0 || n > bigRows {
			b.Fatalf("SLUICE_BENCH_ES_ROWS=%q: want 1..%d", v, bigRows)
		}
	}
	return n
}

// esBench is the Elasticsearch side of the benchmark: the node, a configuration that
// whitelists the benchmark's index, and the documents pre-serialized for the baselines.
type esBench struct {
	*env
	url, index, cfg string
	rows            int
	// docs are the documents as the sink renders them, built by Postgres itself, with ids.
	ids  []string
	docs [][]byte
}

// BenchmarkElasticsearch measures the Elasticsearch sink: full runs of `sluice runner` from
// the source table into an index, with each bulk action, against the same documents sent as
// pre-serialized NDJSON straight to _bulk. It needs SLUICE_TEST_ES_URL as well:
//
//	go test -run '^$' -bench Elasticsearch -benchtime=1x -timeout 60m ./test/bench/
func BenchmarkElasticsearch(b *testing.B) {
	e := setup(b)
	es := &esBench{env: e, url: testenv.ElasticsearchURL(b), index: testenv.UniqueName("sluice-bench-"), rows: esRows(b)}
	es.writeConfig()
	es.serialize()
	b.Cleanup(func() { es.request(http.MethodDelete, "/"+es.index, "") })

	// Best of two of each (SLUICE_BENCH_ES_ROUNDS), interleaved: the node's background work
	// (merges of the previous run's segments) and the machine's load weigh on all alike.
	rounds := 2
	if v := os.Getenv("SLUICE_BENCH_ES_ROUNDS"); v != "" {
		var err error
		if rounds, err = strconv.Atoi(v); err != nil || rounds < 1 {
			b.Fatalf("SLUICE_BENCH_ES_ROUNDS=%q: want a positive number", v)
		}
	}
	actions := []etlv1.ElasticsearchAction{etlv1.ActionUpdate, etlv1.ActionIndex}
	rate := func(d time.Duration) float64 { return float64(es.rows) / d.Seconds() }
	best := map[string]time.Duration{}
	record := func(name string, d time.Duration) {
		if cur, ok := best[name]; !ok || d < cur {
			best[name] = d
		}
	}
	for round := range rounds {
		for _, action := range actions {
			base := es.rawBulk(action)
			sink := es.runSink(action, fmt.Sprintf("es-%s-%d", strings.ToLower(string(action)), round))
			b.Logf("round %d %s: runner %s (%.0f docs/s, peak RSS %.1f MiB), raw _bulk %s (%.0f docs/s)",
				round, action, sink.wall, rate(sink.wall), mib(sink.maxRSS), base, rate(base))
			record("sink "+string(action), sink.wall)
			record("raw "+string(action), base)
		}
		m := es.runMirror(round)
		b.Logf("round %d Mirror: runner %s (%.0f docs/s, peak RSS %.1f MiB)", round, m.wall, rate(m.wall), mib(m.maxRSS))
		record("sink Mirror", m.wall)
	}
	// The names stay those of the million-row figures whatever esRows is; the log says how
	// many rows moved.
	b.Logf("Elasticsearch figures measured on %d rows", es.rows)
	report("es_upsert_1m", rate(best["sink Update"]), rate(best["raw Update"]), "docs/s")
	report("es_index_1m", rate(best["sink Index"]), rate(best["raw Index"]), "docs/s")
	report("es_update_vs_index", rate(best["sink Update"]), rate(best["sink Index"]), "docs/s")
	report("es_mirror_1m", rate(best["sink Mirror"]), rate(best["sink Index"]), "docs/s")
}

func (es *esBench) writeConfig() {
	cfg := configv1.OperatorConfig{
		APIVersion: configv1.APIVersion, Kind: configv1.Kind,
		Runner:          configv1.RunnerConfig{Image: "sluice:bench", ServiceAccountName: "runner", ConfigMapName: "cfg"},
		StateConnection: "main",
		Postgres:        []configv1.PostgresConnection{{Name: "main", DSNSecret: configv1.SecretKeyRef{Name: "main", Key: "dsn"}}},
		Elasticsearch:   []configv1.ElasticsearchConnection{{Name: "search", URLs: []string{es.url}}},
		AllowedTargets:  configv1.AllowedTargets{ElasticsearchIndexes: []string{es.index, es.alias()}},
	}
	data, _ := json.Marshal(cfg)
	es.cfg = filepath.Join(es.b.TempDir(), "config-es.json")
	if err := os.WriteFile(es.cfg, data, 0o600); err != nil {
		es.b.Fatal(err)
	}
}

// serialize has Postgres render each row as the sink does (same fields, order and value
// forms), so that the baseline sends the same bytes without any of the runner's work.
func (es *esBench) serialize() {
	es.b.Helper()
	rows, err := es.conn.Query(context.Background(), `SELECT id::text, '{"id":' || id || ',"updated_at":"' ||
			to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') || '","name":' || to_json(name)::text ||
			',"amount":' || amount || ',"qty":' || qty || ',"payload":' || to_json(payload)::text || '}'
		FROM src WHERE id <= $1 ORDER BY updated_at, id`, es.rows)
	if err != nil {
		es.b.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var doc []byte
		if err := rows.Scan(&id, &doc); err != nil {
			es.b.Fatal(err)
		}
		es.ids = append(es.ids, id)
		es.docs = append(es.docs, doc)
	}
	if err := rows.Err(); err != nil {
		es.b.Fatal(err)
	}
}

func (es *esBench) request(method, path, body string) []byte {
	es.b.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, es.url+path, strings.NewReader(body))
	if err != nil {
		es.b.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		es.b.Fatal(err)
	}
	defer func() { _ = res.Body.Close() }()
	out, _ := io.ReadAll(res.Body)
	if res.StatusCode/100 != 2 && (method != http.MethodDelete || res.StatusCode != http.StatusNotFound) {
		es.b.Fatalf("%s %s: %d %s", method, path, res.StatusCode, out)
	}
	return out
}

// fresh recreates the index with the same settings for every measured run: one shard, no
// replica (the node is alone), the default refresh interval, dynamic mapping.
func (es *esBench) fresh() {
	es.request(http.MethodDelete, "/"+es.index, "")
	es.request(http.MethodPut, "/"+es.index, `{"settings":{"number_of_shards":1,"number_of_replicas":0}}`)
}

// count refreshes the index and checks it holds every document.
func (es *esBench) count() {
	es.request(http.MethodPost, "/"+es.index+"/_refresh", "")
	var c struct{ Count int }
	if err := json.Unmarshal(es.request(http.MethodGet, "/"+es.index+"/_count", ""), &c); err != nil || c.Count != es.rows {
		es.b.Fatalf("index holds %d documents, want %d (%v)", c.Count, es.rows, err)
	}
}

// rawBulk times the baseline: the pre-serialized documents as NDJSON, in bulk requests of
// as many documents as the sink sends in one (a batch over its workers), with as many requests
// in flight as the sink's workers, the same action line as the bulk indexer writes.
func (es *esBench) rawBulk(action etlv1.ElasticsearchAction) time.Duration {
	es.b.Helper()
	es.fresh()
	perRequest := batchSize / elasticsearch.DefaultWorkers
	var bodies [][]byte
	var buf bytes.Buffer
	for i, doc := range es.docs {
		if action == etlv1.ActionIndex {
			fmt.Fprintf(&buf, "{\"index\":{\"_id\":%q}}\n%s\n", es.ids[i], doc)
		} else {
			fmt.Fprintf(&buf, "{\"update\":{\"_id\":%q,\"retry_on_conflict\":3}}\n{\"doc\":%s,\"doc_as_upsert\":true}\n", es.ids[i], doc)
		}
		if (i+1)%perRequest == 0 || i == len(es.docs)-1 {
			bodies = append(bodies, bytes.Clone(buf.Bytes()))
			buf.Reset()
		}
	}
	work := make(chan []byte)
	errs := make(chan error, elasticsearch.DefaultWorkers)
	var wg sync.WaitGroup
	start := time.Now()
	for range elasticsearch.DefaultWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for body := range work {
				if err := es.bulk(body); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for _, body := range bodies {
		work <- body
	}
	close(work)
	wg.Wait()
	d := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		es.b.Fatal(err)
	}
	es.count()
	return d
}

func (es *esBench) bulk(body []byte) error {
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, es.url+"/"+es.index+"/_bulk?filter_path=errors", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = res.Body.Close() }()
	out, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK || !bytes.Contains(out, []byte(`"errors":false`)) {
		return fmt.Errorf("bulk: %d %.300s", res.StatusCode, out)
	}
	return nil
}

// runSink times a full run of `sluice runner` from the source table into the index.
func (es *esBench) runSink(action etlv1.ElasticsearchAction, runID string) runResult {
	es.b.Helper()
	es.fresh()
	r := es.run(es.spec(es.index, action, ""), "es-"+strings.ToLower(string(action)), runID)
	es.count()
	if action == etlv1.ActionIndex {
		es.sameDocuments()
	}
	return r
}

func (es *esBench) spec(index string, action etlv1.ElasticsearchAction, fullSync string) map[string]any {
	target := map[string]any{"name": "es:" + index, "action": action}
	if fullSync != "" {
		target["fullSync"] = fullSync
	}
	return map[string]any{
		"mode": "Full",
		"source": map[string]any{"connection": "main", "query": fmt.Sprintf("SELECT * FROM src WHERE id <= %d", es.rows),
			"cursor": map[string]any{"column": "updated_at", "keyColumns": []string{"id"}}},
		"target":    target,
		"batchSize": batchSize,
	}
}

// alias is the alias of the Mirror rebuilds.
func (es *esBench) alias() string { return es.index + "-alias" }

// runMirror times a Full Mirror rebuild of the alias with the Index action, its new index made
// from a template with the settings fresh gives the plain index. From the second round on, a
// reader polls the alias's _count every 100 ms during the rebuild: it must always see every
// document, the old index's until the swap and the new one's after it.
func (es *esBench) runMirror(round int) runResult {
	es.b.Helper()
	// The plain index goes first, as fresh does before the other runs: its background merges
	// would otherwise weigh on this run alone.
	es.request(http.MethodDelete, "/"+es.index, "")
	alias := es.alias()
	if round == 0 {
		es.request(http.MethodPut, "/_index_template/"+alias, `{"index_patterns":["`+alias+`-*"],"priority":500,
			"template":{"settings":{"number_of_shards":1,"number_of_replicas":0}}}`)
		es.b.Cleanup(func() {
			es.request(http.MethodDelete, "/"+alias+"-*", "")
			es.request(http.MethodDelete, "/_index_template/"+alias, "")
		})
	}
	var seen []string
	stop, polled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(polled)
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			if round == 0 {
				continue
			}
			var c struct{ Count int }
			req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, es.url+"/"+alias+"/_count", nil)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				seen = append(seen, err.Error())
				continue
			}
			out, _ := io.ReadAll(res.Body)
			_ = res.Body.Close()
			if res.StatusCode != http.StatusOK || json.Unmarshal(out, &c) != nil || c.Count != es.rows {
				seen = append(seen, fmt.Sprintf("%d %.200s", res.StatusCode, out))
			}
		}
	}()
	r := es.run(es.spec(alias, etlv1.ActionIndex, "Mirror"), "es-mirror", fmt.Sprintf("mirror-%d", round))
	close(stop)
	<-polled
	if len(seen) > 0 {
		es.b.Fatalf("during the rebuild a reader of the alias saw %d wrong answers, the first: %s", len(seen), seen[0])
	}
	var c struct{ Count int }
	if err := json.Unmarshal(es.request(http.MethodGet, "/"+alias+"/_count", ""), &c); err != nil || c.Count != es.rows {
		es.b.Fatalf("after the swap the alias counts %d documents, want %d (%v)", c.Count, es.rows, err)
	}
	var indexes []struct{ Index string }
	if err := json.Unmarshal(es.request(http.MethodGet, "/_cat/indices/"+alias+"-*?format=json&h=index", ""), &indexes); err != nil || len(indexes) != 1 {
		es.b.Fatalf("indexes of the alias after the swap: %+v (%v)", indexes, err)
	}
	return r
}

// run times one run of `sluice runner`.
func (es *esBench) run(spec map[string]any, pipeline, runID string) runResult {
	js, _ := json.Marshal(spec)
	cmd := exec.Command(es.bin, "runner", "--config", es.cfg, "--no-status", "--termination-log", "", "--log-level", "warn")
	cmd.Env = append(os.Environ(),
		configv1.PostgresDSNEnv("main")+"="+es.dsn,
		configv1.EnvPipelineNamespace+"=bench", configv1.EnvPipelineName+"="+pipeline,
		configv1.EnvRunID+"="+runID, configv1.EnvSpec+"="+string(js), configv1.EnvGeneration+"=1")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		es.b.Fatal(err)
	}
	peak := watchPeakRSS(cmd.Process.Pid)
	if err := cmd.Wait(); err != nil {
		es.b.Fatalf("runner %s: %v\n%s", runID, err, out.String())
	}
	r := runResult{wall: time.Since(start), maxRSS: peak()}
	es.b.Logf("runner %s: CPU user %s, system %s", runID, cmd.ProcessState.UserTime(), cmd.ProcessState.SystemTime())
	return r
}

// sameDocuments checks that the sink wrote byte for byte the documents the baseline sends
// (an index keeps the bytes it was sent as _source).
func (es *esBench) sameDocuments() {
	es.b.Helper()
	for _, i := range []int{0, len(es.ids) / 2, len(es.ids) - 1} {
		var doc struct {
			Source json.RawMessage `json:"_source"`
		}
		if err := json.Unmarshal(es.request(http.MethodGet, "/"+es.index+"/_doc/"+es.ids[i], ""), &doc); err != nil {
			es.b.Fatal(err)
		}
		if !slices.Equal(doc.Source, es.docs[i]) {
			es.b.Fatalf("document %s: the sink wrote %s, the baseline sends %s", es.ids[i], doc.Source, es.docs[i])
		}
	}
}

// watchPeakRSS samples the peak resident set (VmHWM) of a running process until the returned
// function is called, which returns the last sample. The rusage of a child is no measure: Go
// starts children with vfork, so the child's peak includes the parent's memory (here, the
// serialized documents) until it execs.
func watchPeakRSS(pid int) func() int64 {
	var mu sync.Mutex
	var peak int64
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		path := fmt.Sprintf("/proc/%d/status", pid)
		for {
			if data, err := os.ReadFile(path); err == nil {
				for _, line := range strings.Split(string(data), "\n") {
					if kb, ok := strings.CutPrefix(line, "VmHWM:"); ok {
						if n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(kb), "kB")), 10, 64); err == nil {
							mu.Lock()
							peak = max(peak, n*1024)
							mu.Unlock()
						}
					}
				}
			}
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return func() int64 {
		close(done)
		<-stopped
		mu.Lock()
		defer mu.Unlock()
		return peak
	}
}
