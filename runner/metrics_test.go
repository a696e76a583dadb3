package runner

import (
	"context"
	"io"
	"maps"
	"net"
	"net/http"
	"regexp"
	"slices"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/batch"
	"github.com/sluice-dev/sluice/runner/metrics"
	"github.com/sluice-dev/sluice/runner/status"
)

// metricValue returns the value of the series of name whose labels include labels (pairs of
// name and value); a histogram's is its count. It reports false when there is no such series.
func metricValue(t *testing.T, m *metrics.Metrics, name string, labels ...string) (float64, bool) {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, s := range mf.GetMetric() {
			if !hasLabels(s, labels) {
				continue
			}
			switch {
			case s.Counter != nil:
				return s.Counter.GetValue(), true
			case s.Gauge != nil:
				return s.Gauge.GetValue(), true
			case s.Histogram != nil:
				return float64(s.Histogram.GetSampleCount()), true
			}
		}
	}
	return 0, false
}

func hasLabels(s *dto.Metric, labels []string) bool {
	have := map[string]string{}
	for _, l := range s.GetLabel() {
		have[l.GetName()] = l.GetValue()
	}
	for i := 0; i+1 < len(labels); i += 2 {
		if have[labels[i]] != labels[i+1] {
			return false
		}
	}
	return true
}

// stageCounts returns how many batches each stage of the duration histogram observed, -1 for
// a stage without a series.
func stageCounts(t *testing.T, m *metrics.Metrics) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, st := range []string{metrics.StageRead, metrics.StageTransform, metrics.StageWrite, metrics.StageCheckpoint} {
		n, ok := metricValue(t, m, metrics.BatchDuration, metrics.LabelStage, st)
		out[st] = int64(n)
		if !ok {
			out[st] = -1
		}
	}
	return out
}

// requireCounts checks the run's counters against what the run did, and the stage histogram:
// every committed batch in read and write; in transform only with a python task (identity
// stages are not timed); in checkpoint only when the sink is outside the state database (in
// it, the checkpoint commits in the write's transaction).
func requireCounts(t *testing.T, m *metrics.Metrics, res Result, read, written, batches int64, python, shared bool) {
	t.Helper()
	if res.RowsRead != read || res.RowsWritten != written || res.Batches != batches {
		t.Fatalf("the run read %d, wrote %d in %d batches; want %d, %d, %d", res.RowsRead, res.RowsWritten, res.Batches, read, written, batches)
	}
	for _, c := range []struct {
		name string
		want int64
	}{{metrics.RowsRead, read}, {metrics.RowsWritten, written}, {metrics.RowsDeleted, 0}, {metrics.Batches, batches}} {
		if got, _ := metricValue(t, m, c.name); got != float64(c.want) {
			t.Errorf("%s = %v, want %d", c.name, got, c.want)
		}
	}
	want := map[string]int64{metrics.StageRead: batches, metrics.StageTransform: -1, metrics.StageWrite: batches, metrics.StageCheckpoint: batches}
	if python {
		want[metrics.StageTransform] = batches
	}
	if shared {
		want[metrics.StageCheckpoint] = -1
	}
	if got := stageCounts(t, m); !maps.Equal(got, want) {
		t.Errorf("stage histogram counts %v, want %v (-1: no series)", got, want)
	}
	if v, _ := metricValue(t, m, metrics.RowsPerSecond); v <= 0 {
		t.Errorf("%s = %v after %d rows", metrics.RowsPerSecond, v, read)
	}
	if v, _ := metricValue(t, m, metrics.RunStartTimestamp); v < float64(time.Now().Add(-time.Hour).Unix()) {
		t.Errorf("%s = %v, want the run's start", metrics.RunStartTimestamp, v)
	}
}

