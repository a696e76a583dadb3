package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sluice-dev/sluice/runner/batch"
	"github.com/sluice-dev/sluice/runner/sink"
)

var _ sink.Rejecter = (*Sink)(nil)

// RowError implements sink.Rejecter: a data exception (class 22: a value the column's type
// cannot take, a string too long, a number out of range), an integrity constraint violation
// (class 23: check, not-null, foreign key, a unique index other than the key's, exclusion),
// or a value the sink cannot encode for its column.
func (s *Sink) RowError(err error) bool {
	var ve *rowValueError
	if errors.As(err, &ve) {
		return true
	}
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && rowSQLState(pgErr.Code)
}

// AnswersPerRow implements sink.Rejecter: a statement fails as a whole, and finding its bad
// rows costs more than the set-based write of a batch that has none.
func (s *Sink) AnswersPerRow() bool { return false }

// rowSQLState reports whether a SQLSTATE can be caused by the values of one row.
func rowSQLState(code string) bool {
	return strings.HasPrefix(code, "22") || strings.HasPrefix(code, "23")
}

// isolateParts is how many parts a failing part of a batch is split into: more parts cost
// more statements, fewer waste more rows in the failing part. A 5,000-row batch whose one bad
// row is its last took 43 ms with 8 parts, 43 to 53 ms with 16 and 49 ms with 4, against
// 13 ms for the batch without it (make bench, pg_batch_with_one_reject).
const isolateParts = 8

