package runner

import (
	"context"
	"fmt"
	"time"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/failure"
	"github.com/sluice-dev/sluice/runner/state"
	"github.com/sluice-dev/sluice/runner/status"
)

// pause ends the run after its last committed batch.
func (e *executor) pause(ctx context.Context, s *session) Result {
	e.stopPrefetch()
	if err := e.flushPending(ctx, s); err != nil {
		if failure.IsFenced(err) {
			return e.fenced(err)
		}
		e.log.Warn("cannot commit the checkpoint before pausing", "error", e.scrub.scrub(err.Error()))
	}
	if err := s.store.Finish(ctx, e.epoch, e.p.RunID, state.End{Outcome: state.OutcomePaused, RejectsReplayed: e.rejectsReplayed}); err != nil {
		if failure.IsFenced(err) {
			return e.fenced(err)
		}
		e.log.Warn("cannot record the paused run", "error", e.scrub.scrub(err.Error()))
	}
	unresolved := e.endRejects(ctx, s)
	e.report(ctx, status.End{Phase: etlv1.PhasePaused, Progress: e.progressNow(), Time: time.Now(), UnresolvedRejects: unresolved,
		RecentRejects: e.recentRejects})
	e.log.Info("run paused", "checkpoint", e.after)
	return Result{Outcome: OutcomePaused, ExitCode: configv1.ExitOK}
}

// complete closes a caught-up run in the state database: a last look for rows the keyset
// predicate can never reach (a NULL cursor), the deferred checkpoint, the etl_runs row and, for
// a full run, the reset of its checkpoint.
func (e *executor) complete(ctx context.Context, s *session) error {
	if err := e.drain(ctx, s); err != nil {
		return err
	}
	key, found, err := s.reader.FindNull(ctx)
	if err != nil {
		return err
	}
	if found {
		role := "key"
		if e.pl.cursor != "" {
			role = "cursor column " + e.pl.cursor
		}
		return failure.Business(fmt.Errorf("source row (%s) has a NULL %s (or an infinite time): it lies below no read horizon, so it would never be read", key, role))
	}
	if err := e.flushPending(ctx, s); err != nil {
		return err
	}
	// The ratio of spec.errors is judged on the whole run too.
	if err := e.tolerate(nil, 0, true); err != nil {
		return err
	}
	if err := e.finishMirror(ctx, s); err != nil {
		return err
	}
	if err := s.store.Finish(ctx, e.epoch, e.p.RunID, state.End{Outcome: state.OutcomeSucceeded,
		ResetFull: e.pl.mode == etlv1.ModeFull, RowsSwept: e.rowsSwept, RejectsReplayed: e.rejectsReplayed}); err != nil {
		return err
	}
	e.doneMirror(ctx, s)
	e.unresolvedAtEnd = e.endRejects(ctx, s)
	return nil
}

// finished reports a completed run.
func (e *executor) finished(ctx context.Context) Result {
	end := status.End{Phase: etlv1.PhaseIdle, Progress: e.progressNow(), Time: time.Now(), UnresolvedRejects: e.unresolvedAtEnd,
		RecentRejects: e.recentRejects}
	if e.pl.mode == etlv1.ModeFull {
		end.ClearCheckpoint = true
		end.Checkpoint = nil
	}
	e.report(ctx, end)
	e.log.Info("run completed", "rowsRead", e.rowsRead, "rowsWritten", e.rowsWritten, "batches", e.batches)
	return Result{Outcome: OutcomeIdle, ExitCode: configv1.ExitOK}
}

// fail ends the run on err: a business error, or an infrastructure error past its retries.
func (e *executor) fail(ctx context.Context, s *session, err error) Result {
	class := failure.Classify(err)
	msg := e.outgoing(err)
	code := configv1.ExitBusiness
	if class == etlv1.ErrorInfra {
		code = configv1.ExitInfra
		if e.pl != nil && e.pl.retry.attempts > 0 {
			msg = fmt.Sprintf("%s (after %d retries)", msg, e.pl.retry.attempts)
		}
	}
	e.log.Error("run failed", "errorClass", class, "error", msg)
	var unresolved *int64
	if e.claimed {
		e.recordFailure(ctx, s, class, msg)
		unresolved = e.endRejects(ctx, s)
	}
	e.report(ctx, status.End{Phase: etlv1.PhaseFailed, Progress: e.progressNow(), ErrorClass: class, Message: msg, Time: time.Now(),
		UnresolvedRejects: unresolved, RecentRejects: e.recentRejects})
	return Result{Outcome: OutcomeFailed, ExitCode: code, ErrorClass: class, Message: msg}
}

// recordFailure closes the etl_runs row of a failed run, on a fresh connection when the
// failure took the session's down. It is bookkeeping: its own failure is only logged.
func (e *executor) recordFailure(ctx context.Context, s *session, class etlv1.ErrorClass, msg string) {
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	var store *state.Store
	if s != nil && !s.state.IsClosed() {
		store = s.store
	} else {
		conn, err := connect(cctx, e.pl.stateConn, e.pl.dsns[e.pl.stateConn], appName(e.p.Pipeline), false, e.pl.session)
		if err != nil {
			e.log.Warn("cannot record the failed run", "error", e.scrub.scrub(err.Error()))
			return
		}
		defer func() { _ = conn.Close(context.Background()) }() //nolint:contextcheck // closing must work after the run's context ended
		store = state.New(conn, e.p.Pipeline)
	}
	end := state.End{Outcome: state.OutcomeFailed, ErrorClass: class, Error: msg, RejectsReplayed: e.rejectsReplayed}
	if err := store.Finish(cctx, e.epoch, e.p.RunID, end); err != nil {
		e.log.Warn("cannot record the failed run", "error", e.scrub.scrub(err.Error()))
	}
}

// report writes the run's end to the status; a failure to do so is logged, the exit code
// still tells the Job what happened.
func (e *executor) report(ctx context.Context, end status.End) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	if err := e.rep.Finish(cctx, end); err != nil {
		e.log.Error("cannot report the end of the run", "phase", end.Phase, "error", e.scrub.scrub(err.Error()))
	}
}

// fenced ends a runner that does not own the run: nothing more is written anywhere.
func (e *executor) fenced(err error) Result {
	msg := e.outgoing(err)
	e.log.Warn("not this runner's run: stopping without writing", "reason", msg)
	return Result{Outcome: OutcomeFenced, ExitCode: configv1.ExitFenced, Message: msg}
}
