package controllers

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

func TestRedact(t *testing.T) {
	cases := map[string]string{
		"dial postgres://etl:s3cret@db:5432/x failed":  "s3cret",
		"connect host=db user=etl password=s3cret":     "s3cret",
		`{"apiKey": "AbC123=="} rejected`:              "AbC123",
		"token: eyJhbGciOi.secret":                     "eyJhbGciOi",
		"https://elastic:hunter2@es:9200 returned 401": "hunter2",
	}
	for in, secret := range cases {
		if got := redact(in); strings.Contains(got, secret) {
			t.Errorf("redact(%q) = %q still holds %q", in, got, secret)
		}
	}
	if got := redact("relation \"orders\" does not exist"); got != "relation \"orders\" does not exist" {
		t.Errorf("redact changed a harmless message: %q", got)
	}
	if got := redact(strings.Repeat("x", 5000)); len(got) != maxMessage {
		t.Errorf("redact kept %d characters, want %d", len(got), maxMessage)
	}
}

func TestSetConditions(t *testing.T) {
	allowed := targetCheck{Allowed: true, Reason: etlv1.ReasonTargetAllowed, Message: "ok"}
	run := &etlv1.RunStatus{ID: "r1", Trigger: etlv1.TriggerCreated, RowsRead: 10, RowsWritten: 9}
	type want struct {
		ready, readyReason   string
		reconciling, stalled string // "" for absent
		targetAllowed        string
	}
	cases := []struct {
		name string
		st   etlv1.ETLPipelineStatus
		in   conditionInput
		want want
	}{
		{"idle", etlv1.ETLPipelineStatus{Phase: etlv1.PhaseIdle, Run: run}, conditionInput{Generation: 2, Target: allowed},
			want{"True", etlv1.ReasonSucceeded, "", "", "True"}},
		{"run requested", etlv1.ETLPipelineStatus{Phase: etlv1.PhaseRunRequested, Run: run}, conditionInput{Generation: 2, Target: allowed},
			want{"Unknown", etlv1.ReasonRunRequested, "True", "", "True"}},
		{"running", etlv1.ETLPipelineStatus{Phase: etlv1.PhaseRunning, Run: run}, conditionInput{Generation: 2, Target: allowed},
			want{"Unknown", etlv1.ReasonRunning, "True", "", "True"}},
		{"pause requested", etlv1.ETLPipelineStatus{Phase: etlv1.PhasePauseRequested, Run: run}, conditionInput{Generation: 2, Target: allowed},
			want{"Unknown", etlv1.ReasonPauseRequested, "True", "", "True"}},
		{"paused", etlv1.ETLPipelineStatus{Phase: etlv1.PhasePaused}, conditionInput{Generation: 2, Target: allowed},
			want{"True", etlv1.ReasonPaused, "", "", "True"}},
		{"target not allowed", etlv1.ETLPipelineStatus{Phase: etlv1.PhaseFailed}, conditionInput{Generation: 2,
			Problem: &specProblem{Reason: etlv1.ReasonTargetNotAllowed, Message: "no"},
			Target:  targetCheck{Reason: etlv1.ReasonTargetNotAllowed, Message: "no"}},
			want{"False", etlv1.ReasonTargetNotAllowed, "", "True", "False"}},
		{"invalid spec during a run", etlv1.ETLPipelineStatus{Phase: etlv1.PhaseRunning, Run: run}, conditionInput{Generation: 2,
			Problem: &specProblem{Reason: etlv1.ReasonInvalidSpec, Message: "bad"}, Target: allowed},
			want{"False", etlv1.ReasonInvalidSpec, "True", "True", "True"}},
		{"runner reported failure", etlv1.ETLPipelineStatus{Phase: etlv1.PhaseFailed, Run: &etlv1.RunStatus{ID: "r1", ErrorClass: etlv1.ErrorBusiness, Message: "column x does not exist"}},
			conditionInput{Generation: 2, Target: allowed},
			want{"False", etlv1.ReasonRunFailed, "", "", "True"}},
		{"job failure kept", etlv1.ETLPipelineStatus{Phase: etlv1.PhaseFailed, Run: run, Conditions: []metav1.Condition{
			{Type: etlv1.ConditionReady, Status: metav1.ConditionFalse, Reason: etlv1.ReasonJobFailed, Message: "job x failed: oom"}}},
			conditionInput{Generation: 2, Target: allowed},
			want{"False", etlv1.ReasonJobFailed, "", "", "True"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := tc.st.DeepCopy()
			setConditions(st, tc.in)
			get := func(typ string) string {
				if c := meta.FindStatusCondition(st.Conditions, typ); c != nil {
					if c.ObservedGeneration != tc.in.Generation {
						t.Errorf("%s observedGeneration = %d", typ, c.ObservedGeneration)
					}
					return string(c.Status)
				}
				return ""
			}
			got := want{
				ready: get(etlv1.ConditionReady), reconciling: get(etlv1.ConditionReconciling),
				stalled: get(etlv1.ConditionStalled), targetAllowed: get(etlv1.ConditionTargetAllowed),
			}
			if c := meta.FindStatusCondition(st.Conditions, etlv1.ConditionReady); c != nil {
				got.readyReason = c.Reason
			}
			if got != tc.want {
				t.Fatalf("conditions = %+v, want %+v\n%+v", got, tc.want, st.Conditions)
			}
			// A second pass over the same status changes nothing: no write at rest.
			again := st.DeepCopy()
			setConditions(again, tc.in)
			if !equality.Semantic.DeepEqual(st, again) {
				t.Fatalf("setConditions is not idempotent:\n%+v\n%+v", st.Conditions, again.Conditions)
			}
		})
	}
	t.Run("job failure message names the cause", func(t *testing.T) {
		st := &etlv1.ETLPipelineStatus{Phase: etlv1.PhaseFailed, Run: &etlv1.RunStatus{ID: "r9", ErrorClass: etlv1.ErrorBusiness, Message: "column x does not exist"}}
		setConditions(st, conditionInput{Generation: 1, Target: allowed})
		c := meta.FindStatusCondition(st.Conditions, etlv1.ConditionReady)
		if !strings.Contains(c.Message, "r9") || !strings.Contains(c.Message, "column x does not exist") || !strings.Contains(c.Message, "Business") {
			t.Fatalf("Ready message = %q", c.Message)
		}
	})
}

