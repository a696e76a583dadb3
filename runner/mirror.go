package runner

import (
	"context"
	"fmt"
	"time"

	"github.com/sluice-dev/sluice/runner/failure"
	"github.com/sluice-dev/sluice/runner/sink"
	"github.com/sluice-dev/sluice/runner/state"
)

// A Full run with target.fullSync Mirror leaves the sink equal to its output: the sink keeps
// what it needs across sessions (the Postgres side table of keys, the Elasticsearch index
// being built), and the run's completion sweeps or swaps before it is recorded
// (sink.Mirror).

// beginMirror starts or continues the pass of a Mirror run on a new session. A run that
// continues a checkpoint whose pass the sink lost starts over from the beginning.
func (e *executor) beginMirror(ctx context.Context, s *session) error {
	if !e.pl.mirror || e.mirrored {
		return nil
	}
	m, ok := s.sink.(sink.Mirror)
	if !ok {
		return failure.Business(fmt.Errorf("target %s cannot be mirrored (target.fullSync Mirror)", e.pl.spec.Target.Name))
	}
	run := sink.MirrorRun{Pipeline: mirrorID(e.p.Pipeline), RunID: e.p.RunID,
		Resume: e.after != nil, MaxDeleteRatio: e.pl.maxDeleteRatio}
	ok, err := m.BeginMirror(ctx, run)
	if err != nil || ok {
		return err
	}
	e.log.Warn("the Mirror run's pass is gone from the sink: the full run starts over", "checkpoint", e.after)
	// Forgotten before the sink starts the new pass: else a runner dying before the new pass's
	// first commit would leave a new pass and the old checkpoint, and its replacement would
	// continue after rows the new pass never wrote (and a sweep would delete them).
	if err := s.store.StartFullOver(ctx, e.epoch); err != nil {
		return err
	}
	e.after = nil
	run.Resume = false
	_, err = m.BeginMirror(ctx, run)
	return err
}

// mirrorID names what a pipeline's Mirror runs keep in a sink: the pipeline, uid included.
func mirrorID(p state.Pipeline) string { return p.String() + "/" + p.UID }

// doneMirror lets the sink remove what it kept of the pass, once the run is recorded; a
// failure is only logged (the next pass removes it).
func (e *executor) doneMirror(ctx context.Context, s *session) {
	if !e.pl.mirror {
		return
	}
	if err := s.sink.(sink.Mirror).DoneMirror(ctx); err != nil {
		e.log.Warn("cannot remove what the Mirror run kept", "error", e.scrub.scrub(err.Error()))
	}
}

// finishMirror sweeps or swaps once the last batch is committed.
func (e *executor) finishMirror(ctx context.Context, s *session) error {
	if !e.pl.mirror || e.mirrored {
		return nil
	}
	start := time.Now()
	swept, err := s.sink.(sink.Mirror).FinishMirror(ctx)
	if err != nil {
		return err
	}
	// A retry of the run's bookkeeping after this must not look for the pass again.
	e.rowsSwept, e.mirrored = swept, true
	e.log.Info("mirror complete", "rowsSwept", swept, "seconds", time.Since(start).Seconds())
	return nil
}
