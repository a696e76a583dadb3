package controllers

import (
	"context"
	"encoding/json"
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

// A runner whose run ended well but that could not say so in the status (the API server was
// down for longer than its retries) exits 0 with its end as the termination message. The
// manager then records that end from the Job, not a guess: a run that committed its last
// batch is Idle (or Paused), not Failed.

// reportedEnd returns the end a runner of run runID left in its termination message, nil
// when the message is not one (an older runner, a failure). Pure, so it is table-tested.
func reportedEnd(t termination, runID string) *configv1.RunEnd {
	if t.exitCode != 0 || t.message == "" {
		return nil
	}
	var end configv1.RunEnd
	if err := json.Unmarshal([]byte(t.message), &end); err != nil || end.RunID != runID {
		return nil
	}
	switch etlv1.Phase(end.Phase) {
	case etlv1.PhaseIdle, etlv1.PhasePaused:
		return &end
	}
	return nil
}

// recoverEnd records the end of a claimed run whose Job completed without the runner
// reporting it, when the runner left it in its termination message. It reports whether it did.
func (r *ETLPipelineReconciler) recoverEnd(ctx context.Context, s *pass) (bool, error) {
	st := &s.p.Status
	if st.Run == nil || s.job == nil || s.outcome != JobSucceeded ||
		(st.Phase != etlv1.PhaseRunning && st.Phase != etlv1.PhasePauseRequested) {
		return false, nil
	}
	term, err := r.terminationMessage(ctx, s.job)
	if err != nil {
		return false, err
	}
	end := reportedEnd(term, st.Run.ID)
	if end == nil {
		return false, nil
	}
	report := ReportIdle
	if etlv1.Phase(end.Phase) == etlv1.PhasePaused {
		report = ReportPaused
	}
	next, err := NextPhase(PhaseInput{Phase: st.Phase, Report: report})
	if err != nil {
		return false, nil //nolint:nilerr // not an end the state machine allows: judged as unreported
	}
	st.Run.RowsRead, st.Run.RowsWritten, st.Run.Batches = end.RowsRead, end.RowsWritten, end.Batches
	st.Run.RowsDeleted, st.Run.RowsSwept, st.Run.RowsRejected = end.RowsDeleted, end.RowsSwept, end.RowsRejected
	st.Run.CompletionTime = &metav1.Time{Time: s.now}
	st.Run.Message = fmt.Sprintf("the runner could not report the end of run %s; recorded from job %s", st.Run.ID, s.job.Name)
	if next == etlv1.PhaseIdle {
		st.ConsecutiveFailures = 0
	}
	st.Phase = next
	meta.RemoveStatusCondition(&st.Conditions, etlv1.ConditionProgressing)
	s.moved = true
	return true, nil
}
