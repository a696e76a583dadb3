package main

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

// kubectlNow is the clock of the pure tests.
var kubectlNow = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

func ago(d time.Duration) *metav1.Time { return &metav1.Time{Time: kubectlNow.Add(-d)} }

func TestKubectlAgesReadLikeKubectls(t *testing.T) {
	for _, tc := range []struct {
		name string
		got  string
		want string
	}{
		{"no time", kubectlAge(nil, kubectlNow), "<none>"},
		{"seconds", kubectlAge(ago(42*time.Second), kubectlNow), "42s"},
		{"minutes and seconds", kubectlAge(ago(3*time.Minute+12*time.Second), kubectlNow), "3m12s"},
		{"hours", kubectlAge(ago(26*time.Hour), kubectlNow), "26h"},
		{"days", kubectlAge(ago(72*time.Hour), kubectlNow), "3d"},
		{"ago", kubectlAgo(ago(5*time.Minute), kubectlNow), "5m ago"},
		{"ago of nothing", kubectlAgo(nil, kubectlNow), "<none>"},
		{"until", kubectlUntil(ago(-4*time.Minute), kubectlNow), "in 4m"},
		{"until a past tick", kubectlUntil(ago(time.Second), kubectlNow), "due"},
		{"until nothing", kubectlUntil(nil, kubectlNow), "<none>"},
		{"timestamp", kubectlTimestamp(ago(90*time.Second), kubectlNow), "2025-06-01T11:58:30Z (90s ago)"},
		{"duration", kubectlDuration(3*time.Minute + 4400*time.Millisecond), "3m4s"},
		{"negative duration", kubectlDuration(-time.Second), "0s"},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, tc.got, tc.want)
		}
	}
}