// TestMetricsCountTheRun runs pipelines in-process with metrics on, without and with a python
// task, with the sink in the state database and outside it.
func TestMetricsCountTheRun(t *testing.T) {
	for _, tp := range topologies {
		for _, python := range []bool{false, true} {
			name := tp.name + "/identity"
			if python {
				name = tp.name + "/python"
			}
			t.Run(name, func(t *testing.T) {
				main, dst := dbsFor(t, tp)
				const rows = 2345
				createSource(t, main, rows)
				createTarget(t, dst, "items")
				m := metrics.New("tenant", "items")
				o := specOpts{sourceConn: "main", targetConn: dst.name, batch: 500}
				r := &inProcess{cfg: testConfig(main, dst), env: envOf(main, dst), spec: specJSON(t, o),
					opts: Options{Metrics: m, Python: pythonForTests()}}
				if python {
					r.spec = tasksSpecJSON(t, o, 0, pyTask{"copy", "def transform(row):\n    return row\n"})
				}
				res := r.run(t)
				requireOutcome(t, res, OutcomeIdle, configv1.ExitOK)
				sinkMatchesSource(t, main, dst, "items")
				requireCounts(t, m, res, rows, dst.queryInt(t, `SELECT count(*) FROM analytics.items`), 5, python, tp.shared)

				bytes, _ := metricValue(t, m, metrics.BytesRead)
				seconds, _ := metricValue(t, m, metrics.PythonSeconds)
				// The rows as Postgres sends them in binary: each value and its 4-byte length.
				want := main.queryInt(t, `SELECT sum(octet_length(int8send(id)) + octet_length(timestamptz_send(updated_at))
					+ octet_length(textsend(name)) + octet_length(numeric_send(amount)) + octet_length(jsonb_send(doc)) + 5 * 4) FROM src`)
				if python {
					// Batches a python task reads are decoded: the reader counted their values,
					// each page's look-ahead row too (it is read again as the next page's first).
					if bytes < float64(want) || bytes > 1.05*float64(want) || seconds <= 0 {
						t.Errorf("%s = %v (the source holds %d) and %s = %v; want the rows' size and the python stage's time",
							metrics.BytesRead, bytes, want, metrics.PythonSeconds, seconds)
					}
					return
				}
				if bytes != float64(want) || seconds != 0 {
					t.Errorf("%s = %v and %s = %v; want %d and 0", metrics.BytesRead, bytes, metrics.PythonSeconds, seconds, want)
				}
			})
		}
	}
}

