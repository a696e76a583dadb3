package main

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

func TestKubectlArgoCDTrackingFindsEachTrackingMethod(t *testing.T) {
	for _, tc := range []struct {
		name        string
		labels      map[string]string
		annotations map[string]string
		want        kubectlArgoCD
		tracked     bool
	}{
		{"not tracked", map[string]string{"app.kubernetes.io/name": "sluice"}, nil, kubectlArgoCD{}, false},
		{"annotation tracking", nil, map[string]string{"argocd.argoproj.io/tracking-id": "analytics:etl.sluice.dev/ETLPipeline:team-a/orders"},
			kubectlArgoCD{App: "analytics", By: "annotation argocd.argoproj.io/tracking-id", Certain: true}, true},
		{"annotation tracking of an Application in another namespace", nil, map[string]string{"argocd.argoproj.io/tracking-id": "apps_analytics:etl.sluice.dev/ETLPipeline:team-a/orders"},
			kubectlArgoCD{App: "apps_analytics", By: "annotation argocd.argoproj.io/tracking-id", Certain: true}, true},
		{"custom tracking label", map[string]string{"argocd.argoproj.io/instance": "analytics"}, nil,
			kubectlArgoCD{App: "analytics", By: "label argocd.argoproj.io/instance", Certain: true}, true},
		{"instance annotation", nil, map[string]string{"argocd.argoproj.io/instance": "analytics"},
			kubectlArgoCD{App: "analytics", By: "annotation argocd.argoproj.io/instance", Certain: true}, true},
		{"default tracking label, which Helm sets too", map[string]string{"app.kubernetes.io/instance": "analytics"}, nil,
			kubectlArgoCD{App: "analytics", By: "label app.kubernetes.io/instance"}, true},
		{"the tracking id wins over the label", map[string]string{"app.kubernetes.io/instance": "release"},
			map[string]string{"argocd.argoproj.io/tracking-id": "analytics:etl.sluice.dev/ETLPipeline:team-a/orders"},
			kubectlArgoCD{App: "analytics", By: "annotation argocd.argoproj.io/tracking-id", Certain: true}, true},
	} {
		obj := &metav1.ObjectMeta{Labels: tc.labels, Annotations: tc.annotations}
		got, ok := kubectlArgoCDTracking(obj)
		if ok != tc.tracked || got != tc.want {
			t.Errorf("%s: %+v, %v; want %+v, %v", tc.name, got, ok, tc.want, tc.tracked)
		}
	}
}

func TestKubectlArgoCDWarningSaysSelfHealUndoesItAndHowToMakeItLast(t *testing.T) {
	p := &etlv1.ETLPipeline{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "orders"}}
	tracked := kubectlArgoCD{App: "analytics", By: "annotation argocd.argoproj.io/tracking-id", Certain: true}
	for _, tc := range []struct {
		to   etlv1.DesiredState
		t    kubectlArgoCD
		want []string
	}{
		{etlv1.DesiredPaused, tracked, []string{
			`Warning: ETLPipeline team-a/orders is tracked by Application "analytics"`,
			"self-heal", "back to the value in Git", "the pipeline resumes", "desiredState: Paused", "commit it to Git",
			"ignoreDifferences on /spec/desiredState", "RespectIgnoreDifferences=true", "turn self-heal off",
		}},
		{etlv1.DesiredRunning, tracked, []string{"the pipeline pauses again", "desiredState: Running"}},
		{etlv1.DesiredPaused, kubectlArgoCD{App: "analytics", By: "label app.kubernetes.io/instance"}, []string{
			`is probably tracked by Application "analytics" (label app.kubernetes.io/instance, Argo CD's default tracking label; Helm sets it too)`,
		}},
	} {
		got := kubectlArgoCDWarning(p, tc.t, tc.to)
		for _, w := range tc.want {
			if !strings.Contains(strings.Join(strings.Fields(got), " "), w) {
				t.Errorf("warning for %s lacks %q:\n%s", tc.to, w, got)
			}
		}
	}
}

func TestKubectlDesiredEffectSaysWhatTheManagerDoesNext(t *testing.T) {
	for _, tc := range []struct {
		phase etlv1.Phase
		to    etlv1.DesiredState
		want  string
	}{
		{etlv1.PhaseRunning, etlv1.DesiredPaused, "the run stops after its current batch"},
		{etlv1.PhaseIdle, etlv1.DesiredPaused, "no run starts until the pipeline is resumed"},
		{etlv1.PhasePaused, etlv1.DesiredRunning, "a run starts from the checkpoint"},
		{etlv1.PhaseFailed, etlv1.DesiredRunning, "runs start again on their triggers"},
	} {
		if got := kubectlDesiredEffect(tc.phase, tc.to); !strings.Contains(got, tc.want) {
			t.Errorf("%s -> %s: %q, want %q", tc.phase, tc.to, got, tc.want)
		}
	}
}

