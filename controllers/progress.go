package controllers

import (
	"context"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

// A claimed run that commits nothing for runner.progressDeadline (a query waiting on a lock
// longer than its timeouts allow, a stalled source, a transform that never returns) is not
// killed: it may be a long first page. It is marked, so that a person or an alert sees it:
// condition Progressing=False, reason ProgressDeadlineExceeded, and a Warning event. The
// condition goes when a batch commits again or the run ends.

// A CDC run that streams an idle table commits nothing for as long as the source writes
// nothing, and moves its checkpoint only when the server's WAL moves: its runner's look at
// the slot (status.replication.observedTime, every few seconds while the stream loop turns)
// is its progress too. A runner stuck in a write or a transform stops looking, so it is
// still marked.

// stalledFor returns how long a claimed run has committed nothing at now, and whether that is
// past deadline. Its last progress is the latest of the run's start, the checkpoint's commit
// time and, for a CDC run streaming, the runner's last look at its slot. Pure, so it is
// table-tested.
func stalledFor(st *etlv1.ETLPipelineStatus, deadline time.Duration, now time.Time) (time.Time, time.Duration, bool) {
	if (st.Phase != etlv1.PhaseRunning && st.Phase != etlv1.PhasePauseRequested) || st.Run == nil || st.Run.StartTime == nil {
		return time.Time{}, 0, false
	}
	last := st.Run.StartTime.Time
	if cp := st.Checkpoint; cp != nil && cp.Time != nil && cp.Time.After(last) {
		last = cp.Time.Time
	}
	if r := st.Replication; r != nil && r.Phase == etlv1.ReplicationStreaming && r.ObservedTime != nil && r.ObservedTime.After(last) {
		last = r.ObservedTime.Time
	}
	idle := now.Sub(last)
	return last, idle, idle >= deadline
}

// reconcileProgress keeps the Progressing condition of a claimed run and wakes the pipeline up
// at its deadline: the runner's progress reports do not trigger a pass.
func (r *ETLPipelineReconciler) reconcileProgress(_ context.Context, s *pass) (ctrl.Result, error) {
	st := &s.p.Status
	deadline := r.config().Runner.ProgressLimit()
	since, idle, late := stalledFor(st, deadline, s.now)
	switch {
	case late:
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{
			Type: etlv1.ConditionProgressing, Status: metav1.ConditionFalse, Reason: etlv1.ReasonProgressDeadlineExceeded,
			ObservedGeneration: s.p.Generation,
			// The message holds no running duration: it stays the same from pass to pass.
			Message: fmt.Sprintf("run %s has committed no batch since %s (runner.progressDeadline %s); it is not stopped: "+
				"see its runner's log (job %s) for what it waits on", st.Run.ID, since.UTC().Format(time.RFC3339), deadline, st.Run.JobName),
		})
		// Look again soon: a batch committed since clears it.
		return ctrl.Result{RequeueAfter: min(max(deadline/4, time.Second), time.Minute)}, nil
	case st.Phase == etlv1.PhaseRunning || st.Phase == etlv1.PhasePauseRequested:
		meta.RemoveStatusCondition(&st.Conditions, etlv1.ConditionProgressing)
		if st.Run != nil {
			return ctrl.Result{RequeueAfter: deadline - idle}, nil
		}
	default:
		meta.RemoveStatusCondition(&st.Conditions, etlv1.ConditionProgressing)
	}
	return ctrl.Result{}, nil
}
