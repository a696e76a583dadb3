package runner

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sluice-dev/sluice/runner/batch"
	"github.com/sluice-dev/sluice/runner/failure"
	"github.com/sluice-dev/sluice/runner/metrics"
	"github.com/sluice-dev/sluice/runner/sink"
	"github.com/sluice-dev/sluice/runner/state"
	"github.com/sluice-dev/sluice/runner/transform"
)

// step moves one batch: read (or take the prefetched page), transform, write and commit the
// checkpoint. It reports done when the reader is caught up.
func (e *executor) step(ctx context.Context, s *session, stages []transform.Stage) (bool, error) {
	b, err := e.read(ctx, s)
	if err != nil {
		return false, err
	}
	if b.Len() == 0 {
		return true, nil
	}
	// No read started since this page's ended (the next prefetch starts below), so the
	// session's timing is this page's.
	obs := metrics.Batch{Read: s.readTook, Bytes: wireBytes(b)}
	pos, err := s.reader.Position(b, b.Len()-1)
	if err != nil {
		return false, err
	}
	more := b.More
	if more && !e.opts.Sequential {
		e.startPrefetch(ctx, s, pos)
	}
	markDeleted(e.pl.deleteWhen, b)
	out, rejects, err := e.transformRejecting(ctx, s, stages, b, &obs)
	if err != nil {
		return false, err
	}
	dropMarker(e.pl.deleteWhen, out)
	if err := checkKeys(out, e.pl.sinkKey); err != nil {
		return false, err
	}
	sb := e.sent(b, out, &state.Position{Columns: e.pl.order, Values: pos}, rejects, obs)
	if err := e.write(ctx, s, sb); err != nil {
		return false, err
	}
	return !more, nil
}

// sent makes the record of a batch on its way to the sink: the reader batch src, what the
// transforms made of it, the checkpoint it commits (nil: counters only, a replay) and its
// rejects so far.
func (e *executor) sent(src, out *batch.Batch, pos *state.Position, rejects []rejectedRow, obs metrics.Batch) sentBatch {
	// RowsWritten and RowsDeleted count the rows handed to the sink (after transforms), which
	// the checkpoint statement must know before the sink has written them.
	deleted := int64(out.CountDeleted())
	adv := state.Advance{
		Mode: e.pl.mode, RunID: e.p.RunID, Generation: e.pl.generation, Position: pos,
		RowsRead: int64(src.Len()), RowsWritten: int64(out.Len()) - deleted, RowsDeleted: deleted, Batches: 1,
	}
	sb := sentBatch{adv: adv, obs: obs, src: src, out: out, rejects: rejects}
	if pos != nil {
		sb.pos = pos.Values
	}
	return sb
}

// transform applies the stages to b and times them into obs. Identity stages are not timed:
// they do nothing, and a transform series of no-ops would only hide that the run has none.
// Every other stage is the python tasks' (transform.Build).
func (e *executor) transform(ctx context.Context, stages []transform.Stage, b *batch.Batch, obs *metrics.Batch) (*batch.Batch, error) {
	if e.identity {
		return transform.Chain(ctx, stages, b)
	}
	start := time.Now()
	out, err := transform.Chain(ctx, stages, b)
	obs.Transform = time.Since(start)
	e.metrics.Python(obs.Transform)
	return out, err
}

// wireBytes is the size of a batch as the source sent it: for an undecoded batch its tuples
// less their column counts are the values and their length words; a decoded one carries what
// the reader counted (ReadBytes).
func wireBytes(b *batch.Batch) int64 {
	if b.Raw == nil {
		return b.ReadBytes
	}
	return int64(len(b.Raw.Tuples) - 2*b.Raw.Len())
}

// read returns the page after the committed checkpoint.
func (e *executor) read(ctx context.Context, s *session) (*batch.Batch, error) {
	if pf := e.prefetch; pf != nil {
		e.prefetch = nil
		r := pf.wait()
		return r.b, r.err
	}
	return s.read(ctx, e.after)
}

// write writes a batch and commits its checkpoint: in one transaction when the sink lives in
// the state database (rows, rejects and checkpoint together, exactly once), else rows first
// and checkpoint second (a crash in between replays the batch, which the upsert absorbs).
// A batch the sink fails for some of its rows is written again without them (writeRefusing).
func (e *executor) write(ctx context.Context, s *session, sb sentBatch) error {
	out, adv := sb.out, sb.adv
	if len(sb.rejects) > 0 || len(e.unresolved) > 0 {
		var err error
		if sb.br, err = e.refusals(s, &sb, nil); err != nil {
			return err
		}
	}
	rejStmt, err := e.rejectsStatement(s, sb.br)
	if err != nil {
		return err
	}
	if s.txSink != nil {
		var stmts []sink.Statement
		if !e.opts.CheckpointAtEnd {
			st := s.store.AdvanceStatement(e.epoch, adv, e.sentAfter)
			stmts = append(stmts, sink.Statement{SQL: st.SQL, Params: st.Params})
		}
		if rejStmt != nil {
			stmts = append(stmts, sink.Statement{SQL: rejStmt.SQL, Params: rejStmt.Params})
		}
		// The checkpoint commits with the rows: the batch has no checkpoint stage of its own.
		start := time.Now()
		if err := s.txSink.Send(ctx, out, stmts...); err != nil {
			return err
		}
		sb.obs.Write = time.Since(start)
		// The batch stays with its record until it is confirmed: a refused one is written
		// again from it.
		e.inflight = append(e.inflight, sb)
		e.sentAfter = sb.pos
		// One batch stays in flight while the next is prepared, unless sequential.
		keep := 1
		if e.opts.Sequential {
			keep = 0
		}
		for len(e.inflight) > keep {
			if err := e.receive(ctx, s); err != nil {
				return err
			}
		}
		return nil
	}
	if rj, ok := s.sink.(sink.Rejecter); ok && rj.AnswersPerRow() {
		_, err := e.writeRefusing(ctx, s, &sb, nil)
		sb.release()
		return err
	}
	start := time.Now()
	if _, err := s.sink.Write(ctx, out); err != nil {
		if !rowError(s, err) {
			return err
		}
		if _, err := e.writeRefusing(ctx, s, &sb, nil); err != nil {
			return err
		}
		sb.release()
		return nil
	}
	sb.obs.Write = time.Since(start)
	if !e.opts.CheckpointAtEnd || rejStmt != nil {
		start = time.Now()
		var also []*state.Statement
		if rejStmt != nil {
			also = append(also, rejStmt)
		}
		if err := s.store.Advance(ctx, e.epoch, adv, also...); err != nil {
			return err
		}
		sb.obs.Checkpoint = time.Since(start)
	}
	e.committed(sb.pos, adv, sb.obs, sb.br)
	// The sink has copied the rows it sent: the raw buffer can serve a later page.
	sb.release()
	return nil
}