func TestKubectlFreshnessIsTheCheckpointsAgeElseTheLastSuccess(t *testing.T) {
	for _, tc := range []struct {
		name string
		st   etlv1.ETLPipelineStatus
		want string
	}{
		{"never ran", etlv1.ETLPipelineStatus{}, "<none>"},
		{"checkpoint", etlv1.ETLPipelineStatus{
			Checkpoint: &etlv1.CheckpointStatus{Time: ago(2 * time.Minute)},
			Totals:     &etlv1.PipelineTotals{LastSuccessTime: ago(time.Hour)},
		}, "2m"},
		{"a Full run resets the checkpoint: the last success", etlv1.ETLPipelineStatus{
			Checkpoint: &etlv1.CheckpointStatus{},
			Totals:     &etlv1.PipelineTotals{LastSuccessTime: ago(time.Hour)},
		}, "60m"},
		{"no totals: the last run that completed", etlv1.ETLPipelineStatus{History: []etlv1.RunSummary{
			{ID: "b", Outcome: etlv1.PhaseFailed, CompletionTime: ago(time.Minute)},
			{ID: "a", Outcome: etlv1.PhaseIdle, CompletionTime: ago(3 * time.Hour)},
		}}, "3h"},
	} {
		p := &etlv1.ETLPipeline{Status: tc.st}
		if got := kubectlFreshness(p, kubectlNow); got != tc.want {
			t.Errorf("%s: freshness %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestKubectlLastRunIsTheNewestEndedRun(t *testing.T) {
	for _, tc := range []struct {
		name string
		st   etlv1.ETLPipelineStatus
		want string
	}{
		{"never ran", etlv1.ETLPipelineStatus{}, "<none>"},
		{"history: a completed run succeeded", etlv1.ETLPipelineStatus{Phase: etlv1.PhaseRunning,
			Run: &etlv1.RunStatus{ID: "c", StartTime: ago(time.Second)},
			History: []etlv1.RunSummary{
				{ID: "b", Outcome: etlv1.PhaseIdle, CompletionTime: ago(5 * time.Minute)},
				{ID: "a", Outcome: etlv1.PhaseFailed, CompletionTime: ago(time.Hour)},
			}}, "Succeeded (5m ago)"},
		{"history: failed", etlv1.ETLPipelineStatus{History: []etlv1.RunSummary{{Outcome: etlv1.PhaseFailed, CompletionTime: ago(2 * time.Hour)}}}, "Failed (120m ago)"},
		{"history: paused", etlv1.ETLPipelineStatus{History: []etlv1.RunSummary{{Outcome: etlv1.PhasePaused, CompletionTime: ago(time.Minute)}}}, "Paused (60s ago)"},
		{"no history: the ended run", etlv1.ETLPipelineStatus{Phase: etlv1.PhaseFailed,
			Run: &etlv1.RunStatus{ID: "a", CompletionTime: ago(10 * time.Minute)}}, "Failed (10m ago)"},
		{"no history, the first run in flight", etlv1.ETLPipelineStatus{Phase: etlv1.PhaseRunning,
			Run: &etlv1.RunStatus{ID: "a", StartTime: ago(time.Second)}}, "<none>"},
	} {
		p := &etlv1.ETLPipeline{Status: tc.st}
		if got := kubectlLastRun(p, kubectlNow); got != tc.want {
			t.Errorf("%s: last run %q, want %q", tc.name, got, tc.want)
		}
	}
}

func pipelineFixture(ns, name string) etlv1.ETLPipeline {
	return etlv1.ETLPipeline{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: etlv1.ETLPipelineSpec{
			Mode: etlv1.ModeIncremental,
			Source: etlv1.SourceSpec{Connection: "warehouse", Query: "SELECT id, updated_at\n  FROM public.orders",
				Cursor: etlv1.CursorSpec{Column: "updated_at", KeyColumns: []string{"id"}}},
			Target:    etlv1.TargetSpec{Name: "analytics.orders"},
			BatchSize: 5000,
		},
	}
}

func TestKubectlPipelineTableHasAColumnPerQuestion(t *testing.T) {
	idle := pipelineFixture("team-a", "orders")
	idle.Spec.Schedule = "*/15 * * * *"
	idle.Status = etlv1.ETLPipelineStatus{
		Phase:            etlv1.PhaseIdle,
		Run:              &etlv1.RunStatus{ID: "r2", RowsWritten: 100000, CompletionTime: ago(5 * time.Minute)},
		Checkpoint:       &etlv1.CheckpointStatus{Values: []string{"2025-06-01T11:00:00Z", "100000"}, Time: ago(5 * time.Minute)},
		History:          []etlv1.RunSummary{{ID: "r2", Outcome: etlv1.PhaseIdle, CompletionTime: ago(5 * time.Minute)}},
		NextScheduledRun: ago(-10 * time.Minute),
	}
	fresh := pipelineFixture("team-b", "customers")
	fresh.Spec.DesiredState = etlv1.DesiredPaused

	header, rows := kubectlPipelineTable([]etlv1.ETLPipeline{idle, fresh}, false, kubectlNow)
	if want := []string{"NAME", "PHASE", "DESIRED", "LAST RUN", "ROWS", "FRESHNESS", "NEXT RUN"}; !slices.Equal(header, want) {
		t.Errorf("header %q, want %q", header, want)
	}
	want := [][]string{
		{"orders", "Idle", "Running", "Succeeded (5m ago)", "100000", "5m", "in 10m"},
		{"customers", "<none>", "Paused", "<none>", "<none>", "<none>", "<none>"},
	}
	for i := range want {
		if !slices.Equal(rows[i], want[i]) {
			t.Errorf("row %d: %q, want %q", i, rows[i], want[i])
		}
	}

	header, rows = kubectlPipelineTable([]etlv1.ETLPipeline{idle}, true, kubectlNow)
	if header[0] != "NAMESPACE" || rows[0][0] != "team-a" || rows[0][1] != "orders" {
		t.Errorf("-A: header %q, row %q; want NAMESPACE first", header, rows[0])
	}

	var buf bytes.Buffer
	if err := kubectlWriteTable(&buf, header, rows); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(buf.String(), "\n"), "\n")
	if len(lines) != 2 || strings.Index(lines[0], "PHASE") != strings.Index(lines[1], "Idle") {
		t.Errorf("columns are not aligned:\n%s", buf.String())
	}
}

func TestKubectlReportAnswersWhatRanAndWhereItStands(t *testing.T) {
	p := pipelineFixture("team-a", "orders")
	p.Labels = map[string]string{"argocd.argoproj.io/instance": "analytics"}
	p.Spec.Schedule = "@hourly"
	p.Spec.Target.Action = ""
	p.Status = etlv1.ETLPipelineStatus{
		Phase: etlv1.PhaseFailed,
		Conditions: []metav1.Condition{
			{Type: "Ready", Status: metav1.ConditionFalse, Reason: "RunFailed", Message: "column \"x\" does not exist", LastTransitionTime: *ago(time.Minute)},
			{Type: "TargetAllowed", Status: metav1.ConditionTrue, Reason: "TargetAllowed", LastTransitionTime: *ago(time.Hour)},
		},
		Run: &etlv1.RunStatus{ID: "r3", JobName: "team-a-orders-r3", Trigger: etlv1.TriggerAnnotation,
			StartTime: ago(2 * time.Minute), CompletionTime: ago(time.Minute), RowsRead: 5000, RowsWritten: 4990, RowsDeleted: 10, Batches: 1,
			ErrorClass: etlv1.ErrorBusiness, Message: "column \"x\" does not exist"},
		Checkpoint:          &etlv1.CheckpointStatus{Values: []string{"2025-06-01T11:00:00Z", "5000"}, Time: ago(90 * time.Second)},
		NextScheduledRun:    ago(-30 * time.Minute),
		ConsecutiveFailures: 1,
		Totals:              &etlv1.PipelineTotals{RowsRead: 105000, RowsWritten: 104990, RowsDeleted: 10, Batches: 21, RunsSucceeded: 1, RunsFailed: 1, LastSuccessTime: ago(time.Hour)},
		History: []etlv1.RunSummary{
			{ID: "r3", Trigger: etlv1.TriggerAnnotation, Outcome: etlv1.PhaseFailed, StartTime: ago(2 * time.Minute), Duration: "60s", RowsRead: 5000, RowsWritten: 4990, RowsDeleted: 10, ErrorClass: etlv1.ErrorBusiness},
			{ID: "r1", Trigger: etlv1.TriggerCreated, Outcome: etlv1.PhaseIdle, StartTime: ago(61 * time.Minute), Duration: "1m0s", RowsRead: 100000, RowsWritten: 100000},
		},
	}
	logs := &kubectlReportLogs{Pod: "sluice-system/team-a-orders-r3-abcde", Lines: []string{`{"level":"ERROR","msg":"run failed"}`}}
	var buf bytes.Buffer
	if err := kubectlWriteReport(&buf, &p, logs, kubectlNow); err != nil {
		t.Fatal(err)
	}
	got := buf.String()
	// The sections in this order, each with what it is for.
	for _, want := range []string{
		"Name:           orders\n",
		"Namespace:      team-a\n",
		"Phase:          Failed\n",
		"Desired:        Running\n",
		`Argo CD:        tracked by Application "analytics" (label argocd.argoproj.io/instance)`,
		"\nSpec:\n",
		"  Mode:         Incremental\n",
		"  Source:       warehouse\n",
		"  Reader:       SELECT id, updated_at FROM public.orders\n",
		"  Cursor:       updated_at, keys id\n",
		"  Target:       analytics.orders\n",
		"  Batch size:   5000\n",
		"  Schedule:     @hourly (next run in 30m, 2025-06-01T12:30:00Z)\n",
		"\nConditions:\n",
		"  TYPE",
		"  Ready ", "False", "RunFailed", `column "x" does not exist`,
		"\nLast run:\n",
		"  ID:           r3\n",
		"  Trigger:      Annotation\n",
		"  Started:      2025-06-01T11:58:00Z (2m ago)\n",
		"  Duration:     1m0s\n",
		"  Rows:         read 5000, written 4990, deleted 10 in 1 batches\n",
		"  Job:          team-a-orders-r3\n",
		`  Error:        Business: column "x" does not exist`,
		"\nCheckpoint:\n",
		"  Values:       2025-06-01T11:00:00Z, 5000\n",
		"  Committed:    2025-06-01T11:58:30Z (90s ago)\n",
		"\nHistory:\n",
		"  RUN", "r3", "Failed", "r1", "Succeeded", "100000",
		"\nTotals:\n",
		"  Rows:         read 105000, written 104990, deleted 10 in 21 batches\n",
		"  Runs:         succeeded 1, failed 1, paused 0\n",
		"  Failing:      1 runs in a row\n",
		"\nRunner log (pod sluice-system/team-a-orders-r3-abcde, last 1 lines):\n",
		`  {"level":"ERROR","msg":"run failed"}`,
	} {
		i := strings.Index(got, want)
		if i < 0 {
			t.Fatalf("the report lacks %q (or has it too early):\n%s", want, buf.String())
		}
		got = got[i+len(want):]
	}

	// A run in flight is the current run; a missing log says why.
	p.Status.Phase = etlv1.PhaseRunning
	p.Status.Run.CompletionTime = nil
	buf.Reset()
	if err := kubectlWriteReport(&buf, &p, &kubectlReportLogs{Note: "runner Job team-a-orders-r3 not found in any namespace"}, kubectlNow); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"\nCurrent run:\n", "  Duration:     running for 2m0s\n", "Runner log:\n  (runner Job team-a-orders-r3 not found in any namespace)\n"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("the report of a running pipeline lacks %q:\n%s", want, buf.String())
		}
	}
}

