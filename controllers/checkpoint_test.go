package controllers

import (
	"strings"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

func TestCheckpointRefusal(t *testing.T) {
	paused := func(mode etlv1.Mode) *etlv1.ETLPipeline {
		p := newPipeline("ns", "p", legacySpec())
		p.Spec.Mode, p.Spec.DesiredState = mode, etlv1.DesiredPaused
		p.Status.Phase = etlv1.PhasePaused
		return p
	}
	reset := etlv1.CheckpointRequest{ID: "1", Action: etlv1.CheckpointReset}
	set := etlv1.CheckpointRequest{ID: "1", Action: etlv1.CheckpointSet, Values: []string{"2025-06-01 00:00:00+00", "42"}}
	cases := []struct {
		name   string
		p      func() *etlv1.ETLPipeline
		req    etlv1.CheckpointRequest
		refuse string
	}{
		{"reset while paused", func() *etlv1.ETLPipeline { return paused(etlv1.ModeIncremental) }, reset, ""},
		{"set while paused", func() *etlv1.ETLPipeline { return paused(etlv1.ModeIncremental) }, set, ""},
		{"reset of a paused Full pipeline", func() *etlv1.ETLPipeline { return paused(etlv1.ModeFull) }, reset, ""},
		{"running", func() *etlv1.ETLPipeline {
			p := paused(etlv1.ModeIncremental)
			p.Status.Phase, p.Spec.DesiredState = etlv1.PhaseRunning, etlv1.DesiredRunning
			return p
		}, reset, "the pipeline is Running"},
		{"pausing: not Paused yet", func() *etlv1.ETLPipeline {
			p := paused(etlv1.ModeIncremental)
			p.Status.Phase = etlv1.PhasePauseRequested
			return p
		}, reset, "the pipeline is PauseRequested"},
		{"paused but being resumed", func() *etlv1.ETLPipeline {
			p := paused(etlv1.ModeIncremental)
			p.Spec.DesiredState = etlv1.DesiredRunning
			return p
		}, reset, "the pipeline is Paused"},
		{"never reconciled", func() *etlv1.ETLPipeline {
			p := paused(etlv1.ModeIncremental)
			p.Status.Phase = ""
			return p
		}, reset, "the pipeline is new"},
		{"set of a Full pipeline", func() *etlv1.ETLPipeline { return paused(etlv1.ModeFull) }, set, "applies to an Incremental pipeline"},
		{"reset of a paused CDC pipeline", func() *etlv1.ETLPipeline { return paused(etlv1.ModeCDC) }, reset, ""},
		{"set of a CDC pipeline", func() *etlv1.ETLPipeline { return paused(etlv1.ModeCDC) }, set, "a CDC pipeline's checkpoint is its replication slot's position"},
		{"set without values", func() *etlv1.ETLPipeline { return paused(etlv1.ModeIncremental) },
			etlv1.CheckpointRequest{ID: "1", Action: etlv1.CheckpointSet}, "needs the checkpoint's values"},
		{"reset with values", func() *etlv1.ETLPipeline { return paused(etlv1.ModeIncremental) },
			etlv1.CheckpointRequest{ID: "1", Action: etlv1.CheckpointReset, Values: []string{"x"}}, "takes no values"},
		{"unknown action", func() *etlv1.ETLPipeline { return paused(etlv1.ModeIncremental) },
			etlv1.CheckpointRequest{ID: "1", Action: "Rewind"}, `unknown action "Rewind"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := CheckpointRefusal(tc.p(), tc.req)
			if (tc.refuse == "") != (got == "") || !strings.Contains(got, tc.refuse) {
				t.Fatalf("refusal %q, want one containing %q", got, tc.refuse)
			}
		})
	}
}

func TestParseCheckpointRequest(t *testing.T) {
	for _, tc := range []struct {
		raw, err string
	}{
		{`{"id":"a","action":"Reset"}`, ""},
		{`{"action":"Reset"}`, "has no id"},
		{`reset please`, "is not a checkpoint request"},
	} {
		if _, err := parseCheckpointRequest(tc.raw); (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: error %v, want %q", tc.raw, err, tc.err)
		}
	}
}

// TestBuildCheckpointJob: the request's Job runs the pipeline's runner with --checkpoint and
// the request, without a token, and is kept by the history's pruning while it matters.
func TestBuildCheckpointJob(t *testing.T) {
	p := newPipeline("ns", "p", legacySpec())
	p.Spec.DesiredState = etlv1.DesiredPaused
	cfg := testConfig()
	job, err := BuildCheckpointJob(p, cfg, "sluice-system", etlv1.CheckpointRequest{ID: "r1", Action: etlv1.CheckpointReset}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	pod := job.Spec.Template.Spec
	c := pod.Containers[0]
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	if pod.ServiceAccountName != "" || pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken ||
		!strings.Contains(strings.Join(c.Args, " "), "--checkpoint") || env[configv1.EnvCheckpointRequestedBy] != "alice" ||
		!strings.Contains(env[configv1.EnvCheckpointRequest], `"action":"Reset"`) || env[configv1.EnvSpec] == "" {
		t.Fatalf("checkpoint job: account %q, token %v, args %v, env %v", pod.ServiceAccountName, pod.AutomountServiceAccountToken, c.Args, env)
	}
	if !isCheckpointJob(job) {
		t.Fatalf("the job %s is not recognized as a checkpoint job", job.Name)
	}
	done := *job
	done.Status.Conditions = []batchv1.JobCondition{{Type: batchv1.JobComplete, Status: "True"}}
	done.CreationTimestamp = metav1.Now()
	if pruned := jobsToPrune([]batchv1.Job{done}, "other", 0, 0); len(pruned) != 0 {
		t.Fatalf("the history prunes the checkpoint job: %v", pruned)
	}
}
