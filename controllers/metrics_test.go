package controllers

import (
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

func TestPipelineMetrics(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	mt := func(d time.Duration) *metav1.Time { v := metav1.NewTime(now.Add(-d)); return &v }
	running := newPipeline("team-a", "orders", legacySpec())
	running.Status = etlv1.ETLPipelineStatus{
		Phase:             etlv1.PhaseRunning,
		Run:               &etlv1.RunStatus{ID: "r2", StartTime: mt(90 * time.Second), RowsRead: 5, RowsWritten: 5, RowsRejected: 1, Batches: 1},
		Totals:            &etlv1.PipelineTotals{RowsRead: 100, RowsWritten: 98, RowsDeleted: 2, RowsRejected: 3, Batches: 4, RunsSucceeded: 1, RunsFailed: 1, CountedRunID: "r1", LastSuccessTime: mt(time.Hour)},
		UnresolvedRejects: 3,
		// The cursor is 2 minutes behind the clock.
		Checkpoint:          &etlv1.CheckpointStatus{Values: []string{"2026-12-02 11:58:00Z", "7"}, Time: mt(10 * time.Second)},
		ConsecutiveFailures: 1,
	}
	// Ended and counted already: the run is not added twice; a numeric cursor has no freshness.
	ended := newPipeline("team-b", "ids", legacySpec())
	ended.Status = etlv1.ETLPipelineStatus{
		Phase:      etlv1.PhaseIdle,
		Run:        &etlv1.RunStatus{ID: "r9", StartTime: mt(time.Hour), CompletionTime: mt(50 * time.Minute), RowsRead: 7, RowsWritten: 7, Batches: 1},
		Totals:     &etlv1.PipelineTotals{RowsRead: 7, RowsWritten: 7, Batches: 1, RunsSucceeded: 1, CountedRunID: "r9", LastSuccessTime: mt(50 * time.Minute)},
		Checkpoint: &etlv1.CheckpointStatus{Values: []string{"12345", "7"}},
		// Left from when it was a CDC pipeline: an Incremental one has no sluice_cdc_* series.
		Replication: &etlv1.ReplicationStatus{Slot: "sluice_old", RetainedWALBytes: 1 << 30, LagMilliseconds: 10},
	}
	// A CDC pipeline streaming, 1.5 GiB of WAL held, 2.5 s behind.
	cdc := newPipeline("team-c", "orders-cdc", cdcSpec())
	cdc.Status = etlv1.ETLPipelineStatus{
		Phase: etlv1.PhaseRunning,
		Run:   &etlv1.RunStatus{ID: "c1", StartTime: mt(time.Hour)},
		Replication: &etlv1.ReplicationStatus{Slot: "sluice_0123456789abcdef", Publication: "sluice_0123456789abcdef", Phase: etlv1.ReplicationStreaming,
			ConfirmedLSN: "0/16B3748", RetainedWALBytes: 3 << 29, WALStatus: "extended", LagMilliseconds: 2500, ObservedTime: mt(5 * time.Second)},
	}
	// A CDC pipeline whose first run has not reported yet has no sluice_cdc_* series.
	fresh := newPipeline("team-c", "new-cdc", cdcSpec())
	fresh.Status = etlv1.ETLPipelineStatus{Phase: etlv1.PhaseRunRequested}
	scheme := runtime.NewScheme()
	if err := etlv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c := &PipelineCollector{Reader: fake.NewClientBuilder().WithScheme(scheme).WithObjects(running, ended, cdc, fresh).Build(), Now: func() time.Time { return now }}
	got := gather(t, c)
	for series, want := range map[string]float64{
		`sluice_pipeline_rows_written_total{name="ids",namespace="team-b"}`:                 7,
		`sluice_pipeline_rows_written_total{name="orders",namespace="team-a"}`:              103,
		`sluice_pipeline_rows_read_total{name="orders",namespace="team-a"}`:                 105,
		`sluice_pipeline_batches_total{name="orders",namespace="team-a"}`:                   5,
		`sluice_pipeline_rows_rejected_total{name="orders",namespace="team-a"}`:             4,
		`sluice_pipeline_unresolved_rejects{name="orders",namespace="team-a"}`:              3,
		`sluice_pipeline_rows_rejected_total{name="ids",namespace="team-b"}`:                0,
		`sluice_pipeline_freshness_seconds{name="orders",namespace="team-a"}`:               120,
		`sluice_pipeline_run_seconds{name="ids",namespace="team-b"}`:                        0,
		`sluice_pipeline_run_seconds{name="orders",namespace="team-a"}`:                     90,
		`sluice_pipeline_last_progress_timestamp_seconds{name="orders",namespace="team-a"}`: float64(now.Add(-10 * time.Second).Unix()),
		`sluice_pipeline_last_success_timestamp_seconds{name="ids",namespace="team-b"}`:     float64(now.Add(-50 * time.Minute).Unix()),
		`sluice_pipeline_runs_total{name="ids",namespace="team-b",outcome="succeeded"}`:     1,
		`sluice_pipeline_runs_total{name="orders",namespace="team-a",outcome="failed"}`:     1,
		`sluice_pipeline_runs_total{name="orders",namespace="team-a",outcome="paused"}`:     0,
		`sluice_pipeline_consecutive_failures{name="orders",namespace="team-a"}`:            1,
		`sluice_pipeline_phase{name="orders",namespace="team-a",phase="Running"}`:           1,
		`sluice_pipeline_phase{name="orders",namespace="team-a",phase="Idle"}`:              0,
		`sluice_pipeline_phase{name="ids",namespace="team-b",phase="Idle"}`:                 1,
		`sluice_cdc_slot_retained_bytes{name="orders-cdc",namespace="team-c"}`:              3 << 29,
		`sluice_cdc_lag_seconds{name="orders-cdc",namespace="team-c"}`:                      2.5,
	} {
		if v, ok := got[series]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", series, v, ok, want)
		}
	}
	for _, absent := range []string{
		`sluice_pipeline_freshness_seconds{name="ids",namespace="team-b"}`,
		`sluice_pipeline_last_progress_timestamp_seconds{name="ids",namespace="team-b"}`,
		`sluice_cdc_slot_retained_bytes{name="orders",namespace="team-a"}`,
		`sluice_cdc_lag_seconds{name="ids",namespace="team-b"}`,
		`sluice_cdc_slot_retained_bytes{name="ids",namespace="team-b"}`,
		`sluice_cdc_slot_retained_bytes{name="new-cdc",namespace="team-c"}`,
		`sluice_cdc_lag_seconds{name="new-cdc",namespace="team-c"}`,
	} {
		if _, ok := got[absent]; ok {
			t.Errorf("%s is exported", absent)
		}
	}
	// Each: the phases, 5 counters, 3 outcomes, failures, unresolved rejects, run seconds;
	// orders and ids also last success, orders freshness and last progress; orders-cdc its
	// two sluice_cdc_* gauges.
	if n := len(got); n != 4*(len(phases)+11)+2+2+2 {
		t.Errorf("%d series", n)
	}
	names := MetricNames()
	if len(names) != len(allDescs) || names[0] != "sluice_pipeline_phase" || names[1] != "sluice_pipeline_rows_read_total" {
		t.Errorf("MetricNames = %v", names)
	}
}

// gather collects c into series written as name{label="value",...}, labels sorted.
func gather(t *testing.T, c prometheus.Collector) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+`="`+l.GetValue()+`"`)
			}
			sort.Strings(labels)
			out[f.GetName()+"{"+strings.Join(labels, ",")+"}"] = value(m)
		}
	}
	return out
}

func value(m *dto.Metric) float64 {
	switch {
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	}
	return -1
}
