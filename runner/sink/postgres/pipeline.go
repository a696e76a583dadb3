package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sluice-dev/sluice/runner/batch"
	"github.com/sluice-dev/sluice/runner/sink"
)

// Send implements sink.TxSink. stmts and the batch's upsert go down the connection in
// pipeline mode followed by a Sync: the server runs them as one implicit transaction, and the
// runner does not wait for it (nor pays the round trips of BEGIN and COMMIT). The statements
// go first: a checkpoint that does not follow the committed one (a batch sent after a failed
// one) or a stale epoch raises before any row is written, so such a batch costs the server
// nothing, and the rows still commit with the checkpoint or not at all.
func (s *Sink) Send(ctx context.Context, b *batch.Batch, stmts ...sink.Statement) error {
	if s.columns == nil {
		return fmt.Errorf("write to %s: sink used before Prepare", s.name())
	}
	e := &sent{}
	if b.Len() == 0 && !hasSQL(stmts) {
		e.ready = true
		s.queue = append(s.queue, e)
		return nil
	}
	var qs []query
	var upsert bool
	if b.Len() > 0 {
		var formats []int16
		if b.Raw != nil {
			formats = b.Raw.Formats
		}
		if _, ok := s.shapes[batch.Signature(b.Columns, formats)]; !ok {
			// Preparing needs the connection out of pipeline mode.
			if err := s.closePipeline(ctx); err != nil {
				return err
			}
		}
		sh, err := s.shapeFor(ctx, b.Columns, formats)
		if err != nil {
			return err
		}
		if qs, upsert, err = s.queries(sh, b); err != nil {
			return err
		}
	}
	// Queued only now: a new shape closes the pipeline above, which collects every queued
	// batch, and this one has not been sent yet.
	s.queue = append(s.queue, e)
	if s.pipe == nil {
		s.pipe = s.conn.PgConn().StartPipeline(ctx)
	}
	for _, st := range stmts {
		if st.SQL == "" {
			continue
		}
		s.pipe.SendQueryParams(st.SQL, st.Params, nil, nil, nil)
		e.results++
	}
	e.upsertAt = e.results
	for _, q := range qs {
		s.pipe.SendQueryPrepared(q.stmt, q.params, binaryFormats(len(q.params)), nil)
		e.results++
	}
	e.counted = upsert
	if err := s.pipe.Sync(); err != nil {
		return fmt.Errorf("write to %s: send batch: %w", s.name(), err)
	}
	return nil
}

// Receive implements sink.TxSink.
func (s *Sink) Receive(_ context.Context) (int64, error) {
	if len(s.queue) == 0 {
		return 0, fmt.Errorf("write to %s: nothing sent", s.name())
	}
	e := s.queue[0]
	if !e.ready {
		s.collect(e)
	}
	s.queue = s.queue[1:]
	return e.rows, e.err
}

// sent is one batch sent in pipeline mode.
type sent struct {
	// results is how many statements precede the Sync; counted says the one at upsertAt
	// is the upsert.
	results  int
	upsertAt int
	counted  bool
	ready    bool
	rows     int64
	err      error
}

// collect reads the results of e, the oldest unread batch, up to its Sync. After an error
// the server skips the rest of the batch's statements and pgconn reports only the Sync.
func (s *Sink) collect(e *sent) {
	e.ready = true
	for i := 0; ; i++ {
		res, err := s.pipe.GetResults()
		if err != nil {
			var pgErr *pgconn.PgError
			if e.err == nil {
				what := "upsert"
				if !e.counted || i != e.upsertAt {
					what = "statement in the batch's transaction"
				}
				e.err = fmt.Errorf("write to %s: %s: %w", s.name(), what, err)
			}
			if !errors.As(err, &pgErr) {
				return // the connection is gone: the executor discards the session
			}
			continue
		}
		switch r := res.(type) {
		case *pgconn.PipelineSync:
			return
		case *pgconn.ResultReader:
			tag, err := r.Close()
			if err != nil && e.err == nil {
				e.err = fmt.Errorf("write to %s: %w", s.name(), err)
			}
			if i == e.upsertAt && e.counted {
				e.rows = tag.RowsAffected()
			}
		case nil:
			if e.err == nil {
				e.err = fmt.Errorf("write to %s: pipeline ended before the batch's Sync", s.name())
			}
			return
		}
	}
}

// closePipeline takes the connection out of pipeline mode, first collecting what is in
// flight; Receive hands those results out later, in order.
func (s *Sink) closePipeline(_ context.Context) error {
	if s.pipe == nil {
		return nil
	}
	for _, e := range s.queue {
		if !e.ready {
			s.collect(e)
		}
	}
	err := s.pipe.Close()
	s.pipe = nil
	if err != nil {
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) {
			return fmt.Errorf("write to %s: leave pipeline mode: %w", s.name(), err)
		}
	}
	return nil
}

// hasSQL reports whether one of stmts has a statement.
func hasSQL(stmts []sink.Statement) bool {
	for _, st := range stmts {
		if st.SQL != "" {
			return true
		}
	}
	return false
}