// receive waits for the oldest batch in flight and records it as committed. The wait is the
// batch's write time besides its sending; the sink's work while the next batch was prepared
// cost the run nothing and is not in it.
func (e *executor) receive(ctx context.Context, s *session) error {
	b := e.inflight[0]
	e.inflight = e.inflight[1:]
	start := time.Now()
	if _, err := s.txSink.Receive(ctx); err != nil {
		if rowError(s, err) {
			return e.recoverRefused(ctx, s, b)
		}
		if failure.IsFenced(err) {
			return fmt.Errorf("commit batch and checkpoint of pipeline %s with epoch %d: %w", e.p.Pipeline, e.epoch,
				errors.Join(failure.ErrFenced, err))
		}
		return err
	}
	b.obs.Write += time.Since(start)
	e.committed(b.pos, b.adv, b.obs, b.br)
	b.release()
	return nil
}

// drain waits for every batch in flight: before the run ends, pauses or reports.
func (e *executor) drain(ctx context.Context, s *session) error {
	for len(e.inflight) > 0 {
		if err := e.receive(ctx, s); err != nil {
			return err
		}
	}
	return nil
}

// committed records a batch whose rows, rejects and checkpoint are durable, and what it took.
// A replay's batch (no position) leaves the checkpoint where it is.
func (e *executor) committed(pos []string, adv state.Advance, obs metrics.Batch, br *batchRejects) {
	if br != nil {
		e.rowsRejected += int64(len(br.added))
		for _, fp := range br.resolvedFP {
			delete(e.unresolved, fp)
		}
		for _, a := range br.added {
			if e.unresolved != nil {
				e.unresolved[a.fp] = struct{}{}
			}
		}
	}
	if adv.Position == nil {
		e.rowsRead += adv.RowsRead
		e.rowsWritten += adv.RowsWritten
		e.rowsDeleted += adv.RowsDeleted
		e.metrics.Committed(e.totals(), obs)
		return
	}
	if e.opts.CheckpointAtEnd {
		e.pending.Mode, e.pending.RunID, e.pending.Generation, e.pending.Position = adv.Mode, adv.RunID, adv.Generation, adv.Position
		e.pending.RowsRead += adv.RowsRead
		e.pending.RowsWritten += adv.RowsWritten
		e.pending.RowsDeleted += adv.RowsDeleted
		e.pending.Batches++
	}
	e.after = pos
	e.checkpointTime = time.Now()
	e.cdcCommitted(pos)
	e.rowsRead += adv.RowsRead
	e.rowsWritten += adv.RowsWritten
	e.rowsDeleted += adv.RowsDeleted
	e.batches++
	e.metrics.Committed(e.totals(), obs)
}

// totals are the committed counters as the metrics take them.
func (e *executor) totals() metrics.Totals {
	return metrics.Totals{RowsRead: e.rowsRead, RowsWritten: e.rowsWritten, RowsDeleted: e.rowsDeleted, Batches: e.batches}
}

// flushPending commits what CheckpointAtEnd held back.
func (e *executor) flushPending(ctx context.Context, s *session) error {
	if e.pending.Batches == 0 {
		return nil
	}
	if err := s.store.Advance(ctx, e.epoch, e.pending); err != nil {
		return err
	}
	e.pending = state.Advance{}
	return nil
}

// checkKeys rejects a batch with a row lacking a sink key value: the upsert could not place it
// (a NULL key never conflicts, so it would duplicate on every replay).
func checkKeys(b *batch.Batch, key []string) error {
	idx, missing := b.Indexes(key)
	if missing != "" {
		return failure.Business(fmt.Errorf("rows reaching the sink have no key column %q", missing))
	}
	for r := 0; r < b.Len(); r++ {
		for i, j := range idx {
			if (b.Raw != nil && b.Raw.Value(r, j) == nil) || (b.Raw == nil && b.Rows[r][j] == nil) { // #nosec G602 -- r < b.Len() and j is a column index of the batch
				return failure.Business(fmt.Errorf("row %d of the batch reaching the sink has a NULL key column %q", r+1, key[i]))
			}
		}
	}
	return nil
}
