package controllers

import (
	"errors"
	"fmt"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

// JobOutcome is what the Job of the current run says, judged by its Complete and Failed
// conditions (never by its counters).
type JobOutcome string

const (
	// JobAbsent means no Job of the current run exists (not created yet, or deleted).
	JobAbsent JobOutcome = "Absent"
	// JobActive means the Job exists and has neither a Complete nor a Failed condition.
	JobActive JobOutcome = "Active"
	// JobSucceeded means the Job has the Complete condition (its runner exited 0).
	JobSucceeded JobOutcome = "Succeeded"
	// JobFailed means the Job has the Failed condition (backoff exhausted, or a FailJob exit code).
	JobFailed JobOutcome = "Failed"
)

// RunnerReport is a phase write the runner asks for. The manager never reports; it sees the
// runner's reports as status.phase. Modelling them here keeps both halves of the contract in
// one table.
type RunnerReport string

const (
	// ReportNone means the input is the manager's view; no runner write is being judged.
	ReportNone RunnerReport = ""
	// ReportClaim means the runner claims the run (RunRequested -> Running).
	ReportClaim RunnerReport = "Claim"
	// ReportIdle means the run finished.
	ReportIdle RunnerReport = "Idle"
	// ReportPaused means the runner stopped between batches because a pause was requested.
	ReportPaused RunnerReport = "Paused"
	// ReportFailed means the run failed (a business error, or infrastructure errors past retries).
	ReportFailed RunnerReport = "Failed"
)

// PhaseInput is everything the next phase depends on.
type PhaseInput struct {
	// Phase is the current status.phase ("" for a pipeline never reconciled).
	Phase etlv1.Phase
	// Desired is spec.desiredState.
	Desired etlv1.DesiredState
	// Request is the pending run request, "" when none (see pendingTrigger).
	Request etlv1.RunTrigger
	// SpecProblem is true when the spec is invalid, names an unknown connection or a target
	// outside the whitelist: no new run may start.
	SpecProblem bool
	// Job is the outcome of the current run's Job.
	Job JobOutcome
	// Report is the runner's write being judged, ReportNone for the manager's decision.
	Report RunnerReport
	// InfraFailure is true when the last run failed with an infrastructure error: a schedule
	// tick may then leave Failed (the database may be back), a business failure waits for a
	// change.
	InfraFailure bool
	// StartExpired is true when a requested run's runner has not claimed it within
	// runner.startDeadline.
	StartExpired bool
}

// ErrTransitionRefused is returned (wrapped) by NextPhase when the input asks for a move the
// state machine does not allow. The phase then stays as it is; a runner must not write it.
var ErrTransitionRefused = errors.New("transition refused")

func refuse(from etlv1.Phase, why string) (etlv1.Phase, error) {
	return from, fmt.Errorf("%w: from %q: %s", ErrTransitionRefused, from, why)
}

// isActive reports whether a run is in flight: requested, claimed, or asked to pause.
func isActive(p etlv1.Phase) bool {
	return p == etlv1.PhaseRunRequested || p == etlv1.PhaseRunning || p == etlv1.PhasePauseRequested
}

// explicitRequest reports whether a trigger may take a pipeline out of Failed: a new spec
// generation (a resume is one too) or a run-requested-at annotation. A schedule tick may not,
// or a failing pipeline would fail again at every tick.
func explicitRequest(t etlv1.RunTrigger) bool {
	return t == etlv1.TriggerSpecChanged || t == etlv1.TriggerAnnotation || t == etlv1.TriggerResume ||
		t == etlv1.TriggerConfigChanged || t == etlv1.TriggerReplayRejects
}

// NextPhase is the pipeline's state machine: it returns the phase that follows in. It is pure
// and total: every input yields either a phase (possibly the current one: nothing to do) or
// ErrTransitionRefused with the current phase.
//
// The manager's moves (Report == ReportNone):
//   - Idle (or new): a spec problem -> Failed; desiredState Paused -> Paused; a run request ->
//     RunRequested.
//   - RunRequested: its Job ended before any claim, or its pod did not start within the
//     start deadline -> Failed; Paused -> Paused (the unclaimed
//     Job is then deleted); a spec problem while no Job exists yet -> Failed (no Job is ever
//     created for a bad spec). A new request waits for the run's end.
//   - Running: its Job ended or vanished without a runner report -> Failed; Paused ->
//     PauseRequested (the runner stops after its batch and reports Paused).
//   - PauseRequested: its Job failed -> Failed; ended or vanished -> Paused (the user wanted it
//     stopped and the checkpoint is safe).
//   - Paused: a spec problem -> Failed; desiredState Running -> RunRequested (resume).
//   - Failed: an explicit request (new spec generation, annotation) leaves it, to
//     RunRequested, or to Paused when desiredState is Paused; a schedule tick leaves it only
//     after an infrastructure failure (which passes with time), else it is refused.
//
// The runner's moves (Report != ReportNone): claim RunRequested -> Running (re-claiming
// Running or PauseRequested by a replacement pod changes nothing); end Running or
// PauseRequested -> Idle or Failed; PauseRequested -> Paused; RunRequested -> Failed when it
// fails before it could claim. Anything else is refused, and the runner stops without writing.
func NextPhase(in PhaseInput) (etlv1.Phase, error) {
	if in.Report != ReportNone {
		return runnerNext(in.Phase, in.Report)
	}
	from := in.Phase
	paused := in.Desired == etlv1.DesiredPaused
	switch from {
	case "", etlv1.PhaseIdle:
		switch {
		case in.SpecProblem:
			return etlv1.PhaseFailed, nil
		case paused:
			return etlv1.PhasePaused, nil
		case in.Request != "":
			return etlv1.PhaseRunRequested, nil
		}
		return from, nil
	case etlv1.PhaseRunRequested:
		switch {
		case in.Job == JobFailed || in.Job == JobSucceeded:
			// A runner that exits, even with 0, before claiming never ran the run.
			return etlv1.PhaseFailed, nil
		case paused:
			return etlv1.PhasePaused, nil
		case in.StartExpired && in.Job == JobActive:
			// Its pod never started: the run fails rather than waiting forever.
			return etlv1.PhaseFailed, nil
		case in.SpecProblem && in.Job == JobAbsent:
			return etlv1.PhaseFailed, nil
		}
		return from, nil // waiting for the claim; a new request waits for the run's end
	case etlv1.PhaseRunning:
		switch {
		case in.Job != JobActive:
			return etlv1.PhaseFailed, nil
		case paused:
			return etlv1.PhasePauseRequested, nil
		}
		return from, nil
	case etlv1.PhasePauseRequested:
		switch in.Job {
		case JobFailed:
			return etlv1.PhaseFailed, nil
		case JobSucceeded, JobAbsent:
			return etlv1.PhasePaused, nil
		}
		// Resuming before the runner paused waits for Paused, then starts a Resume run.
		return from, nil
	case etlv1.PhasePaused:
		switch {
		case in.SpecProblem:
			return etlv1.PhaseFailed, nil
		case !paused:
			return etlv1.PhaseRunRequested, nil
		}
		return from, nil
	case etlv1.PhaseFailed:
		switch {
		case in.SpecProblem || in.Request == "":
			return from, nil
		case !explicitRequest(in.Request) && !retryTick(in):
			return refuse(from, fmt.Sprintf("a %s request does not leave Failed; change the spec or set %s", in.Request, etlv1.AnnotationRunRequestedAt))
		case paused:
			return etlv1.PhasePaused, nil
		}
		return etlv1.PhaseRunRequested, nil
	}
	return refuse(from, "unknown phase")
}

// retryTick reports whether a schedule tick retries a run that failed with an
// infrastructure error.
func retryTick(in PhaseInput) bool { return in.Request == etlv1.TriggerSchedule && in.InfraFailure }

func runnerNext(from etlv1.Phase, report RunnerReport) (etlv1.Phase, error) {
	switch report {
	case ReportClaim:
		switch from {
		case etlv1.PhaseRunRequested:
			return etlv1.PhaseRunning, nil
		case etlv1.PhaseRunning, etlv1.PhasePauseRequested:
			return from, nil // a replacement pod of the same run carries on
		}
	case ReportIdle:
		if from == etlv1.PhaseRunning || from == etlv1.PhasePauseRequested {
			return etlv1.PhaseIdle, nil
		}
	case ReportPaused:
		if from == etlv1.PhasePauseRequested {
			return etlv1.PhasePaused, nil
		}
	case ReportFailed:
		if isActive(from) {
			return etlv1.PhaseFailed, nil
		}
	}
	return refuse(from, fmt.Sprintf("the runner may not report %s", report))
}
