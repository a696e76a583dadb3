package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

// A pipeline's counters over all its runs live in its status (status.totals), not in the
// manager's memory: the manager adds a run's counters once, when the run has ended, and
// records the run in status.history. The metrics are the totals plus the run in flight, so
// they only grow, across runs and manager restarts, and a run too short to be scraped still
// counts.

// endedRun returns the run of st that has ended and is not in the totals yet, or nil.
func endedRun(st *etlv1.ETLPipelineStatus) *etlv1.RunStatus {
	r := st.Run
	if r == nil || r.CompletionTime == nil || isActive(st.Phase) {
		return nil
	}
	if st.Totals != nil && st.Totals.CountedRunID == r.ID {
		return nil
	}
	return r
}

// foldRun adds the ended run of st to its totals and history, and returns its summary (nil
// when there is none to add). Pure.
func foldRun(st *etlv1.ETLPipelineStatus) *etlv1.RunSummary {
	r := endedRun(st)
	if r == nil {
		return nil
	}
	if st.Totals == nil {
		st.Totals = &etlv1.PipelineTotals{}
	}
	t := st.Totals
	t.RowsRead += r.RowsRead
	t.RowsWritten += r.RowsWritten
	t.RowsDeleted += r.RowsDeleted
	t.RowsRejected += r.RowsRejected
	t.Batches += r.Batches
	switch st.Phase {
	case etlv1.PhaseIdle:
		t.RunsSucceeded++
		end := *r.CompletionTime
		t.LastSuccessTime = &end
	case etlv1.PhasePaused:
		t.RunsPaused++
	default:
		t.RunsFailed++
	}
	t.CountedRunID = r.ID
	sum := etlv1.RunSummary{ID: r.ID, Trigger: r.Trigger, Outcome: st.Phase, StartTime: r.StartTime, CompletionTime: r.CompletionTime,
		RowsRead: r.RowsRead, RowsWritten: r.RowsWritten, RowsDeleted: r.RowsDeleted, RowsRejected: r.RowsRejected,
		ErrorClass: r.ErrorClass}
	if r.StartTime != nil {
		sum.Duration = r.CompletionTime.Sub(r.StartTime.Time).Round(time.Second).String()
	}
	st.History = append([]etlv1.RunSummary{sum}, st.History...)
	if len(st.History) > etlv1.MaxRunHistory {
		st.History = st.History[:etlv1.MaxRunHistory]
	}
	return &sum
}

// reconcileTotals folds a run that has ended into the totals and the history.
func (r *ETLPipelineReconciler) reconcileTotals(_ context.Context, s *pass) (ctrl.Result, error) {
	foldRun(&s.p.Status)
	return ctrl.Result{}, nil
}

// recordRunEnded emits one event per ended run, saying how it went, once the status that
// counts it is written: a pass whose write conflicts and is done again does not say it twice.
func (r *ETLPipelineReconciler) recordRunEnded(base, p *etlv1.ETLPipeline) {
	if p.Status.Totals == nil || len(p.Status.History) == 0 ||
		(base.Status.Totals != nil && base.Status.Totals.CountedRunID == p.Status.Totals.CountedRunID) {
		return
	}
	sum := p.Status.History[0]
	typ, what := corev1.EventTypeNormal, "completed"
	switch sum.Outcome {
	case etlv1.PhasePaused:
		what = "paused"
	case etlv1.PhaseFailed:
		typ, what = corev1.EventTypeWarning, fmt.Sprintf("failed (%s)", orUnknown(string(sum.ErrorClass)))
	}
	msg := fmt.Sprintf("run %s (%s) %s after %s: %d rows read, %d written, %d deleted",
		sum.ID, sum.Trigger, what, orUnknown(sum.Duration), sum.RowsRead, sum.RowsWritten, sum.RowsDeleted)
	if sum.RowsRejected > 0 {
		typ = corev1.EventTypeWarning
		msg += fmt.Sprintf(", %d rejected (etl.etl_rejects)", sum.RowsRejected)
	}
	r.Recorder.Eventf(p, nil, typ, "RunEnded", "Run", "%s", msg)
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
