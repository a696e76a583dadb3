package controllers

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

// The manager's metrics, one series set per pipeline (labels namespace and name; phase and
// outcome are bounded enums): computed at scrape time from the pipelines in the manager's
// cache, so they are what the status says, and nothing is kept in memory that a restart
// would lose. Counters are status.totals (every ended run, counted once) plus the run in
// flight; they only grow. A CDC pipeline's sluice_cdc_* gauges are status.replication, as its
// runner last reported it.

var (
	descPhase = pipelineDesc("sluice_pipeline_phase",
		"The pipeline's phase, as a state set: 1 for the current phase, 0 for the others.", "phase")
	descRowsRead = pipelineDesc("sluice_pipeline_rows_read_total",
		"Rows read from the source, over every run.")
	descRowsWritten = pipelineDesc("sluice_pipeline_rows_written_total",
		"Rows written to the sink, over every run.")
	descRowsDeleted = pipelineDesc("sluice_pipeline_rows_deleted_total",
		"Keys deleted from the sink, over every run.")
	descRowsRejected = pipelineDesc("sluice_pipeline_rows_rejected_total",
		"Reader rows put in etl.etl_rejects instead of the sink (spec.errors), over every run.")
	descUnresolvedRejects = pipelineDesc("sluice_pipeline_unresolved_rejects",
		"The pipeline's rows in etl.etl_rejects when its last run ended.")
	descBatches = pipelineDesc("sluice_pipeline_batches_total",
		"Batches committed, over every run.")
	descRuns = pipelineDesc("sluice_pipeline_runs_total",
		"Runs that ended, by outcome (succeeded, failed, paused).", "outcome")
	descLastSuccess = pipelineDesc("sluice_pipeline_last_success_timestamp_seconds",
		"When the last run that completed ended (unix seconds).")
	descFailures = pipelineDesc("sluice_pipeline_consecutive_failures",
		"Runs that failed in a row since the last one that completed.")
	descFreshness = pipelineDesc("sluice_pipeline_freshness_seconds",
		"How far the committed checkpoint's cursor lags behind the clock, for a timestamp cursor.")
	descRunSeconds = pipelineDesc("sluice_pipeline_run_seconds",
		"How long the run in flight has been going (0 when none is).")
	descLastProgress = pipelineDesc("sluice_pipeline_last_progress_timestamp_seconds",
		"When the run in flight last committed a batch (unix seconds).")
	descCDCRetained = pipelineDesc("sluice_cdc_slot_retained_bytes",
		"WAL the CDC pipeline's replication slot holds back in the source, at its runner's last report (status.replication.retainedWALBytes).")
	descCDCLag = pipelineDesc("sluice_cdc_lag_seconds",
		"How far the CDC pipeline's sink was behind the source's commits at its runner's last report (status.replication.lagMilliseconds).")

	phases = []etlv1.Phase{etlv1.PhaseIdle, etlv1.PhaseRunRequested, etlv1.PhaseRunning, etlv1.PhasePauseRequested,
		etlv1.PhasePaused, etlv1.PhaseFailed}
)

// The metrics endpoint authenticates and authorizes its callers through the API server.
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

// allDescs and metricNames are every pipeline metric, as pipelineDesc made them.
var (
	allDescs    []*prometheus.Desc
	metricNames []string
)

// pipelineDesc describes a per-pipeline metric (labels namespace, name and extra) and records
// it for Describe and MetricNames.
func pipelineDesc(name, help string, extra ...string) *prometheus.Desc {
	d := prometheus.NewDesc(name, help, append([]string{"namespace", "name"}, extra...), nil)
	allDescs = append(allDescs, d)
	metricNames = append(metricNames, name)
	return d
}

// MetricNames lists the names of the manager's metrics.
func MetricNames() []string { return slices.Clone(metricNames) }

// PipelineCollector collects the pipelines' metrics from a (cached) reader.
type PipelineCollector struct {
	Reader client.Reader
	Now    func() time.Time
}

// Describe implements prometheus.Collector.
func (c *PipelineCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *PipelineCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	list := &etlv1.ETLPipelineList{}
	if err := c.Reader.List(ctx, list); err != nil {
		ch <- prometheus.NewInvalidMetric(descPhase, err)
		return
	}
	now := time.Now()
	if c.Now != nil {
		now = c.Now()
	}
	for i := range list.Items {
		for _, m := range pipelineMetrics(&list.Items[i], now) {
			ch <- m
		}
	}
}

