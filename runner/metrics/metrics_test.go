package metrics

import (
	"context"
	"io"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

// recordAll records something on every metric, so that every one has a series.
func recordAll(m *Metrics) {
	m.Resumed(Totals{}, nil)
	m.Committed(Totals{RowsRead: 10, RowsWritten: 9, RowsDeleted: 1, Batches: 1},
		Batch{Read: time.Millisecond, Transform: time.Millisecond, Write: time.Millisecond, Checkpoint: time.Millisecond, Bytes: 100})
	m.Retry(etlv1.ErrorInfra)
	m.Python(time.Millisecond)
	m.ElasticsearchItemFailures(429, 2)
}

func gather(t *testing.T, g prometheus.Gatherer) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// labelsOf returns a series' labels.
func labelsOf(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

var (
	snakeCase = regexp.MustCompile(`^sluice_runner_[a-z][a-z0-9_]*[a-z0-9]$`)
	// notBase are units Prometheus wants in their base unit (seconds, bytes).
	notBase = regexp.MustCompile(`_(milliseconds|microseconds|nanoseconds|ms|us|ns|minutes|hours|days|kilobytes|megabytes|kb|mb|gb|kib|mib)(_|$)`)
)

// TestEveryMetricIsRegisteredAndFollowsTheConventions checks each metric of the contract: it
// is registered with its type and labels, the constant labels name the pipeline, and its name
// follows Prometheus' conventions. Nothing else is registered.
func TestEveryMetricIsRegisteredAndFollowsTheConventions(t *testing.T) {
	cases := []struct {
		name   string
		typ    dto.MetricType
		labels []string // besides namespace and name
		unit   string   // the base unit the name must end in (before _total), if any
		// unitInside excuses a name of the contract whose unit is a word before its last
		// one (Prometheus would have put it last: read_bytes_total).
		unitInside bool
	}{
		{BatchDuration, dto.MetricType_HISTOGRAM, []string{LabelStage}, "seconds", false},
		{RowsRead, dto.MetricType_COUNTER, nil, "", false},
		{RowsWritten, dto.MetricType_COUNTER, nil, "", false},
		{RowsDeleted, dto.MetricType_COUNTER, nil, "", false},
		{Batches, dto.MetricType_COUNTER, nil, "", false},
		{RowsPerSecond, dto.MetricType_GAUGE, nil, "", false},
		{BytesRead, dto.MetricType_COUNTER, nil, "bytes", true},
		{Retries, dto.MetricType_COUNTER, []string{LabelClass}, "", false},
		{PythonSeconds, dto.MetricType_COUNTER, nil, "seconds", false},
		{ElasticsearchBulkItemFailures, dto.MetricType_COUNTER, []string{LabelStatus}, "", false},
		{RunStartTimestamp, dto.MetricType_GAUGE, nil, "seconds", false},
	}
	m := New("tenant", "items")
	recordAll(m)
	families := gather(t, m.Registry())

	var names []string
	for _, tc := range cases {
		names = append(names, tc.name)
		t.Run(tc.name, func(t *testing.T) {
			mf, ok := families[tc.name]
			if !ok {
				t.Fatalf("%s is not registered", tc.name)
			}
			if mf.GetType() != tc.typ {
				t.Errorf("type %s, want %s", mf.GetType(), tc.typ)
			}
			if mf.GetHelp() == "" {
				t.Errorf("no help text")
			}
			want := append([]string{LabelNamespace, LabelName}, tc.labels...)
			slices.Sort(want)
			for _, s := range mf.GetMetric() {
				l := labelsOf(s)
				if l[LabelNamespace] != "tenant" || l[LabelName] != "items" {
					t.Errorf("series %v lacks the pipeline's constant labels", l)
				}
				got := slices.Sorted(func(yield func(string) bool) {
					for k := range l {
						if !yield(k) {
							return
						}
					}
				})
				if !slices.Equal(got, want) {
					t.Errorf("labels %v, want %v", got, want)
				}
			}

			if !snakeCase.MatchString(tc.name) {
				t.Errorf("not a snake_case name under sluice_runner_")
			}
			if notBase.MatchString(tc.name) {
				t.Errorf("a unit other than the base unit")
			}
			total := strings.HasSuffix(tc.name, "_total")
			if total != (tc.typ == dto.MetricType_COUNTER) {
				t.Errorf("a counter's name, and only a counter's, ends in _total")
			}
			base := strings.TrimSuffix(tc.name, "_total")
			switch {
			case tc.unit == "":
			case tc.unitInside && !strings.Contains(base, "_"+tc.unit+"_"):
				t.Errorf("the name lacks its unit, _%s_", tc.unit)
			case !tc.unitInside && !strings.HasSuffix(base, "_"+tc.unit):
				t.Errorf("the name does not end in its unit, _%s", tc.unit)
			}
			if tc.typ == dto.MetricType_HISTOGRAM && tc.unit == "" {
				t.Errorf("a histogram without a unit")
			}
		})
	}
	if got := Names(); !slices.Equal(got, names) {
		t.Errorf("Names() = %v, want %v", got, names)
	}
	for name := range families {
		if !slices.Contains(names, name) {
			t.Errorf("%s is registered but not in the contract", name)
		}
	}
}

// TestDurationBucketsSpanAMillisecondToAMinute: the histogram resolves batch times from 1 ms
// to 60 s.
func TestDurationBucketsSpanAMillisecondToAMinute(t *testing.T) {
	if DurationBuckets[0] != 0.001 || DurationBuckets[len(DurationBuckets)-1] != 60 || !slices.IsSorted(DurationBuckets) {
		t.Fatalf("buckets %v: want increasing from 0.001 to 60", DurationBuckets)
	}
}

// value returns the value of the series of name whose labels include labels (0 and false when
// there is none); a histogram's is its count.
func value(families map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	for _, s := range families[name].GetMetric() {
		l := labelsOf(s)
		match := true
		for i := 0; i+1 < len(labels); i += 2 {
			match = match && l[labels[i]] == labels[i+1]
		}
		if !match {
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
	return 0, false
}

// step is one call the executor makes.
type step struct {
	resumed bool // Resumed, else Committed
	totals  Totals
	// unconfirmed is Resumed's number of batches committed without a confirmation.
	unconfirmed int
	transform   bool // the batch went through a transform
}

// TestCountersCountWhatThisProcessCommitted: the counters start from the totals of the first
// session, count every committed batch once (a replay after a retry moves nothing) and catch
// up with a batch whose confirmation a failed session lost.
func TestCountersCountWhatThisProcessCommitted(t *testing.T) {
	batch := func(read, written, deleted, n int64) Totals { return Totals{read, written, deleted, n} }
	cases := []struct {
		name  string
		steps []step
		want  Totals
		// observed is the read stage's count, transforms the transform stage's (-1: no series).
		observed, transforms int
	}{
		{name: "a new run", steps: []step{
			{resumed: true}, {totals: batch(10, 10, 0, 1)}, {totals: batch(20, 19, 1, 2)},
		}, want: batch(20, 19, 1, 2), observed: 2, transforms: -1},
		{name: "a pod replacing a crashed one", steps: []step{
			{resumed: true, totals: batch(500, 500, 0, 50)}, {totals: batch(510, 510, 0, 51)},
		}, want: batch(10, 10, 0, 1), observed: 1, transforms: -1},
		{name: "a retry replaying uncommitted batches", steps: []step{
			{resumed: true}, {totals: batch(10, 10, 0, 1)}, {totals: batch(20, 20, 0, 2)},
			{resumed: true, totals: batch(0, 0, 0, 0)}, {totals: batch(10, 10, 0, 1)}, {totals: batch(20, 20, 0, 2)},
			{totals: batch(30, 30, 0, 3)},
		}, want: batch(30, 30, 0, 3), observed: 3, transforms: -1},
		{name: "a retry after a lost confirmation", steps: []step{
			{resumed: true}, {totals: batch(10, 10, 0, 1)},
			{resumed: true, totals: batch(20, 20, 0, 2), unconfirmed: 1}, {totals: batch(30, 30, 0, 3)},
		}, want: batch(30, 30, 0, 3), observed: 3, transforms: -1},
		{name: "a retry after a lost confirmation, more in flight than committed", steps: []step{
			{resumed: true}, {totals: batch(10, 10, 0, 1)},
			{resumed: true, totals: batch(20, 20, 0, 2), unconfirmed: 3}, {totals: batch(30, 30, 0, 3)},
		}, want: batch(30, 30, 0, 3), observed: 3, transforms: -1},
		{name: "transformed batches", steps: []step{
			{resumed: true}, {totals: batch(10, 5, 0, 1), transform: true}, {totals: batch(20, 9, 0, 2), transform: true},
		}, want: batch(20, 9, 0, 2), observed: 2, transforms: 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := New("tenant", "items")
			for _, s := range tc.steps {
				b := Batch{Read: time.Millisecond, Write: time.Millisecond, Bytes: 7}
				if s.transform {
					b.Transform = time.Millisecond
				}
				if s.resumed {
					m.Resumed(s.totals, slices.Repeat([]Batch{b}, s.unconfirmed))
					continue
				}
				m.Committed(s.totals, b)
			}
			f := gather(t, m.Registry())
			for _, c := range []struct {
				name string
				want int64
			}{{RowsRead, tc.want.RowsRead}, {RowsWritten, tc.want.RowsWritten}, {RowsDeleted, tc.want.RowsDeleted}, {Batches, tc.want.Batches}} {
				if got, _ := value(f, c.name); got != float64(c.want) {
					t.Errorf("%s = %v, want %d", c.name, got, c.want)
				}
			}
			if got, _ := value(f, BatchDuration, LabelStage, StageRead); got != float64(tc.observed) {
				t.Errorf("read stage observed %v batches, want %d", got, tc.observed)
			}
			if got, _ := value(f, BytesRead); got != float64(7*tc.observed) {
				t.Errorf("%s = %v, want %d", BytesRead, got, 7*tc.observed)
			}
			got, ok := value(f, BatchDuration, LabelStage, StageTransform)
			if tc.transforms < 0 && ok || tc.transforms >= 0 && got != float64(tc.transforms) {
				t.Errorf("transform stage observed %v batches (series: %v), want %d (-1: no series)", got, ok, tc.transforms)
			}
			if _, ok := value(f, BatchDuration, LabelStage, StageCheckpoint); ok {
				t.Errorf("a checkpoint stage no batch went through has a series")
			}
			if rate, _ := value(f, RowsPerSecond); (rate > 0) != (tc.want.RowsRead > 0) {
				t.Errorf("%s = %v after %d rows", RowsPerSecond, rate, tc.want.RowsRead)
			}
		})
	}
}

func TestPerSecond(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		d    time.Duration
		want float64
	}{{0, time.Second, 0}, {1000, 2 * time.Second, 500}, {10, 0, 0}, {10, -time.Second, 0}} {
		if got := perSecond(tc.n, tc.d); got != tc.want {
			t.Errorf("perSecond(%d, %s) = %v, want %v", tc.n, tc.d, got, tc.want)
		}
	}
}

func TestRetriesAndItemFailuresHaveTheirLabels(t *testing.T) {
	m := New("tenant", "items")
	if got, ok := value(gather(t, m.Registry()), Retries, LabelClass, "Infra"); !ok || got != 0 {
		t.Fatalf("the Infra retries series is %v (present: %v), want 0 before any retry", got, ok)
	}
	m.Retry(etlv1.ErrorInfra)
	m.Retry(etlv1.ErrorInfra)
	m.ElasticsearchItemFailures(429, 3)
	m.ElasticsearchItemFailures(400, 1)
	m.ElasticsearchItemFailures(429, 2)
	m.ElasticsearchItemFailures(409, 0)
	m.Python(1500 * time.Millisecond)
	f := gather(t, m.Registry())
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{Retries, []string{LabelClass, "Infra"}, 2},
		{ElasticsearchBulkItemFailures, []string{LabelStatus, "429"}, 5},
		{ElasticsearchBulkItemFailures, []string{LabelStatus, "400"}, 1},
		{PythonSeconds, nil, 1.5},
	} {
		if got, _ := value(f, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if _, ok := value(f, ElasticsearchBulkItemFailures, LabelStatus, "409"); ok {
		t.Errorf("no failure made a 409 series")
	}
}

// TestNilMetricsRecordNothing: the executor calls a nil *Metrics when metrics are off.
func TestNilMetricsRecordNothing(_ *testing.T) {
	var m *Metrics
	recordAll(m)
}

// TestServeServesUntilShutdown: /metrics answers with the pipeline's labels, other paths do
// not exist, and after Shutdown the port is closed.
func TestServeServesUntilShutdown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := New("tenant", "items")
	recordAll(m)
	srv := m.Serve(l)
	base := "http://" + l.Addr().String()

	code, body := get(t, base+Path)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", Path, code, body)
	}
	for _, want := range []string{
		`sluice_runner_rows_read_total{name="items",namespace="tenant"} 10`,
		`sluice_runner_batch_duration_seconds_count{name="items",namespace="tenant",stage="read"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the scrape lacks %q:\n%s", want, body)
		}
	}
	if code, _ := get(t, base+"/"); code != http.StatusNotFound {
		t.Errorf("GET /: %d, want 404", code)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if res, err := http.Get(base + Path); err == nil {
		_ = res.Body.Close()
		t.Fatalf("a scrape after Shutdown answered %d", res.StatusCode)
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer func() { _ = res.Body.Close() }()
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(body)
}
