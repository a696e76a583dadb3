// Package metrics is the one place of the data plane's Prometheus metrics: what `sluice
// runner` exports about its run at /metrics while it runs (docs/metrics.md, section Runner).
//
// A Metrics has a registry of its own, never the process-wide default one, and every series
// carries the pipeline's namespace and name as constant labels: a runner serves one pipeline,
// so they are bounded. The executor records per batch, never per row, so that metrics cost
// nothing measurable on the hot path. A nil *Metrics records nothing: every method may be
// called on it, which keeps the executor free of conditions.
//
// The counters count what this runner process committed. A pod that replaces a crashed one
// of the same run starts from zero (the run's totals live in its status and in etl_state),
// and a batch replayed after a retry is not counted twice.
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

// The metric names, a contract: dashboards and alerts query them.
const (
	BatchDuration                 = "sluice_runner_batch_duration_seconds"
	RowsRead                      = "sluice_runner_rows_read_total"
	RowsWritten                   = "sluice_runner_rows_written_total"
	RowsDeleted                   = "sluice_runner_rows_deleted_total"
	Batches                       = "sluice_runner_batches_total"
	RowsPerSecond                 = "sluice_runner_rows_per_second"
	BytesRead                     = "sluice_runner_bytes_read_total"
	Retries                       = "sluice_runner_retries_total"
	PythonSeconds                 = "sluice_runner_python_seconds_total"
	ElasticsearchBulkItemFailures = "sluice_runner_elasticsearch_bulk_item_failures_total"
	RunStartTimestamp             = "sluice_runner_run_start_timestamp_seconds"
)

// Names returns the name of every runner metric.
func Names() []string {
	return []string{BatchDuration, RowsRead, RowsWritten, RowsDeleted, Batches, RowsPerSecond, BytesRead,
		Retries, PythonSeconds, ElasticsearchBulkItemFailures, RunStartTimestamp}
}

// The labels: constant ones on every series, then those of single metrics.
const (
	LabelNamespace = "namespace"
	LabelName      = "name"
	// LabelStage is BatchDuration's: one of the Stage constants.
	LabelStage = "stage"
	// LabelClass is Retries': the failure class of the retried error (etlv1.ErrorInfra).
	LabelClass = "class"
	// LabelStatus is ElasticsearchBulkItemFailures': the item's HTTP status ("429").
	LabelStatus = "status"
)

// The stages of a batch, the values of LabelStage.
const (
	StageRead       = "read"
	StageTransform  = "transform"
	StageWrite      = "write"
	StageCheckpoint = "checkpoint"
)

// stages are the Stage constants in the order of Batch's durations (Batch.durations).
var stages = [...]string{StageRead, StageTransform, StageWrite, StageCheckpoint}

// DurationBuckets are BatchDuration's buckets: 1 ms (an identity transform of a small batch,
// a checkpoint on a local database) to 60 s (a slow source query, an overloaded cluster).
var DurationBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// Totals are the executor's committed counters of the run.
type Totals struct {
	RowsRead, RowsWritten, RowsDeleted, Batches int64
}

// Batch is what one committed batch took. A zero duration is a stage the batch did not go
// through (a measured stage takes longer than that): an identity transform, the checkpoint
// of a sink that commits it in the write's transaction.
type Batch struct {
	Read, Transform, Write, Checkpoint time.Duration
	// Bytes is the batch's size as the source sent it (0 when unknown).
	Bytes int64
}

func (b Batch) durations() [len(stages)]time.Duration {
	return [...]time.Duration{b.Read, b.Transform, b.Write, b.Checkpoint}
}

// Metrics are one run's metrics. The executor's goroutine records them; scrapes read the
// registry concurrently, which the collectors allow.
type Metrics struct {
	reg   *prometheus.Registry
	start time.Time

	stages *prometheus.HistogramVec
	// observers are the stages' series, made on their first observation so that a stage
	// that never runs has no series rather than an empty one.
	observers [len(stages)]prometheus.Observer

	rowsRead, rowsWritten, rowsDeleted, batches, bytesRead, python prometheus.Counter
	rowsPerSecond                                                  prometheus.Gauge
	retries, itemFailures                                          *prometheus.CounterVec

	// counted are the executor's totals the counters have reached; based is set once the
	// first session gave the totals this process started from (Resumed).
	counted Totals
	based   bool
	// readHere is the rows this process read, for RowsPerSecond.
	readHere int64
}