// WriteRejecting implements sink.Rejecter. In one transaction it writes the batch in parts,
// each under a savepoint and all of them in one round trip; a part that fails with a row
// error is split the same way, until the rows that fail alone are found. A batch of 5,000
// rows with one bad row takes five levels of 8 parts: about 40 statements over ever fewer
// rows in a dozen round trips, and the good rows keep the set-based write. commit's
// statements (the rejects and the checkpoint, in the state database) run in the same
// transaction, so the rows, their rejects and the checkpoint commit together or not at all.
func (s *Sink) WriteRejecting(ctx context.Context, b *batch.Batch, commit func([]sink.Refused) ([]sink.Statement, error)) (int64, []sink.Refused, error) {
	if s.columns == nil {
		return 0, nil, fmt.Errorf("write to %s: sink used before Prepare", s.name())
	}
	if err := s.closePipeline(ctx); err != nil {
		return 0, nil, err
	}
	var n int64
	var refused []sink.Refused
	tx, err := s.conn.Begin(ctx)
	if err != nil {
		return 0, nil, fmt.Errorf("write to %s: begin: %w", s.name(), err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if b.Len() > 0 {
		var formats []int16
		if b.Raw != nil {
			formats = b.Raw.Formats
		}
		sh, err := s.shapeFor(ctx, b.Columns, formats)
		if err != nil {
			return 0, nil, err
		}
		rows := make([]int, b.Len())
		for i := range rows {
			rows[i] = i
		}
		if n, err = s.isolate(ctx, sh, b, rows, &refused); err != nil {
			return 0, refused, err
		}
	}
	stmts, err := commit(refused)
	if err != nil {
		return 0, refused, err
	}
	for _, st := range stmts {
		if err := s.conn.PgConn().ExecParams(ctx, st.SQL, st.Params, nil, nil, nil).Read().Err; err != nil {
			return 0, refused, fmt.Errorf("write to %s: statement in the batch's transaction: %w", s.name(), err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, refused, fmt.Errorf("write to %s: commit: %w", s.name(), err)
	}
	return n, refused, nil
}

// isolate writes the rows of b at the given indexes, split in parts; a part that fails with a
// row error is isolated in turn, and a single row that fails is refused.
func (s *Sink) isolate(ctx context.Context, sh *shape, b *batch.Batch, rows []int, refused *[]sink.Refused) (int64, error) {
	var n int64
	for parts := split(rows, isolateParts); len(parts) > 0; {
		written, failed, err := s.attemptParts(ctx, sh, b, parts)
		n += written
		if failed < 0 {
			return n, nil
		}
		if !s.RowError(err) {
			return n, err
		}
		if bad := parts[failed]; len(bad) == 1 {
			*refused = append(*refused, sink.Refused{Row: bad[0], Class: refusedClass(err), Message: refusedMessage(err)})
		} else {
			m, err := s.isolate(ctx, sh, b, bad, refused)
			n += m
			if err != nil {
				return n, err
			}
		}
		parts = parts[failed+1:]
	}
	return n, nil
}

// split cuts rows into at most k parts of about equal size, in order.
func split(rows []int, k int) [][]int {
	k = min(k, len(rows))
	parts := make([][]int, 0, k)
	for i := range k {
		parts = append(parts, rows[i*len(rows)/k:(i+1)*len(rows)/k])
	}
	return parts
}

// attemptParts sends every part's write under a savepoint of its own in one batch of
// statements, and returns the rows written and the first part that failed (-1: none) with
// its error. The server skips what follows an error, so the parts after the failed one are
// not written; the transaction is rolled back to the failed part's savepoint.
func (s *Sink) attemptParts(ctx context.Context, sh *shape, b *batch.Batch, parts [][]int) (int64, int, error) {
	pb := &pgconn.Batch{}
	// owner[i] is the part of statement i; counted[i] says statement i is an upsert.
	var owner []int
	var counted []bool
	add := func(part int, upsert bool) {
		owner, counted = append(owner, part), append(counted, upsert)
	}
	encodeFailed, encodeErr := -1, error(nil)
	for p, rows := range parts {
		qs, upsert, err := s.queries(sh, b.Select(rows))
		if err != nil {
			// A value that cannot be encoded fails its part before anything of it is sent.
			encodeFailed, encodeErr = p, err
			break
		}
		pb.ExecParams("SAVEPOINT sluice_rows", nil, nil, nil, nil)
		add(p, false)
		for i, q := range qs {
			// Encoded into the batch at once: the next part may reuse the parameters' buffers.
			pb.ExecPrepared(q.stmt, q.params, binaryFormats(len(q.params)), nil)
			add(p, i == 0 && upsert)
		}
		pb.ExecParams("RELEASE SAVEPOINT sluice_rows", nil, nil, nil, nil)
		add(p, false)
	}
	written := make([]int64, len(parts))
	total := func(upTo int) (n int64) {
		for _, w := range written[:upTo] {
			n += w
		}
		return n
	}
	var failErr error
	done := 0
	if len(owner) > 0 {
		mrr := s.conn.PgConn().ExecBatch(ctx, pb)
		for mrr.NextResult() {
			tag, err := mrr.ResultReader().Close()
			if err != nil {
				failErr = err
				break
			}
			if counted[done] {
				written[owner[done]] += tag.RowsAffected()
			}
			done++
		}
		if err := mrr.Close(); failErr == nil {
			failErr = err
		}
	}
	if failErr == nil {
		if encodeFailed >= 0 {
			return total(encodeFailed), encodeFailed, encodeErr
		}
		return total(len(parts)), -1, nil
	}
	var pgErr *pgconn.PgError
	if !errors.As(failErr, &pgErr) || done >= len(owner) {
		return 0, -1, fmt.Errorf("write to %s: %w", s.name(), failErr)
	}
	// The failed part's rows are undone with it; the parts before it were released.
	failed := owner[done]
	if _, err := s.conn.PgConn().Exec(ctx, "ROLLBACK TO SAVEPOINT sluice_rows; RELEASE SAVEPOINT sluice_rows").ReadAll(); err != nil {
		return 0, -1, fmt.Errorf("write to %s: roll back to savepoint: %w", s.name(), errors.Join(failErr, err))
	}
	return total(failed), failed, failErr
}

// refusedClass is the SQLSTATE of a row error, or "encode" for a value the sink could not
// encode.
func refusedClass(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return "encode"
}

// refusedMessage is what a reject says: the server's message with its constraint, in the
// form the executor's scrubber knows ("ERROR: ... (SQLSTATE ...)"), never its DETAIL, which
// quotes the row.
func refusedMessage(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Error()
	}
	return err.Error()
}
