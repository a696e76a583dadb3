package controllers

import (
	"fmt"
	"testing"
	"time"

	"github.com/robfig/cron/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

func TestPendingTrigger(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	past, future := metav1.NewTime(now.Add(-time.Second)), metav1.NewTime(now.Add(time.Minute))
	run := func(gen int64) *etlv1.RunStatus { return &etlv1.RunStatus{ID: "r", Generation: gen} }
	cases := []struct {
		name   string
		mutate func(p *etlv1.ETLPipeline)
		want   etlv1.RunTrigger
	}{
		{"new pipeline", func(*etlv1.ETLPipeline) {}, etlv1.TriggerCreated},
		{"at rest", func(p *etlv1.ETLPipeline) {
			p.Status = etlv1.ETLPipelineStatus{Phase: etlv1.PhaseIdle, Run: run(1), ObservedGeneration: 1}
		}, ""},
		{"spec changed since the last run", func(p *etlv1.ETLPipeline) {
			p.Generation = 2
			p.Status = etlv1.ETLPipelineStatus{Phase: etlv1.PhaseIdle, Run: run(1), ObservedGeneration: 2}
		}, etlv1.TriggerSpecChanged},
		{"spec changed during the run waits in the state", func(p *etlv1.ETLPipeline) {
			p.Generation = 3
			p.Status = etlv1.ETLPipelineStatus{Phase: etlv1.PhaseRunning, Run: run(2), ObservedGeneration: 3}
		}, etlv1.TriggerSpecChanged},
		{"fixed spec after a failure without any run", func(p *etlv1.ETLPipeline) {
			p.Generation = 2
			p.Status = etlv1.ETLPipelineStatus{Phase: etlv1.PhaseFailed, ObservedGeneration: 1}
		}, etlv1.TriggerSpecChanged},
		{"annotation new", func(p *etlv1.ETLPipeline) {
			p.Annotations = map[string]string{etlv1.AnnotationRunRequestedAt: "b"}
			p.Status = etlv1.ETLPipelineStatus{Phase: etlv1.PhaseIdle, Run: run(1), LastHandledRunRequest: "a"}
		}, etlv1.TriggerAnnotation},
		{"annotation handled", func(p *etlv1.ETLPipeline) {
			p.Annotations = map[string]string{etlv1.AnnotationRunRequestedAt: "a"}
			p.Status = etlv1.ETLPipelineStatus{Phase: etlv1.PhaseIdle, Run: run(1), LastHandledRunRequest: "a"}
		}, ""},
		{"replay requested", func(p *etlv1.ETLPipeline) {
			p.Annotations = map[string]string{etlv1.AnnotationReplayRejectsRequestedAt: "r1"}
			p.Status = etlv1.ETLPipelineStatus{Phase: etlv1.PhaseIdle, Run: run(1)}
		}, etlv1.TriggerReplayRejects},
		{"replay handled", func(p *etlv1.ETLPipeline) {
			p.Annotations = map[string]string{etlv1.AnnotationReplayRejectsRequestedAt: "r1"}
			p.Status = etlv1.ETLPipelineStatus{Phase: etlv1.PhaseIdle, Run: run(1), LastHandledReplayRequest: "r1"}
		}, ""},
		{"replay wins over a run request, which it serves too", func(p *etlv1.ETLPipeline) {
			p.Annotations = map[string]string{etlv1.AnnotationReplayRejectsRequestedAt: "r2", etlv1.AnnotationRunRequestedAt: "b"}
			p.Status = etlv1.ETLPipelineStatus{Phase: etlv1.PhaseIdle, Run: run(1), LastHandledReplayRequest: "r1"}
		}, etlv1.TriggerReplayRejects},
		{"replay leaves a failed pipeline", func(p *etlv1.ETLPipeline) {
			p.Annotations = map[string]string{etlv1.AnnotationReplayRejectsRequestedAt: "r1"}
			p.Status = etlv1.ETLPipelineStatus{Phase: etlv1.PhaseFailed, Run: run(1)}
		}, etlv1.TriggerReplayRejects},
		{"schedule due", func(p *etlv1.ETLPipeline) {
			p.Spec.Schedule = "@hourly"
			p.Status = etlv1.ETLPipelineStatus{Phase: etlv1.PhaseIdle, Run: run(1), NextScheduledRun: &past}
		}, etlv1.TriggerSchedule},
		{"schedule not yet due", func(p *etlv1.ETLPipeline) {
			p.Spec.Schedule = "@hourly"
			p.Status = etlv1.ETLPipelineStatus{Phase: etlv1.PhaseIdle, Run: run(1), NextScheduledRun: &future}
		}, ""},
		{"schedule removed", func(p *etlv1.ETLPipeline) {
			p.Status = etlv1.ETLPipelineStatus{Phase: etlv1.PhaseIdle, Run: run(1), NextScheduledRun: &past}
		}, ""},
		{"resume", func(p *etlv1.ETLPipeline) {
			p.Generation = 3
			p.Status = etlv1.ETLPipelineStatus{Phase: etlv1.PhasePaused, Run: run(1)}
		}, etlv1.TriggerResume},
		{"paused stays paused", func(p *etlv1.ETLPipeline) {
			p.Spec.DesiredState = etlv1.DesiredPaused
			p.Generation = 2
			p.Status = etlv1.ETLPipelineStatus{Phase: etlv1.PhasePaused, Run: run(1)}
		}, etlv1.TriggerSpecChanged},
		{"resume wins over everything", func(p *etlv1.ETLPipeline) {
			p.Generation = 5
			p.Annotations = map[string]string{etlv1.AnnotationRunRequestedAt: "new"}
			p.Status = etlv1.ETLPipelineStatus{Phase: etlv1.PhasePaused, Run: run(1)}
		}, etlv1.TriggerResume},
		{"spec change wins over annotation", func(p *etlv1.ETLPipeline) {
			p.Generation = 2
			p.Annotations = map[string]string{etlv1.AnnotationRunRequestedAt: "new"}
			p.Status = etlv1.ETLPipelineStatus{Phase: etlv1.PhaseIdle, Run: run(1)}
		}, etlv1.TriggerSpecChanged},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newPipeline("ns", "p", legacySpec())
			tc.mutate(p)
			if got := pendingTrigger(p, now); got != tc.want {
				t.Fatalf("pendingTrigger = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestNextTick(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 7, 30, 0, time.UTC)
	at := func(h, m, s int) *metav1.Time {
		v := metav1.NewTime(time.Date(2025, 6, 1, h, m, s, 0, time.UTC))
		return &v
	}
	cases := []struct {
		name     string
		schedule string
		desired  etlv1.DesiredState
		phase    etlv1.Phase
		stored   *metav1.Time
		started  bool
		want     *metav1.Time
	}{
		{"first tick", "*/15 * * * *", etlv1.DesiredRunning, etlv1.PhaseIdle, nil, false, at(12, 15, 0)},
		{"stored tick stands", "*/15 * * * *", etlv1.DesiredRunning, etlv1.PhaseIdle, at(12, 15, 0), false, at(12, 15, 0)},
		{"due tick waits for the run in flight", "*/15 * * * *", etlv1.DesiredRunning, etlv1.PhaseRunning, at(12, 0, 0), false, at(12, 0, 0)},
		{"a started run consumes the tick", "*/15 * * * *", etlv1.DesiredRunning, etlv1.PhaseRunRequested, at(12, 0, 0), true, at(12, 15, 0)},
		{"schedule changed to tick sooner", "*/5 * * * *", etlv1.DesiredRunning, etlv1.PhaseIdle, at(12, 15, 0), false, at(12, 10, 0)},
		{"every", "@every 2s", etlv1.DesiredRunning, etlv1.PhaseIdle, nil, false, at(12, 7, 32)},
		{"no schedule", "", etlv1.DesiredRunning, etlv1.PhaseIdle, at(12, 15, 0), false, nil},
		{"paused", "*/15 * * * *", etlv1.DesiredPaused, etlv1.PhasePaused, at(12, 15, 0), false, nil},
		{"pausing", "*/15 * * * *", etlv1.DesiredPaused, etlv1.PhasePauseRequested, at(12, 15, 0), false, nil},
		{"failed", "*/15 * * * *", etlv1.DesiredRunning, etlv1.PhaseFailed, at(12, 15, 0), false, nil},
	}
	// After infrastructure failures the tick backs off from the failure's time (12:07:30).
	for _, b := range []struct {
		failures int32
		want     *metav1.Time
	}{
		{1, at(12, 15, 0)}, {2, at(12, 30, 0)}, {3, at(13, 0, 0)}, {4, at(14, 0, 0)}, {5, at(14, 0, 0)}, {40, at(14, 0, 0)},
	} {
		t.Run(fmt.Sprintf("after %d infra failures", b.failures), func(t *testing.T) {
			p := newPipeline("ns", "p", legacySpec())
			p.Spec.Schedule = "*/15 * * * *"
			p.Status.Phase = etlv1.PhaseFailed
			p.Status.ConsecutiveFailures = b.failures
			p.Status.Run = &etlv1.RunStatus{ID: "r", ErrorClass: etlv1.ErrorInfra, CompletionTime: &metav1.Time{Time: now}}
			sched, _ := parseSchedule(p.Spec.Schedule)
			got := nextTick(p, etlv1.PhaseFailed, sched, now.Add(time.Hour), false)
			if got == nil || !got.Equal(b.want) {
				t.Fatalf("nextTick = %v, want %v", got, b.want)
			}
			p.Status.Run.ErrorClass = etlv1.ErrorBusiness
			if got := nextTick(p, etlv1.PhaseFailed, sched, now, false); got != nil {
				t.Fatalf("after a business failure nextTick = %v, want nil", got)
			}
		})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newPipeline("ns", "p", legacySpec())
			p.Spec.Schedule, p.Spec.DesiredState = tc.schedule, tc.desired
			p.Status.NextScheduledRun = tc.stored
			var sched cron.Schedule
			if tc.schedule != "" {
				s, err := parseSchedule(tc.schedule)
				if err != nil {
					t.Fatal(err)
				}
				sched = s
			}
			got := nextTick(p, tc.phase, sched, now, tc.started)
			switch {
			case tc.want == nil && got != nil:
				t.Fatalf("nextTick = %v, want nil", got)
			case tc.want != nil && (got == nil || !got.Equal(tc.want)):
				t.Fatalf("nextTick = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestJitter(t *testing.T) {
	for _, d := range []time.Duration{0, time.Millisecond, 2 * time.Second, time.Hour} {
		for range 100 {
			got := jitter(d)
			if got < d || got > d+min(d/20, maxJitter) {
				t.Fatalf("jitter(%v) = %v", d, got)
			}
		}
	}
}