func TestKubectlReportOfANewPipelineSaysNoneEverywhere(t *testing.T) {
	p := pipelineFixture("team-a", "orders")
	p.Spec.Tasks = []etlv1.Task{{Name: "read", SQL: "SELECT 1"}, {Name: "enrich", Python: "def transform(r): return r"}}
	p.Spec.Target = etlv1.TargetSpec{Name: "es:customers", Action: etlv1.ActionIndex, FullSync: etlv1.FullSyncMirror}
	var buf bytes.Buffer
	if err := kubectlWriteReport(&buf, &p, nil, kubectlNow); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Phase:          <none>\n",
		"  Reader:       tasks read (sql) -> enrich (python)\n",
		"  Target:       es:customers (action Index; fullSync Mirror)\n",
		"  Schedule:     <none>\n",
		"Conditions:\n  <none>\n",
		"Last run:\n  <none>\n",
		"Checkpoint:\n  <none> (the next run reads from the start)\n",
		"History:\n  <none>\n",
		"Totals:\n  <none>\n",
	} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("the report lacks %q:\n%s", want, buf.String())
		}
	}
	if strings.Contains(buf.String(), "Runner log") || strings.Contains(buf.String(), "Argo CD") {
		t.Errorf("the report has a log section without logs, or Argo CD without its marks:\n%s", buf.String())
	}
}

