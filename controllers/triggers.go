package controllers

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/robfig/cron/v3"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

// parseSchedule parses spec.schedule with robfig/cron's standard parser: five fields, or a
// descriptor (@hourly, @daily, @every 10m, ...).
func parseSchedule(schedule string) (cron.Schedule, error) {
	s, err := cron.ParseStandard(schedule)
	if err != nil {
		return nil, fmt.Errorf("schedule %q: %w", schedule, err)
	}
	return s, nil
}

// pendingTrigger returns the run request waiting on p at now, "" when none. Several requests
// may wait at once (a spec change and an annotation during a run); they are served by one run,
// named after the first of: Resume, Created, SpecChanged, Annotation, Schedule.
//
// Each request is derived from state, never from an event, so a missed or repeated event
// cannot lose or double a run:
//   - Resume: desiredState is Running and the phase is Paused.
//   - Created: the pipeline was never reconciled (no phase, no run).
//   - SpecChanged: the generation is newer than the last run's (or, before any run, than the
//     last observed one); a pause or resume changes the generation too, so while paused the
//     request waits and the resume serves it.
//   - ReplayRejects: replay-rejects-requested-at differs from status.lastHandledReplayRequest:
//     the run reads the pipeline's rejected rows again before it runs as usual.
//   - Annotation: run-requested-at differs from status.lastHandledRunRequest.
//   - ConfigChanged: the pipeline is Failed for a spec problem (its Ready reason says which):
//     once the operator configuration no longer has it, the pipeline runs by itself.
//   - Schedule: status.nextScheduledRun is due.
func pendingTrigger(p *etlv1.ETLPipeline, now time.Time) etlv1.RunTrigger {
	st := &p.Status
	if st.Phase == etlv1.PhasePaused && p.Spec.DesiredState != etlv1.DesiredPaused {
		return etlv1.TriggerResume
	}
	if st.Phase == "" && st.Run == nil {
		return etlv1.TriggerCreated
	}
	handled := st.ObservedGeneration
	if st.Run != nil {
		handled = st.Run.Generation
	}
	if p.Generation > handled {
		return etlv1.TriggerSpecChanged
	}
	if v := p.Annotations[etlv1.AnnotationReplayRejectsRequestedAt]; v != "" && v != st.LastHandledReplayRequest {
		return etlv1.TriggerReplayRejects
	}
	if v := p.Annotations[etlv1.AnnotationRunRequestedAt]; v != "" && v != st.LastHandledRunRequest {
		return etlv1.TriggerAnnotation
	}
	if failedForSpec(st) {
		return etlv1.TriggerConfigChanged
	}
	if p.Spec.Schedule != "" && st.NextScheduledRun != nil && !now.Before(st.NextScheduledRun.Time) {
		return etlv1.TriggerSchedule
	}
	return ""
}

// scheduleWanted reports whether spec.schedule may start runs in phase: not while paused (the
// resume starts a run anyway) and not while failed for a business reason (a tick does not
// leave that Failed); after an infrastructure failure it does, backing off.
func scheduleWanted(p *etlv1.ETLPipeline, phase etlv1.Phase) bool {
	return p.Spec.Schedule != "" && p.Spec.DesiredState != etlv1.DesiredPaused &&
		phase != etlv1.PhasePaused && (phase != etlv1.PhaseFailed || infraFailed(&p.Status))
}

// failedForSpec reports whether the pipeline is Failed for a problem of its spec against the
// operator configuration rather than for a run's failure.
func failedForSpec(st *etlv1.ETLPipelineStatus) bool {
	if st.Phase != etlv1.PhaseFailed {
		return false
	}
	c := meta.FindStatusCondition(st.Conditions, etlv1.ConditionReady)
	if c == nil || c.Status != metav1.ConditionFalse {
		return false
	}
	return isSpecReason(c.Reason)
}

// infraFailed reports whether the pipeline is Failed by its last run's infrastructure error.
func infraFailed(st *etlv1.ETLPipelineStatus) bool {
	return st.Phase == etlv1.PhaseFailed && st.Run != nil && st.Run.ErrorClass == etlv1.ErrorInfra &&
		st.Run.CompletionTime != nil
}

// maxBackoffTicks caps how many ticks a failing pipeline lets pass between two attempts.
const maxBackoffTicks = 8

// backoffTick returns the tick at which a pipeline that failed with an infrastructure error at
// failedAt, its failures-th in a row, runs again: the next tick after one failure, the second
// after two, the fourth after three, ... at most the maxBackoffTicks-th. It is derived from
// the status alone, so it stays the same from pass to pass.
func backoffTick(sched cron.Schedule, failedAt time.Time, failures int32) time.Time {
	ticks := maxBackoffTicks
	if failures >= 1 && failures <= 4 {
		ticks = 1 << (failures - 1)
	}
	t := failedAt
	for range ticks {
		t = sched.Next(t)
		if t.IsZero() {
			break
		}
	}
	return t
}

// nextTick returns the value status.nextScheduledRun should hold at now: nil when the schedule
// cannot start runs, the current value while it stands, else the schedule's next tick.
//
// A stored tick stands while it is not later than the schedule's next tick from now: that keeps
// it stable across passes (no write per pass), lets a due tick wait for a run in flight, and
// moves it earlier when the schedule changed to tick sooner. started says a run was just
// started, which consumes the stored tick.
func nextTick(p *etlv1.ETLPipeline, phase etlv1.Phase, sched cron.Schedule, now time.Time, started bool) *metav1.Time {
	if sched == nil || !scheduleWanted(p, phase) {
		return nil
	}
	if phase == etlv1.PhaseFailed {
		t := backoffTick(sched, p.Status.Run.CompletionTime.Time, p.Status.ConsecutiveFailures)
		if t.IsZero() {
			return nil
		}
		mt := metav1.NewTime(t.Truncate(time.Second))
		return &mt
	}
	next := sched.Next(now)
	if next.IsZero() {
		return nil // a schedule that never fires again (a date in the past)
	}
	cur := p.Status.NextScheduledRun
	if cur != nil && !started && !cur.After(next) {
		return cur
	}
	t := metav1.NewTime(next.Truncate(time.Second))
	return &t
}

// maxJitter bounds the jitter added to a requeue for a schedule tick.
const maxJitter = 5 * time.Second

// jitter returns d plus up to 5% of it (at most maxJitter), so that pipelines sharing a
// schedule do not start their Jobs in the same instant. It never shortens d: an early pass
// would find the tick not yet due.
func jitter(d time.Duration) time.Duration {
	spread := min(d/20, maxJitter)
	if spread <= 0 {
		return d
	}
	return d + rand.N(spread) //nolint:gosec // spreading load needs no cryptographic randomness
}
