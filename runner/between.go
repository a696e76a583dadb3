package runner

import (
	"context"
	"fmt"
	"time"

	"github.com/sluice-dev/sluice/runner/failure"
	"github.com/sluice-dev/sluice/runner/state"
	"github.com/sluice-dev/sluice/runner/status"
)

// between runs between batches: progress every ProgressInterval, and a look at the pipeline
// every CheckInterval for a pause or a cancellation.
func (e *executor) between(ctx context.Context, s *session) (Result, bool, error) {
	now := time.Now()
	if now.Sub(e.lastProgress) >= e.opts.ProgressInterval {
		e.progress(ctx, s)
	}
	if now.Sub(e.lastCheck) < e.opts.CheckInterval {
		return Result{}, false, nil
	}
	sig, err := e.check(ctx)
	if err != nil {
		// The data plane does not stop for an unreachable API server; the next check retries.
		e.log.Warn("cannot read the pipeline", "error", e.scrub.scrub(err.Error()))
		return Result{}, false, nil
	}
	switch sig {
	case status.Pause:
		// Batches in flight complete first: the pause comes after a committed batch.
		e.stopPrefetch()
		if err := e.drain(ctx, s); err != nil {
			return Result{}, false, err
		}
		return e.pause(ctx, s), true, nil
	case status.Stop:
		e.stopPrefetch()
		if err := s.store.Finish(ctx, e.epoch, e.p.RunID, state.End{Outcome: state.OutcomeCancelled}); err != nil {
			e.log.Warn("cannot record the cancelled run", "error", e.scrub.scrub(err.Error()))
		}
		return e.fenced(fmt.Errorf("run %s is no longer the pipeline's active run: %w", e.p.RunID, failure.ErrFenced)), true, nil
	}
	return Result{}, false, nil
}

// statusTimeout bounds one call to the reporter, so that a hanging API server cannot stall
// the data plane.
const statusTimeout = 10 * time.Second

func (e *executor) check(ctx context.Context) (status.Signal, error) {
	cctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	e.lastCheck = time.Now()
	return e.rep.Check(cctx)
}

func (e *executor) progressNow() status.Progress {
	return status.Progress{RowsRead: e.rowsRead, RowsWritten: e.rowsWritten, Batches: e.batches,
		RowsDeleted: e.rowsDeleted, RowsSwept: e.rowsSwept,
		RowsRejected: e.rowsRejected, RejectsReplayed: e.rejectsReplayed,
		Checkpoint: e.after, CheckpointTime: e.checkpointTime, Conditions: e.conditions, Cleared: e.cleared,
		Replication: e.replicationStatus()}
}

func (e *executor) progress(ctx context.Context, s *session) {
	e.lastProgress = time.Now()
	// The first report carries the conditions set when the session opened. A CDC run reports
	// on: its look at the slot is its progress while it streams an idle table.
	if e.batches == 0 && e.reported && e.cdc == nil {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	if err := e.rep.Progress(cctx, e.progressNow()); err != nil {
		e.log.Warn("cannot report progress", "error", e.scrub.scrub(err.Error()))
	}
	e.reported = true
	if !e.opts.CheckpointAtEnd {
		if err := s.store.Sync(ctx, e.epoch, e.p.RunID); err != nil {
			e.log.Warn("cannot record progress in etl_runs", "error", e.scrub.scrub(err.Error()))
		}
	}
	e.log.Info("progress", "rowsRead", e.rowsRead, "rowsWritten", e.rowsWritten, "batches", e.batches, "checkpoint", e.after)
}
