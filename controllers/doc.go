// Package controllers holds the ETLPipeline reconciler: the control plane of Sluice. It
// validates pipelines against the operator configuration, drives the phase state machine
// (NextPhase) and starts one runner Job per run (BuildRunnerJob) in the operator's namespace.
// It never touches data.
//
// # The status contract between the manager and the runner
//
// Both write status.phase; each owns its own transitions and fields, and every write that
// decides a transition is guarded by the resourceVersion its writer read (a merge patch
// carrying metadata.resourceVersion, or an Update of a freshly read object), so a write based
// on a stale view fails with a conflict instead of overwriting the other side.
//
// The manager writes:
//   - phase RunRequested (a new run), PauseRequested, Paused when no run is active (a pause
//     at rest, or the cancellation of a run not yet claimed), and Failed for a bad spec or a
//     Job that ended without a runner report;
//   - run.id, run.jobName, run.trigger, run.generation, run.startTime when it requests a run
//     (the whole run object is replaced, which resets the previous run's counters);
//   - the conditions, observedGeneration, nextScheduledRun and lastHandledRunRequest;
//   - run.completionTime, run.errorClass and run.message only when it closes a run the runner
//     can no longer report (its Job failed, completed or vanished without a report).
//
// The runner (SLUICE_RUN_ID = R) writes:
//   - the claim: phase RunRequested -> Running, only when status.run.id == R, and nothing else
//     in that write. A replacement pod of the same run finds Running (or PauseRequested) with
//     run.id == R and carries on without a claim write. Any other state (another run id, or
//     Paused, Idle, Failed) means the run was cancelled or superseded: exit without writing,
//     with ExitFenced;
//   - progress: run.rowsRead, run.rowsWritten, run.batches and checkpoint, after each
//     committed batch, re-checking run.id == R; the manager ignores progress-only changes;
//   - between batches, when it reads phase PauseRequested: phase Paused with
//     run.completionTime, then exit 0;
//   - the end: phase Idle (done) or Failed (run.errorClass, run.message), with
//     run.completionTime, from Running or PauseRequested, then exit (0, or ExitBusiness).
//
// On a conflict either side re-reads and decides again. The manager reacts to phase and
// run.id changes only; it starts a waiting run as soon as the runner reports the end.
// A run at rest with no run.completionTime was cancelled before its claim: its Job, if still
// active, is deleted.
package controllers