func TestKubectlRunWaitFollowsTheRunThatServesTheRequest(t *testing.T) {
	const value = "2025-06-01T12:00:00Z"
	started, ended := ago(time.Minute), ago(0)
	for _, tc := range []struct {
		name  string
		st    etlv1.ETLPipelineStatus
		runID string
		want  kubectlWaitState
	}{
		{"not handled yet: the last run is an older one", etlv1.ETLPipelineStatus{Phase: etlv1.PhaseIdle, LastHandledRunRequest: "before",
			Run: &etlv1.RunStatus{ID: "old", CompletionTime: ended}}, "", kubectlWaitState{}},
		{"handled: the run started", etlv1.ETLPipelineStatus{Phase: etlv1.PhaseRunRequested, LastHandledRunRequest: value,
			Run: &etlv1.RunStatus{ID: "new", StartTime: started}}, "", kubectlWaitState{RunID: "new"}},
		{"running", etlv1.ETLPipelineStatus{Phase: etlv1.PhaseRunning, LastHandledRunRequest: value,
			Run: &etlv1.RunStatus{ID: "new", StartTime: started}}, "new", kubectlWaitState{RunID: "new"}},
		{"completed", etlv1.ETLPipelineStatus{Phase: etlv1.PhaseIdle, LastHandledRunRequest: value,
			Run: &etlv1.RunStatus{ID: "new", StartTime: started, CompletionTime: ended, RowsRead: 10, RowsWritten: 9, RowsDeleted: 1}}, "new",
			kubectlWaitState{RunID: "new", Done: true, Outcome: etlv1.PhaseIdle, Summary: "read 10, written 9, deleted 1 rows in 1m0s"}},
		{"completed, seen for the first time", etlv1.ETLPipelineStatus{Phase: etlv1.PhaseIdle, LastHandledRunRequest: value,
			Run: &etlv1.RunStatus{ID: "new", StartTime: started, CompletionTime: ended}}, "",
			kubectlWaitState{RunID: "new", Done: true, Outcome: etlv1.PhaseIdle, Summary: "read 0, written 0, deleted 0 rows in 1m0s"}},
		{"failed", etlv1.ETLPipelineStatus{Phase: etlv1.PhaseFailed, LastHandledRunRequest: value,
			Run: &etlv1.RunStatus{ID: "new", StartTime: started, CompletionTime: ended, ErrorClass: etlv1.ErrorBusiness, Message: "syntax error"}}, "new",
			kubectlWaitState{RunID: "new", Done: true, Outcome: etlv1.PhaseFailed, Summary: "read 0, written 0, deleted 0 rows in 1m0s; Business: syntax error"}},
		{"a pause asked, not yet done", etlv1.ETLPipelineStatus{Phase: etlv1.PhasePauseRequested, LastHandledRunRequest: value,
			Run: &etlv1.RunStatus{ID: "new", StartTime: started}}, "new", kubectlWaitState{RunID: "new"}},
		{"a later run started: the outcome from history", etlv1.ETLPipelineStatus{Phase: etlv1.PhaseRunning, LastHandledRunRequest: value,
			Run:     &etlv1.RunStatus{ID: "later", StartTime: ended},
			History: []etlv1.RunSummary{{ID: "new", Outcome: etlv1.PhaseIdle, Duration: "59s", RowsRead: 3, RowsWritten: 3}}}, "new",
			kubectlWaitState{RunID: "new", Done: true, Outcome: etlv1.PhaseIdle, Summary: "read 3, written 3, deleted 0 rows in 59s"}},
		{"a later run started and history forgot it", etlv1.ETLPipelineStatus{Phase: etlv1.PhaseRunning,
			Run: &etlv1.RunStatus{ID: "later"}}, "new", kubectlWaitState{RunID: "new", Done: true}},
	} {
		p := &etlv1.ETLPipeline{Status: tc.st}
		if got := kubectlRunWait(p, value, tc.runID); got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

func TestKubectlRunResultExitsNonZeroUnlessTheRunCompleted(t *testing.T) {
	o := &kubectlOptions{stdout: &strings.Builder{}, stderr: &strings.Builder{}}
	p := &etlv1.ETLPipeline{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "orders"}}
	for _, tc := range []struct {
		outcome etlv1.Phase
		code    int
		want    string
	}{
		{etlv1.PhaseIdle, 0, ""},
		{etlv1.PhaseFailed, 1, "run r failed: s"},
		{etlv1.PhasePaused, 1, "run r was paused: s"},
		{"", 1, "no longer records how"},
	} {
		err := kubectlRunResult(o, p, kubectlWaitState{RunID: "r", Done: true, Outcome: tc.outcome, Summary: "s"})
		if kubectlExitCode(err) != tc.code || (tc.want != "" && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("outcome %q: %v (exit %d), want exit %d and %q", tc.outcome, err, kubectlExitCode(err), tc.code, tc.want)
		}
	}
}
