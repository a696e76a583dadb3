package status

import (
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

func withRun(phase etlv1.Phase, id string) *etlv1.ETLPipelineStatus {
	st := &etlv1.ETLPipelineStatus{Phase: phase}
	if id != "" {
		st.Run = &etlv1.RunStatus{ID: id, Trigger: etlv1.TriggerCreated}
	}
	return st
}

func TestDecideClaim(t *testing.T) {
	cases := []struct {
		name   string
		status *etlv1.ETLPipelineStatus
		want   claimAction
	}{
		{"requested run is claimed", withRun(etlv1.PhaseRunRequested, "r1"), claimTransition},
		{"replacement pod of a running run claims again", withRun(etlv1.PhaseRunning, "r1"), claimAgain},
		{"replacement pod while a pause is requested claims again", withRun(etlv1.PhasePauseRequested, "r1"), claimAgain},
		{"another run is refused", withRun(etlv1.PhaseRunRequested, "r2"), claimRefused},
		{"another running run is refused", withRun(etlv1.PhaseRunning, "r2"), claimRefused},
		{"a cancelled (paused) run is refused", withRun(etlv1.PhasePaused, "r1"), claimRefused},
		{"a completed run is refused", withRun(etlv1.PhaseIdle, "r1"), claimRefused},
		{"a failed run is refused", withRun(etlv1.PhaseFailed, "r1"), claimRefused},
		{"no run is refused", withRun(etlv1.PhaseRunRequested, ""), claimRefused},
		{"empty status is refused", &etlv1.ETLPipelineStatus{}, claimRefused},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, reason := decideClaim(tc.status, "r1")
			if got != tc.want {
				t.Fatalf("decideClaim = %v (%s), want %v", got, reason, tc.want)
			}
			if (got == claimRefused) != (reason != "") {
				t.Fatalf("a refusal needs a reason and only a refusal has one: %q", reason)
			}
		})
	}
}

