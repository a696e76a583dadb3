package controllers

import (
	"fmt"
	"regexp"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

// maxMessage bounds the messages Sluice puts in conditions and events (run.message allows 4096).
const maxMessage = 1024

// credentialPatterns catch what must never reach a condition, an event or a log line: the
// password of a URL, and password/token/apiKey values in key=value or JSON text. A runner's
// termination message may fall back to its last log lines, which Sluice does not control.
var credentialPatterns = []struct {
	re   *regexp.Regexp
	repl string
}{
	{regexp.MustCompile(`([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s:]*:[^/@\s]*@`), "${1}***@"},
	{regexp.MustCompile(`(?i)((?:password|passwd|pwd|token|api[_-]?key|secret)["']?\s*[=:]\s*["']?)[^\s"',;&]+`), "${1}***"},
}

// redact removes credentials from s and bounds its length.
func redact(s string) string {
	for _, p := range credentialPatterns {
		s = p.re.ReplaceAllString(s, p.repl)
	}
	s = strings.TrimSpace(s)
	if len(s) > maxMessage {
		s = s[:maxMessage-3] + "..."
	}
	return s
}

// conditionInput is what the conditions are computed from, besides the status itself.
type conditionInput struct {
	Generation int64
	Problem    *specProblem
	Target     targetCheck
}

// setConditions derives every condition from the status and the pass's findings, with
// meta.SetStatusCondition so that lastTransitionTime moves only when a condition's status
// does: an unchanged pipeline yields an identical status, hence no write.
//
//   - Ready is the summary: True at rest (Idle: Succeeded, Paused: Paused), Unknown while a
//     run is in flight, False when Failed or the spec has a problem.
//   - Reconciling (kstatus) is True while a run is requested, running or pausing; absent else.
//   - Stalled (kstatus) is True while the spec has a problem; absent else.
//   - TargetAllowed says whether the whitelist admits spec.target.
func setConditions(st *etlv1.ETLPipelineStatus, in conditionInput) {
	set := func(t string, s metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{
			Type: t, Status: s, Reason: reason, Message: redact(msg), ObservedGeneration: in.Generation,
		})
	}

	if in.Target.Allowed {
		set(etlv1.ConditionTargetAllowed, metav1.ConditionTrue, in.Target.Reason, in.Target.Message)
	} else {
		set(etlv1.ConditionTargetAllowed, metav1.ConditionFalse, in.Target.Reason, in.Target.Message)
	}

	if in.Problem != nil {
		set(etlv1.ConditionStalled, metav1.ConditionTrue, in.Problem.Reason, in.Problem.Message)
	} else {
		meta.RemoveStatusCondition(&st.Conditions, etlv1.ConditionStalled)
	}

	runID := ""
	if st.Run != nil {
		runID = st.Run.ID
	}
	if isActive(st.Phase) {
		reason, msg := activeReason(st.Phase, st.Run)
		set(etlv1.ConditionReconciling, metav1.ConditionTrue, reason, msg)
	} else {
		meta.RemoveStatusCondition(&st.Conditions, etlv1.ConditionReconciling)
	}

	switch {
	case in.Problem != nil:
		set(etlv1.ConditionReady, metav1.ConditionFalse, in.Problem.Reason, in.Problem.Message)
	case st.Phase == etlv1.PhaseFailed:
		reason, msg := failedReady(st)
		set(etlv1.ConditionReady, metav1.ConditionFalse, reason, msg)
	case isActive(st.Phase):
		reason, msg := activeReason(st.Phase, st.Run)
		set(etlv1.ConditionReady, metav1.ConditionUnknown, reason, msg)
	case st.Phase == etlv1.PhasePaused:
		set(etlv1.ConditionReady, metav1.ConditionTrue, etlv1.ReasonPaused, "paused: no run starts until desiredState is Running")
	case st.Phase == etlv1.PhaseIdle:
		msg := fmt.Sprintf("run %s completed", runID)
		if st.Run != nil {
			msg = fmt.Sprintf("run %s completed: %d rows read, %d written", runID, st.Run.RowsRead, st.Run.RowsWritten)
			if st.Run.RowsDeleted > 0 || st.Run.RowsSwept > 0 {
				msg += fmt.Sprintf(", %d deleted, %d swept", st.Run.RowsDeleted, st.Run.RowsSwept)
			}
			if st.Run.RowsRejected > 0 {
				msg += fmt.Sprintf(", %d rejected", st.Run.RowsRejected)
			}
		}
		set(etlv1.ConditionReady, metav1.ConditionTrue, etlv1.ReasonSucceeded, msg)
	}
}

func activeReason(phase etlv1.Phase, run *etlv1.RunStatus) (string, string) {
	id, trigger := "", etlv1.RunTrigger("")
	if run != nil {
		id, trigger = run.ID, run.Trigger
	}
	switch phase {
	case etlv1.PhaseRunRequested:
		return etlv1.ReasonRunRequested, fmt.Sprintf("run %s (%s) requested; waiting for the runner to claim it", id, trigger)
	case etlv1.PhaseRunning:
		return etlv1.ReasonRunning, fmt.Sprintf("run %s (%s) is running", id, trigger)
	default:
		return etlv1.ReasonPauseRequested, fmt.Sprintf("run %s: pause requested; the runner stops after its batch", id)
	}
}

// failedReady explains a Failed phase. A failure the manager recorded (JobFailed,
// RunUnreported) keeps the Ready condition it wrote then, since the pod that explained it may
// be gone; a failure the runner reported is told from status.run.
func failedReady(st *etlv1.ETLPipelineStatus) (string, string) {
	if c := meta.FindStatusCondition(st.Conditions, etlv1.ConditionReady); c != nil && c.Status == metav1.ConditionFalse {
		switch {
		case c.Reason == etlv1.ReasonJobFailed, c.Reason == etlv1.ReasonRunUnreported, c.Reason == etlv1.ReasonRunnerNotStarted:
			return c.Reason, c.Message
		case isSpecReason(c.Reason):
			// The problem went away without a new generation (the operator configuration
			// changed): Failed stays until an explicit request, and says so.
			return c.Reason, "resolved; change the spec or set " + etlv1.AnnotationRunRequestedAt + " to run again"
		}
	}
	if st.Run == nil {
		return etlv1.ReasonRunFailed, "the run failed"
	}
	msg := fmt.Sprintf("run %s failed", st.Run.ID)
	if st.Run.ErrorClass != "" {
		msg += fmt.Sprintf(" (%s error)", st.Run.ErrorClass)
	}
	if st.Run.Message != "" {
		msg += ": " + st.Run.Message
	}
	return etlv1.ReasonRunFailed, msg
}

// readyReason returns the reason of the Ready condition, "" when there is none. A change of it
// is a phase transition worth an event.
func readyReason(st *etlv1.ETLPipelineStatus) (string, metav1.ConditionStatus, string) {
	if c := meta.FindStatusCondition(st.Conditions, etlv1.ConditionReady); c != nil {
		return c.Reason, c.Status, c.Message
	}
	return "", "", ""
}