func TestPipelineChangedPredicate(t *testing.T) {
	base := newPipeline("ns", "p", legacySpec())
	base.Status = etlv1.ETLPipelineStatus{Phase: etlv1.PhaseRunning, Run: &etlv1.RunStatus{ID: "r1"}}
	cases := []struct {
		name   string
		mutate func(p *etlv1.ETLPipeline)
		want   bool
	}{
		{"nothing", func(*etlv1.ETLPipeline) {}, false},
		{"runner progress", func(p *etlv1.ETLPipeline) {
			p.Status.Run.RowsRead, p.Status.Run.Batches = 100, 2
			p.Status.Checkpoint = &etlv1.CheckpointStatus{Values: []string{"x"}}
			p.ResourceVersion = "9"
		}, false},
		{"manager conditions", func(p *etlv1.ETLPipeline) {
			p.Status.Conditions = []metav1.Condition{{Type: etlv1.ConditionReady}}
		}, false},
		{"other annotation", func(p *etlv1.ETLPipeline) { p.Annotations = map[string]string{"x": "y"} }, false},
		{"generation", func(p *etlv1.ETLPipeline) { p.Generation++ }, true},
		{"run requested annotation", func(p *etlv1.ETLPipeline) {
			p.Annotations = map[string]string{etlv1.AnnotationRunRequestedAt: "now"}
		}, true},
		{"phase by the runner", func(p *etlv1.ETLPipeline) { p.Status.Phase = etlv1.PhaseIdle }, true},
		{"new run id", func(p *etlv1.ETLPipeline) { p.Status.Run.ID = "r2" }, true},
		{"deletion", func(p *etlv1.ETLPipeline) { now := metav1.Now(); p.DeletionTimestamp = &now }, true},
	}
	pred := PipelineChanged()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n := base.DeepCopy()
			tc.mutate(n)
			if got := pred.Update(event.UpdateEvent{ObjectOld: base, ObjectNew: n}); got != tc.want {
				t.Fatalf("predicate = %v, want %v", got, tc.want)
			}
		})
	}
	if !pred.Create(event.CreateEvent{Object: base}) {
		t.Fatal("a created pipeline must be reconciled")
	}
}

func TestJobToPipeline(t *testing.T) {
	p := newPipeline("team-a", strings.Repeat("long-name", 20), legacySpec())
	job, err := BuildRunnerJob(RunnerJobParams{Pipeline: p, Run: &etlv1.RunStatus{ID: "r1"}, Config: testConfig(), Namespace: "sluice-system"})
	if err != nil {
		t.Fatal(err)
	}
	reqs := jobToPipeline(t.Context(), job)
	if len(reqs) != 1 || reqs[0].Namespace != "team-a" || reqs[0].Name != p.Name {
		t.Fatalf("jobToPipeline = %v", reqs)
	}
	job.Labels[labelManagedBy] = "someone-else"
	if reqs := jobToPipeline(t.Context(), job); len(reqs) != 0 {
		t.Fatalf("a Job not managed by Sluice mapped to %v", reqs)
	}
}