func TestKubectlReportOfACDCPipelineShowsItsSlot(t *testing.T) {
	p := pipelineFixture("team-a", "orders-cdc")
	p.Spec.Mode = etlv1.ModeCDC
	p.Spec.Source = etlv1.SourceSpec{Connection: "warehouse", Table: "orders", Columns: []string{"id", "total"},
		Cursor: etlv1.CursorSpec{KeyColumns: []string{"id"}}}
	p.Spec.Tasks = []etlv1.Task{{Name: "shape", Python: "def transform(r): return r"}}
	p.Status = etlv1.ETLPipelineStatus{
		Phase: etlv1.PhaseRunning,
		Run:   &etlv1.RunStatus{ID: "r1", StartTime: ago(time.Hour)},
		Replication: &etlv1.ReplicationStatus{Slot: "sluice_0123456789abcdef01234567", Publication: "sluice_0123456789abcdef01234567",
			Phase: etlv1.ReplicationStreaming, ConfirmedLSN: "0/16B3748", RetainedWALBytes: 3 << 29, WALStatus: "extended",
			LastSourceCommitTime: ago(3 * time.Second), LagMilliseconds: 2540, ObservedTime: ago(time.Second)},
	}
	var buf bytes.Buffer
	if err := kubectlWriteReport(&buf, &p, nil, kubectlNow); err != nil {
		t.Fatal(err)
	}
	got := buf.String()
	for _, want := range []string{
		"  Mode:         CDC\n",
		"  Reader:       table public.orders (columns id, total), then tasks shape (python)\n",
		"  Cursor:       keys id\n",
		"\nCheckpoint:\n",
		"\nReplication:\n",
		"  Slot:         sluice_0123456789abcdef01234567\n",
		"  Publication:  sluice_0123456789abcdef01234567\n",
		"  Phase:        Streaming\n",
		"  Confirmed:    0/16B3748\n",
		"  Retained WAL: 1.5 GiB\n",
		"  WAL status:   extended\n",
		"  Lag:          2.5s\n",
		"  Last commit:  2025-06-01T11:59:57Z (3s ago)\n",
		"  Observed:     2025-06-01T11:59:59Z (1s ago)\n",
		"\nHistory:\n",
	} {
		i := strings.Index(got, want)
		if i < 0 {
			t.Fatalf("the report lacks %q (or has it too early):\n%s", want, buf.String())
		}
		got = got[i+len(want):]
	}

	// Its first run, before the runner reported: the snapshot, nothing retained yet.
	p.Status.Replication = &etlv1.ReplicationStatus{Slot: "sluice_x", Publication: "sluice_x", Phase: etlv1.ReplicationSnapshot}
	buf.Reset()
	if err := kubectlWriteReport(&buf, &p, nil, kubectlNow); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"  Phase:        Snapshot\n", "  Confirmed:    <none>\n", "  Retained WAL: 0 B\n",
		"  Lag:          0s (caught up)\n", "  Last commit:  <none>\n"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("the report lacks %q:\n%s", want, buf.String())
		}
	}

	// Not a CDC pipeline, or one that never reported: no section.
	p.Status.Replication = nil
	buf.Reset()
	if err := kubectlWriteReport(&buf, &p, nil, kubectlNow); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), "Replication:") {
		t.Errorf("a report without status.replication has a Replication section:\n%s", buf.String())
	}
}