// New returns the metrics of a run of the pipeline namespace/name that starts now.
func New(namespace, name string) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), start: time.Now()}
	f := factory{reg: m.reg, labels: prometheus.Labels{LabelNamespace: namespace, LabelName: name}}
	m.stages = f.histogramVec(BatchDuration, "Time a committed batch spent in each stage: read (its page query), "+
		"transform, write (handing it to the sink and waiting for it), checkpoint (its commit, when not in the write's transaction).",
		LabelStage)
	m.rowsRead = f.counter(RowsRead, "Source rows of the committed batches.")
	m.rowsWritten = f.counter(RowsWritten, "Rows the committed batches wrote to the sink, after transforms.")
	m.rowsDeleted = f.counter(RowsDeleted, "Keys the committed batches deleted from the sink.")
	m.batches = f.counter(Batches, "Committed batches.")
	m.bytesRead = f.counter(BytesRead, "Size of the committed batches as the source sent them: values and their length words.")
	m.python = f.counter(PythonSeconds, "Wall time spent in the python transform stage, batches that failed included.")
	m.rowsPerSecond = f.gauge(RowsPerSecond, "Rows read per second since the run started.")
	m.retries = f.counterVec(Retries, "Batches retried from the checkpoint, by the class of the error.", LabelClass)
	// Only infrastructure errors are retried: its series exists from the start, so that the
	// first retry shows in increase() and rate().
	m.retries.WithLabelValues(string(etlv1.ErrorInfra))
	m.itemFailures = f.counterVec(ElasticsearchBulkItemFailures,
		"Bulk items Elasticsearch answered with a failure, by HTTP status, resent ones included.", LabelStatus)
	f.gauge(RunStartTimestamp, "Time the run started, in seconds since the Unix epoch.").Set(float64(m.start.UnixNano()) / 1e9)
	return m
}

// Registry returns the registry of the metrics, for a scrape or a test.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	// A collector's error leaves the others' series in the answer: a partial scrape is
	// better than none.
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// Resumed takes the executor's totals after a session opened. The first session's are the
// run's totals before this process (a crashed pod's batches, 0 for a new run): the counters
// start above them. A later session's may exceed what was counted by batches that committed
// while the failed session never saw them confirmed; unconfirmed is what those took (their
// write without the wait for the confirmation).
func (m *Metrics) Resumed(t Totals, unconfirmed []Batch) {
	if m == nil {
		return
	}
	if !m.based {
		m.counted, m.based = t, true
		return
	}
	for _, b := range unconfirmed[:min(len(unconfirmed), int(max(t.Batches-m.counted.Batches, 0)))] {
		m.observe(b)
	}
	m.count(t)
}

// Committed records a committed batch and the executor's totals after it. The totals, not
// the batch, move the counters: after a retry the executor replays batches from the
// committed state and may count again what is already counted (CheckpointAtEnd).
func (m *Metrics) Committed(t Totals, b Batch) {
	if m == nil {
		return
	}
	if t.Batches <= m.counted.Batches {
		return // a replay
	}
	m.observe(b)
	m.count(t)
}

// observe records what a batch took and its size.
func (m *Metrics) observe(b Batch) {
	for i, d := range b.durations() {
		if d > 0 {
			m.observer(i).Observe(d.Seconds())
		}
	}
	if b.Bytes > 0 {
		m.bytesRead.Add(float64(b.Bytes))
	}
}

func (m *Metrics) observer(i int) prometheus.Observer {
	if m.observers[i] == nil {
		m.observers[i] = m.stages.WithLabelValues(stages[i])
	}
	return m.observers[i]
}

// count moves the counters up to t.
func (m *Metrics) count(t Totals) {
	read := m.counted.RowsRead
	m.counted.RowsRead = advance(m.rowsRead, m.counted.RowsRead, t.RowsRead)
	m.counted.RowsWritten = advance(m.rowsWritten, m.counted.RowsWritten, t.RowsWritten)
	m.counted.RowsDeleted = advance(m.rowsDeleted, m.counted.RowsDeleted, t.RowsDeleted)
	m.counted.Batches = advance(m.batches, m.counted.Batches, t.Batches)
	m.readHere += m.counted.RowsRead - read
	m.rowsPerSecond.Set(perSecond(m.readHere, time.Since(m.start)))
}

// advance adds to c what total has above counted, and returns the new counted value.
func advance(c prometheus.Counter, counted, total int64) int64 {
	if total <= counted {
		return counted
	}
	c.Add(float64(total - counted))
	return total
}

// perSecond is n per second over d (0 before any time passed).
func perSecond(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// Retry records a batch retried after an error of class.
func (m *Metrics) Retry(class etlv1.ErrorClass) {
	if m == nil {
		return
	}
	m.retries.WithLabelValues(string(class)).Inc()
}

// Python records time spent in the python transform stage.
func (m *Metrics) Python(d time.Duration) {
	if m == nil || d <= 0 {
		return
	}
	m.python.Add(d.Seconds())
}

// ElasticsearchItemFailures records n bulk items that failed with HTTP status; it has the
// signature of the Elasticsearch sink's hook (elasticsearch.Options.OnItemFailures).
func (m *Metrics) ElasticsearchItemFailures(status, n int) {
	if m == nil || n <= 0 {
		return
	}
	m.itemFailures.WithLabelValues(strconv.Itoa(status)).Add(float64(n))
}

// factory makes and registers the collectors of one registry with the constant labels.
type factory struct {
	reg    *prometheus.Registry
	labels prometheus.Labels
}

func (f factory) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: f.labels})
	f.reg.MustRegister(c)
	return c
}

func (f factory) counterVec(name, help, label string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: f.labels}, []string{label})
	f.reg.MustRegister(c)
	return c
}

func (f factory) gauge(name, help string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help, ConstLabels: f.labels})
	f.reg.MustRegister(g)
	return g
}

func (f factory) histogramVec(name, help, label string) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, ConstLabels: f.labels,
		Buckets: DurationBuckets}, []string{label})
	f.reg.MustRegister(h)
	return h
}
