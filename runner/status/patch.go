package status

import (
	"fmt"
	"k8s.io/apimachinery/pkg/api/equality"
	"slices"
	"time"
	"unicode/utf8"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

// maxMessage bounds run.message (the API allows 4096 bytes): the cause of a failure fits,
// a megabyte of SQL does not.
const maxMessage = 2048

// claimAction is what a runner does with the status it read when claiming.
type claimAction int

const (
	// claimTransition: RunRequested with our run id; write Running.
	claimTransition claimAction = iota
	// claimAgain: Running or PauseRequested with our run id (a replacement pod); no write.
	claimAgain
	// claimRefused: not our run, or not an active phase; exit without writing.
	claimRefused
)

// decideClaim is the claim rule, pure so it is table-tested.
func decideClaim(st *etlv1.ETLPipelineStatus, runID string) (claimAction, string) {
	if st.Run == nil || st.Run.ID == "" {
		return claimRefused, fmt.Sprintf("the pipeline has no requested run (phase %q), this runner is for run %q", st.Phase, runID)
	}
	if st.Run.ID != runID {
		return claimRefused, fmt.Sprintf("the pipeline's current run is %q, this runner is for run %q", st.Run.ID, runID)
	}
	switch st.Phase {
	case etlv1.PhaseRunRequested:
		return claimTransition, ""
	case etlv1.PhaseRunning, etlv1.PhasePauseRequested:
		return claimAgain, ""
	}
	return claimRefused, fmt.Sprintf("run %q is in phase %q, which no runner may claim", runID, st.Phase)
}

// signalOf reads what the pipeline asks of run runID.
func signalOf(st *etlv1.ETLPipelineStatus, runID string) Signal {
	if st.Run == nil || st.Run.ID != runID {
		return Stop
	}
	switch st.Phase {
	case etlv1.PhaseRunning:
		return Continue
	case etlv1.PhasePauseRequested:
		return Pause
	}
	return Stop
}

// applyClaim moves a claimed run to Running. The manager set the run's id, job, trigger,
// generation and start time; a claim clears what an earlier end of the same run id left.
func applyClaim(st *etlv1.ETLPipelineStatus) {
	st.Phase = etlv1.PhaseRunning
	st.Run.CompletionTime = nil
	st.Run.ErrorClass = ""
	st.Run.Message = ""
}

// applyProgress writes counters and the checkpoint. It reports whether anything changed, so
// an idle tick costs no write. With redact, the checkpoint's values and the cursor values in
// condition messages are masked (see RedactCheckpoint).
func applyProgress(st *etlv1.ETLPipelineStatus, p Progress, redact bool) bool {
	if redact {
		p = redactProgress(p)
	}
	changed := false
	r := st.Run
	if r.RowsRead != p.RowsRead || r.RowsWritten != p.RowsWritten || r.Batches != p.Batches ||
		r.RowsDeleted != p.RowsDeleted || r.RowsSwept != p.RowsSwept ||
		r.RowsRejected != p.RowsRejected || r.RejectsReplayed != p.RejectsReplayed {
		r.RowsRead, r.RowsWritten, r.Batches = p.RowsRead, p.RowsWritten, p.Batches
		r.RowsDeleted, r.RowsSwept = p.RowsDeleted, p.RowsSwept
		r.RowsRejected, r.RejectsReplayed = p.RowsRejected, p.RejectsReplayed
		changed = true
	}
	for _, c := range p.Conditions {
		if meta.SetStatusCondition(&st.Conditions, c) {
			changed = true
		}
	}
	for _, t := range p.Cleared {
		if meta.RemoveStatusCondition(&st.Conditions, t) {
			changed = true
		}
	}
	if p.Checkpoint != nil && (st.Checkpoint == nil || !slices.Equal(st.Checkpoint.Values, p.Checkpoint) ||
		redact && movedAt(st.Checkpoint, p.CheckpointTime)) {
		t := metav1.NewTime(p.CheckpointTime)
		st.Checkpoint = &etlv1.CheckpointStatus{Values: slices.Clone(p.Checkpoint), Time: &t}
		changed = true
	}
	if p.Replication != nil && !equality.Semantic.DeepEqual(st.Replication, p.Replication) {
		st.Replication = p.Replication.DeepCopy()
		changed = true
	}
	return changed
}

// redactProgress masks what a progress report says of the checkpoint and the cursor.
func redactProgress(p Progress) Progress {
	p.Checkpoint = Mask(p.Checkpoint)
	if len(p.Conditions) > 0 {
		conds := slices.Clone(p.Conditions)
		for i := range conds {
			conds[i].Message = RedactValues(conds[i].Message)
		}
		p.Conditions = conds
	}
	return p
}

// movedAt reports whether a checkpoint committed at t is another than the one in the status,
// at the API's precision of a second. Masked values all look alike: the time is what shows a
// redacted checkpoint moved, and the manager reads it to tell a stalled run.
func movedAt(cp *etlv1.CheckpointStatus, t time.Time) bool {
	return cp.Time == nil || cp.Time.Unix() != t.Unix()
}

// applyEnd writes the run's end: the phase, the completion time, the final counters and, for a
// failure, its class and message.
func applyEnd(st *etlv1.ETLPipelineStatus, e End, redact bool) {
	applyProgress(st, e.Progress, redact)
	if e.UnresolvedRejects != nil {
		st.UnresolvedRejects = *e.UnresolvedRejects
		st.RecentRejects = e.RecentRejects
	}
	if e.ClearCheckpoint {
		st.Checkpoint = nil
	}
	switch e.Phase {
	case etlv1.PhaseFailed:
		st.ConsecutiveFailures++
	case etlv1.PhaseIdle:
		st.ConsecutiveFailures = 0
	}
	st.Phase = e.Phase
	t := metav1.NewTime(e.Time)
	st.Run.CompletionTime = &t
	st.Run.ErrorClass = e.ErrorClass
	msg := e.Message
	if redact {
		msg = RedactValues(msg)
	}
	st.Run.Message = truncate(msg, maxMessage)
}

// truncate cuts s to at most n bytes on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