// TestMetricsCountRetries terminates the runner's sessions once while the run moves: the
// retry is counted under its class, and the batches replayed after it are not counted twice.
func TestMetricsCountRetries(t *testing.T) {
	for _, tp := range topologies {
		t.Run(tp.name, func(t *testing.T) {
			main, dst := dbsFor(t, tp)
			const rows = 3000
			createSource(t, main, rows)
			createTarget(t, dst, "items")
			m := metrics.New("tenant", "items")
			r := &inProcess{cfg: testConfig(main, dst), env: envOf(main, dst),
				opts: Options{Metrics: m, CheckInterval: time.Nanosecond},
				spec: specJSON(t, specOpts{sourceConn: "main", targetConn: dst.name, batch: 100, attempts: 3, backoff: time.Second})}
			// Checks happen before every batch (the first when the session opens): the fourth
			// terminates every session of the runner, as TestDroppedConnectionsAreRetried does.
			r.rep = &fakeReporter{signal: func(n int) status.Signal {
				if n == 3 {
					for _, db := range []*testDB{main, dst} {
						db.exec(t, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
							WHERE application_name LIKE 'sluice-runner%' AND datname = current_database()`)
					}
				}
				return status.Continue
			}}
			res := r.run(t)
			requireOutcome(t, res, OutcomeIdle, configv1.ExitOK)
			sinkMatchesSource(t, main, dst, "items")
			if len(r.sleeps) == 0 {
				t.Fatalf("the runner did not retry after its sessions were terminated")
			}
			if got, _ := metricValue(t, m, metrics.Retries, metrics.LabelClass, string(etlv1.ErrorInfra)); got != float64(len(r.sleeps)) {
				t.Errorf("%s{class=Infra} = %v, want the %d retries", metrics.Retries, got, len(r.sleeps))
			}
			requireCounts(t, m, res, rows, rows, rows/100, false, tp.shared)
		})
	}
}

// TestMetricsAreServedWhileTheRunRuns scrapes the HTTP endpoint in the middle of a run: it
// answers with the pipeline's constant labels, and it is gone once Run returned.
func TestMetricsAreServedWhileTheRunRuns(t *testing.T) {
	db := newTestDB(t, "main")
	createSource(t, db, 1000)
	createTarget(t, db, "items")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + l.Addr().String() + metrics.Path
	var scraped string
	var scrapeErr error
	r := &inProcess{cfg: testConfig(db), env: envOf(db),
		opts: Options{Metrics: metrics.New("tenant", "items"), MetricsListener: l, CheckInterval: time.Nanosecond},
		spec: specJSON(t, specOpts{sourceConn: "main", batch: 100})}
	r.rep = &fakeReporter{signal: func(n int) status.Signal {
		if n == 5 {
			scraped, scrapeErr = scrape(url)
		}
		return status.Continue
	}}
	requireOutcome(t, r.run(t), OutcomeIdle, configv1.ExitOK)
	if scrapeErr != nil {
		t.Fatalf("scrape during the run: %v", scrapeErr)
	}
	// Part way: some batches are committed (how many depends on the one the sink keeps in
	// flight), not all ten.
	for _, want := range []string{
		`(?m)^sluice_runner_batches_total\{name="items",namespace="tenant"\} [1-9]$`,
		`(?m)^sluice_runner_run_start_timestamp_seconds\{name="items",namespace="tenant"\} \d`,
		`(?m)^sluice_runner_retries_total\{class="Infra",name="items",namespace="tenant"\} 0$`,
	} {
		if !regexp.MustCompile(want).MatchString(scraped) {
			t.Errorf("the scrape lacks %s:\n%s", want, scraped)
		}
	}
	if _, err := scrape(url); err == nil {
		t.Fatalf("the metrics endpoint still answers after the run")
	}
}

func scrape(url string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer func() { _ = res.Body.Close() }()
	body, err := io.ReadAll(res.Body)
	return string(body), err
}

// TestMetricsCountElasticsearchItemFailures: the document a mapping rejects is counted under
// its status.
func TestMetricsCountElasticsearchItemFailures(t *testing.T) {
	main := newTestDB(t, "main")
	main.exec(t, `CREATE TABLE src (id bigint PRIMARY KEY, updated_at timestamptz NOT NULL, name text)`)
	main.exec(t, `INSERT INTO src SELECT g, timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second',
		CASE WHEN g = 1234 THEN 'not a number' ELSE g::text END FROM generate_series(1, 2000) g`)
	ix := newESIndex(t, `{"properties":{"name":{"type":"long"}}}`)
	m := metrics.New("tenant", "items")
	r := &inProcess{cfg: esConfig(ix.url, main, ix.name), env: envOf(main), opts: Options{Metrics: m},
		spec: esSpec(t, specOpts{sourceConn: "main", target: "es:" + ix.name, batch: 500,
			query: "SELECT id, updated_at, name FROM src"}, "")}
	requireOutcome(t, r.run(t), OutcomeFailed, configv1.ExitBusiness)
	if got, _ := metricValue(t, m, metrics.ElasticsearchBulkItemFailures, metrics.LabelStatus, "400"); got != 1 {
		t.Errorf("%s{status=400} = %v, want 1", metrics.ElasticsearchBulkItemFailures, got)
	}
	if got, _ := metricValue(t, m, metrics.Batches); got != 2 {
		t.Errorf("%s = %v, want the 2 batches before the rejected one", metrics.Batches, got)
	}
}

func TestWireBytes(t *testing.T) {
	raw := batch.NewRaw([]int16{1, 0}, 2, 0)
	raw.AppendRow([][]byte{[]byte("12345678"), []byte("abc")}) // 8+4 + 3+4
	raw.AppendRow([][]byte{[]byte("12345678"), nil})           // 8+4 + 4 (NULL)
	for _, tc := range []struct {
		name string
		b    *batch.Batch
		want int64
	}{
		{"undecoded", &batch.Batch{Raw: raw}, 19 + 16},
		{"undecoded, empty", &batch.Batch{Raw: batch.NewRaw(nil, 0, 0)}, 0},
		{"decoded, as the reader counted it", &batch.Batch{Rows: [][]any{{int64(1)}}, ReadBytes: 12}, 12},
		{"decoded, not counted", batchOf([]string{"id"}, [][]any{{int64(1)}}), 0},
	} {
		if got := wireBytes(tc.b); got != tc.want {
			t.Errorf("%s: wireBytes = %d, want %d", tc.name, got, tc.want)
		}
	}
}

func TestCommittedUnconfirmed(t *testing.T) {
	inflight := []sentBatch{{obs: metrics.Batch{Bytes: 1}}, {obs: metrics.Batch{Bytes: 2}}}
	for _, tc := range []struct {
		name string
		n    int64
		want []int64 // the batches' bytes
	}{
		{"none committed", 0, []int64{}},
		{"the oldest committed", 1, []int64{1}},
		{"both committed", 2, []int64{1, 2}},
		{"the state ahead by more than was in flight", 5, []int64{1, 2}},
		{"the state behind (checkpoint at the end)", -3, []int64{}},
	} {
		got := []int64{}
		for _, b := range committedUnconfirmed(inflight, tc.n) {
			got = append(got, b.Bytes)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