// pipelineMetrics are the series of one pipeline at now. Pure.
func pipelineMetrics(p *etlv1.ETLPipeline, now time.Time) []prometheus.Metric {
	st := &p.Status
	ns, name := p.Namespace, p.Name
	var out []prometheus.Metric
	add := func(d *prometheus.Desc, t prometheus.ValueType, v float64, extra ...string) {
		out = append(out, prometheus.MustNewConstMetric(d, t, v, append([]string{ns, name}, extra...)...))
	}
	for _, ph := range phases {
		v := 0.0
		if st.Phase == ph {
			v = 1
		}
		add(descPhase, prometheus.GaugeValue, v, string(ph))
	}
	tot := etlv1.PipelineTotals{}
	if st.Totals != nil {
		tot = *st.Totals
	}
	read, written, deleted, batches := tot.RowsRead, tot.RowsWritten, tot.RowsDeleted, tot.Batches
	rejected := tot.RowsRejected
	if r := st.Run; r != nil && r.ID != tot.CountedRunID {
		read, written, deleted, batches = read+r.RowsRead, written+r.RowsWritten, deleted+r.RowsDeleted, batches+r.Batches
		rejected += r.RowsRejected
	}
	add(descRowsRejected, prometheus.CounterValue, float64(rejected))
	add(descUnresolvedRejects, prometheus.GaugeValue, float64(st.UnresolvedRejects))
	add(descRowsRead, prometheus.CounterValue, float64(read))
	add(descRowsWritten, prometheus.CounterValue, float64(written))
	add(descRowsDeleted, prometheus.CounterValue, float64(deleted))
	add(descBatches, prometheus.CounterValue, float64(batches))
	add(descRuns, prometheus.CounterValue, float64(tot.RunsSucceeded), "succeeded")
	add(descRuns, prometheus.CounterValue, float64(tot.RunsFailed), "failed")
	add(descRuns, prometheus.CounterValue, float64(tot.RunsPaused), "paused")
	if tot.LastSuccessTime != nil {
		add(descLastSuccess, prometheus.GaugeValue, float64(tot.LastSuccessTime.Unix()))
	}
	add(descFailures, prometheus.GaugeValue, float64(st.ConsecutiveFailures))
	if at, ok := cursorTime(p); ok {
		add(descFreshness, prometheus.GaugeValue, max(now.Sub(at).Seconds(), 0))
	}
	running := 0.0
	if r := st.Run; r != nil && isActive(st.Phase) && r.StartTime != nil {
		running = max(now.Sub(r.StartTime.Time).Seconds(), 0)
		if cp := st.Checkpoint; cp != nil && cp.Time != nil {
			add(descLastProgress, prometheus.GaugeValue, float64(cp.Time.Unix()))
		}
	}
	add(descRunSeconds, prometheus.GaugeValue, running)
	if rep := st.Replication; rep != nil && p.Spec.Mode == etlv1.ModeCDC {
		add(descCDCRetained, prometheus.GaugeValue, float64(rep.RetainedWALBytes))
		add(descCDCLag, prometheus.GaugeValue, float64(rep.LagMilliseconds)/1000)
	}
	return out
}

// cursorLayouts are the forms a timestamp cursor's checkpoint value takes (Postgres' text
// output of timestamptz and timestamp, and RFC 3339).
var cursorLayouts = []string{time.RFC3339Nano, "2006-01-02 15:04:05.999999Z07", "2006-01-02 15:04:05.999999Z07:00", "2006-01-02 15:04:05.999999"}

// cursorTime reads the checkpoint's cursor value as a time, when the pipeline has a cursor
// and the value is one (a redacted or numeric cursor is not).
func cursorTime(p *etlv1.ETLPipeline) (time.Time, bool) {
	cp := p.Status.Checkpoint
	if p.Spec.Source.Cursor.Column == "" || cp == nil || len(cp.Values) == 0 {
		return time.Time{}, false
	}
	for _, layout := range cursorLayouts {
		if t, err := time.Parse(layout, cp.Values[0]); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

// registerMetrics registers the collector on controller-runtime's registry, which the
// manager's metrics endpoint serves. A second registration (tests start several managers)
// keeps the first.
func registerMetrics(c *PipelineCollector) error {
	err := metrics.Registry.Register(c)
	var already prometheus.AlreadyRegisteredError
	if errors.As(err, &already) {
		return nil
	}
	return err
}