func TestSignalOf(t *testing.T) {
	cases := []struct {
		name   string
		status *etlv1.ETLPipelineStatus
		want   Signal
	}{
		{"running", withRun(etlv1.PhaseRunning, "r1"), Continue},
		{"pause requested", withRun(etlv1.PhasePauseRequested, "r1"), Pause},
		{"paused by the manager", withRun(etlv1.PhasePaused, "r1"), Stop},
		{"failed by the manager", withRun(etlv1.PhaseFailed, "r1"), Stop},
		{"another run requested", withRun(etlv1.PhaseRunRequested, "r2"), Stop},
		{"no run", &etlv1.ETLPipelineStatus{Phase: etlv1.PhaseIdle}, Stop},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := signalOf(tc.status, "r1"); got != tc.want {
				t.Fatalf("signalOf = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestStatusPatches(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	cp := []string{"2024-01-01 00:00:00Z", "42"}
	cases := []struct {
		name    string
		status  *etlv1.ETLPipelineStatus
		apply   func(st *etlv1.ETLPipelineStatus) bool
		changed bool
		check   func(t *testing.T, st *etlv1.ETLPipelineStatus)
	}{
		{
			name: "claim sets Running and clears an earlier end of the same run",
			status: func() *etlv1.ETLPipelineStatus {
				st := withRun(etlv1.PhaseRunRequested, "r1")
				st.Run.ErrorClass, st.Run.Message = etlv1.ErrorInfra, "old"
				st.Run.CompletionTime = &metav1.Time{Time: now}
				return st
			}(),
			apply:   func(st *etlv1.ETLPipelineStatus) bool { applyClaim(st); return true },
			changed: true,
			check: func(t *testing.T, st *etlv1.ETLPipelineStatus) {
				if st.Phase != etlv1.PhaseRunning || st.Run.ErrorClass != "" || st.Run.Message != "" || st.Run.CompletionTime != nil {
					t.Fatalf("claimed status %+v %+v", st, st.Run)
				}
				if st.Run.ID != "r1" || st.Run.Trigger != etlv1.TriggerCreated {
					t.Fatalf("the claim must keep what the manager set: %+v", st.Run)
				}
			},
		},
		{
			name:   "progress writes counters and the checkpoint",
			status: withRun(etlv1.PhaseRunning, "r1"),
			apply: func(st *etlv1.ETLPipelineStatus) bool {
				return applyProgress(st, Progress{RowsRead: 10, RowsWritten: 9, Batches: 2, Checkpoint: cp, CheckpointTime: now}, false)
			},
			changed: true,
			check: func(t *testing.T, st *etlv1.ETLPipelineStatus) {
				if st.Run.RowsRead != 10 || st.Run.RowsWritten != 9 || st.Run.Batches != 2 ||
					strings.Join(st.Checkpoint.Values, ",") != strings.Join(cp, ",") || !st.Checkpoint.Time.Time.Equal(now) {
					t.Fatalf("progress status %+v %+v", st.Run, st.Checkpoint)
				}
				if st.Phase != etlv1.PhaseRunning {
					t.Fatalf("progress must not touch the phase")
				}
			},
		},
		{
			name: "progress with nothing new changes nothing",
			status: func() *etlv1.ETLPipelineStatus {
				st := withRun(etlv1.PhaseRunning, "r1")
				applyProgress(st, Progress{RowsRead: 10, Checkpoint: cp, CheckpointTime: now}, false)
				return st
			}(),
			apply: func(st *etlv1.ETLPipelineStatus) bool {
				return applyProgress(st, Progress{RowsRead: 10, Checkpoint: cp, CheckpointTime: now.Add(time.Hour)}, false)
			},
			changed: false,
		},
		{
			name:   "progress without a checkpoint keeps the previous one",
			status: &etlv1.ETLPipelineStatus{Phase: etlv1.PhaseRunning, Run: &etlv1.RunStatus{ID: "r1"}, Checkpoint: &etlv1.CheckpointStatus{Values: cp}},
			apply:  func(st *etlv1.ETLPipelineStatus) bool { return applyProgress(st, Progress{}, false) },
			check: func(t *testing.T, st *etlv1.ETLPipelineStatus) {
				if st.Checkpoint == nil || len(st.Checkpoint.Values) != 2 {
					t.Fatalf("checkpoint lost: %+v", st.Checkpoint)
				}
			},
		},
		{
			name:   "failure carries class, message and completion time",
			status: withRun(etlv1.PhaseRunning, "r1"),
			apply: func(st *etlv1.ETLPipelineStatus) bool {
				applyEnd(st, End{Phase: etlv1.PhaseFailed, ErrorClass: etlv1.ErrorBusiness, Message: "bad column", Time: now,
					Progress: Progress{RowsRead: 5}}, false)
				return true
			},
			changed: true,
			check: func(t *testing.T, st *etlv1.ETLPipelineStatus) {
				if st.Phase != etlv1.PhaseFailed || st.Run.ErrorClass != etlv1.ErrorBusiness || st.Run.Message != "bad column" ||
					!st.Run.CompletionTime.Time.Equal(now) || st.Run.RowsRead != 5 {
					t.Fatalf("failed status %+v %+v", st, st.Run)
				}
			},
		},
		{
			name:   "a completed full run clears the checkpoint",
			status: &etlv1.ETLPipelineStatus{Phase: etlv1.PhaseRunning, Run: &etlv1.RunStatus{ID: "r1"}, Checkpoint: &etlv1.CheckpointStatus{Values: cp}},
			apply: func(st *etlv1.ETLPipelineStatus) bool {
				applyEnd(st, End{Phase: etlv1.PhaseIdle, ClearCheckpoint: true, Time: now}, false)
				return true
			},
			changed: true,
			check: func(t *testing.T, st *etlv1.ETLPipelineStatus) {
				if st.Phase != etlv1.PhaseIdle || st.Checkpoint != nil || st.Run.ErrorClass != "" {
					t.Fatalf("idle status %+v", st)
				}
			},
		},
		{
			name:   "a long message is cut to the API's limit",
			status: withRun(etlv1.PhaseRunning, "r1"),
			apply: func(st *etlv1.ETLPipelineStatus) bool {
				applyEnd(st, End{Phase: etlv1.PhaseFailed, Message: strings.Repeat("é", 5000), Time: now}, false)
				return true
			},
			changed: true,
			check: func(t *testing.T, st *etlv1.ETLPipelineStatus) {
				if len(st.Run.Message) > maxMessage || !strings.HasSuffix(st.Run.Message, "…") {
					t.Fatalf("message of %d bytes", len(st.Run.Message))
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.apply(tc.status); got != tc.changed {
				t.Fatalf("changed = %v, want %v", got, tc.changed)
			}
			if tc.check != nil {
				tc.check(t, tc.status)
			}
		})
	}
}

func TestApplyEndCountsConsecutiveFailures(t *testing.T) {
	st := &etlv1.ETLPipelineStatus{Phase: etlv1.PhaseRunning, Run: &etlv1.RunStatus{ID: "r"}, ConsecutiveFailures: 2}
	for _, step := range []struct {
		phase etlv1.Phase
		want  int32
	}{{etlv1.PhaseFailed, 3}, {etlv1.PhasePaused, 3}, {etlv1.PhaseFailed, 4}, {etlv1.PhaseIdle, 0}} {
		applyEnd(st, End{Phase: step.phase}, false)
		if st.ConsecutiveFailures != step.want {
			t.Fatalf("after %s: %d consecutive failures, want %d", step.phase, st.ConsecutiveFailures, step.want)
		}
	}
}

func TestApplyProgressSetsAndClearsTheRunnersConditions(t *testing.T) {
	st := &etlv1.ETLPipelineStatus{Phase: etlv1.PhaseRunning, Run: &etlv1.RunStatus{ID: "r"}, Conditions: []metav1.Condition{
		{Type: etlv1.ConditionCheckpointReset, Status: metav1.ConditionTrue, Reason: etlv1.ReasonPipelineRecreated},
		{Type: etlv1.ConditionReady, Status: metav1.ConditionUnknown, Reason: etlv1.ReasonRunning},
	}}
	held := metav1.Condition{Type: etlv1.ConditionHorizonHeld, Status: metav1.ConditionFalse, Reason: etlv1.ReasonHorizonCurrent, Message: "at x"}
	if !applyProgress(st, Progress{Conditions: []metav1.Condition{held}, Cleared: []string{etlv1.ConditionCheckpointReset}}, false) {
		t.Fatal("nothing changed")
	}
	if meta.FindStatusCondition(st.Conditions, etlv1.ConditionCheckpointReset) != nil ||
		meta.FindStatusCondition(st.Conditions, etlv1.ConditionHorizonHeld) == nil ||
		meta.FindStatusCondition(st.Conditions, etlv1.ConditionReady) == nil {
		t.Fatalf("conditions %+v", st.Conditions)
	}
	if applyProgress(st, Progress{Conditions: []metav1.Condition{held}, Cleared: []string{etlv1.ConditionCheckpointReset}}, false) {
		t.Fatal("the same report changed the status again: a write per tick")
	}
}