func TestKubectlBytesAndLagReadLikeAPerson(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 64 << 20: "64.0 MiB",
		3 << 29: "1.5 GiB", 5 << 40: "5.0 TiB", 1 << 62: "4.0 EiB",
	} {
		if got := kubectlBytes(n); got != want {
			t.Errorf("kubectlBytes(%d) = %q, want %q", n, got, want)
		}
	}
	for ms, want := range map[int64]string{0: "0s", 250: "250ms", 2540: "2.5s", 59_990: "1m0s", 95_400: "1m35s", 7_200_000: "2h0m0s"} {
		if got := kubectlLag(ms); got != want {
			t.Errorf("kubectlLag(%d) = %q, want %q", ms, got, want)
		}
	}
}

// The table of pipelines has the same columns for a CDC pipeline.
func TestKubectlPipelineTableOfACDCPipeline(t *testing.T) {
	p := pipelineFixture("team-a", "orders-cdc")
	p.Spec.Mode = etlv1.ModeCDC
	p.Status = etlv1.ETLPipelineStatus{
		Phase:       etlv1.PhaseRunning,
		Run:         &etlv1.RunStatus{ID: "r1", RowsWritten: 42},
		Replication: &etlv1.ReplicationStatus{Slot: "sluice_x", Phase: etlv1.ReplicationStreaming, RetainedWALBytes: 1 << 30},
	}
	header, rows := kubectlPipelineTable([]etlv1.ETLPipeline{p}, false, kubectlNow)
	if want := []string{"NAME", "PHASE", "DESIRED", "LAST RUN", "ROWS", "FRESHNESS", "NEXT RUN"}; !slices.Equal(header, want) {
		t.Errorf("header %q, want %q", header, want)
	}
	if want := []string{"orders-cdc", "Running", "Running", "<none>", "42", "<none>", "<none>"}; !slices.Equal(rows[0], want) {
		t.Errorf("row %q, want %q", rows[0], want)
	}
}
