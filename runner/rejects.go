package runner

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/batch"
	"github.com/sluice-dev/sluice/runner/failure"
	"github.com/sluice-dev/sluice/runner/metrics"
	"github.com/sluice-dev/sluice/runner/sink"
	"github.com/sluice-dev/sluice/runner/state"
	"github.com/sluice-dev/sluice/runner/status"
	"github.com/sluice-dev/sluice/runner/transform"
)

// tolerance is spec.errors: how many rows a run may reject.
type tolerance struct {
	maxRows  *int64
	maxRatio *float64
}

// tolerates reports whether the pipeline tolerates rejects at all; without spec.errors the
// first refused row fails the run.
func (t tolerance) tolerates() bool { return t.maxRows != nil || t.maxRatio != nil }

// exceeded decides whether rejecting rejected of the read rows a run read passes the
// tolerance. The ratio is judged during the run once it has read enough rows for the ratio
// to allow one reject (1/ratio), so that bad rows early in a run do not fail it, and at its
// end (final); it always allows one reject, so that a short Incremental run is not failed
// by its only bad row. A ratio of 0 tolerates none.
func (t tolerance) exceeded(rejected, read int64, final bool) bool {
	switch {
	case rejected <= 0:
		return false
	case !t.tolerates():
		return true
	case t.maxRows != nil && rejected > *t.maxRows:
		return true
	case t.maxRatio == nil:
		return false
	case *t.maxRatio == 0:
		return true
	case !final && float64(read)**t.maxRatio < 1:
		return false
	}
	return float64(rejected) > max(1, *t.maxRatio*float64(read))
}

// String renders the tolerance for a message.
func (t tolerance) String() string {
	var parts []string
	if t.maxRows != nil {
		parts = append(parts, "maxRejectedRows "+strconv.FormatInt(*t.maxRows, 10))
	}
	if t.maxRatio != nil {
		parts = append(parts, "maxRejectedRatio "+strconv.FormatFloat(*t.maxRatio, 'g', -1, 64))
	}
	if len(parts) == 0 {
		return "no spec.errors"
	}
	return strings.Join(parts, ", ")
}

// rejectedRow is a reader row of a batch that the run rejects.
type rejectedRow struct {
	// row is the reader row's index in its batch; desc names it by its key, fp is the key's
	// fingerprint (source.Reader.KeyFingerprint).
	row  int
	desc string
	fp   string
	rec  state.Reject
}

// batchRejects is what a batch changes in etl_rejects: the rejects it adds, and the keys
// (with their fingerprints) whose rejects it resolves.
type batchRejects struct {
	added      []rejectedRow
	resolved   [][]string
	resolvedFP []string
}

// reject describes reader row i of b, refused by stage (a task or the target) for class and
// msg. The message is scrubbed as a status message is; the row itself goes to the state
// database, where it belongs to whoever may read it.
func (e *executor) reject(s *session, b *batch.Batch, i int, stage, task, class, msg string) (rejectedRow, error) {
	keys, cursor, err := s.reader.Key(b, i)
	if err != nil {
		return rejectedRow{}, err
	}
	fp, err := s.reader.KeyFingerprint(b, i)
	if err != nil {
		return rejectedRow{}, err
	}
	row, err := s.reader.RowJSON(b, i)
	if err != nil {
		e.log.Warn("cannot render a rejected row as JSON: the reject keeps its key only", "error", e.scrub.scrub(err.Error()))
		row = nil
	}
	return rejectedRow{row: i, desc: s.reader.DescribeKey(b, i), fp: fp, rec: state.Reject{
		Key: keys, Cursor: cursor, Stage: stage, Task: task, Class: class, Message: e.outgoing(errors.New(msg)), Row: row,
	}}, nil
}

// tolerate checks the run's rejects with those of a batch of read reader rows against the
// tolerance, and returns the error that fails the run when they pass it.
func (e *executor) tolerate(added []rejectedRow, read int64, final bool) error {
	total := e.rowsRejected + int64(len(added))
	if !e.pl.tolerance.exceeded(total, e.rowsRead+read, final) {
		return nil
	}
	var first string
	if len(added) > 0 {
		r := added[0]
		by := "the sink " + r.rec.Task
		if r.rec.Stage == state.StageTransform {
			by = fmt.Sprintf("task %q", r.rec.Task)
		}
		first = fmt.Sprintf(": %s refused reader row (%s): %s", by, r.desc, r.rec.Message)
	}
	if !e.pl.tolerance.tolerates() {
		return failure.Business(errors.New(strings.TrimPrefix(first, ": ")))
	}
	return failure.Business(fmt.Errorf("the run rejected %d rows of %d read, more than spec.errors allows (%s); those of committed batches are in etl.etl_rejects%s",
		total, e.rowsRead+read, e.pl.tolerance, first))
}

// transformRejecting applies the stages to b. When a stage fails on one reader row and the
// pipeline tolerates rejects, the row is rejected and the batch is transformed again without
// it; the output's Origin then still names rows of b.
func (e *executor) transformRejecting(ctx context.Context, s *session, stages []transform.Stage, b *batch.Batch, obs *metrics.Batch) (*batch.Batch, []rejectedRow, error) {
	in := b
	var idx []int // in's rows as rows of b; nil while in is b
	src := func(i int) int {
		if idx == nil {
			return i
		}
		return idx[i]
	}
	var added []rejectedRow
	for {
		out, err := e.transform(ctx, stages, in, obs)
		var rf *transform.RowFailure
		switch {
		case err == nil:
			if idx != nil {
				origin := make([]int, out.Len())
				for j := range origin {
					origin[j] = src(out.Source(j))
				}
				out.Origin = origin
			}
			return out, added, nil
		case !errors.As(err, &rf) || !e.pl.tolerance.tolerates():
			return nil, nil, err
		}
		r, rerr := e.reject(s, b, src(rf.Row), state.StageTransform, rf.Task, rf.Class, rf.Error())
		if rerr != nil {
			return nil, nil, rerr
		}
		added = append(added, r)
		if err := e.tolerate(added, int64(b.Len()), false); err != nil {
			return nil, nil, err
		}
		keep := make([]int, 0, in.Len()-1)
		next := make([]int, 0, in.Len()-1)
		for i := range in.Len() {
			if i != rf.Row {
				keep, next = append(keep, i), append(next, src(i))
			}
		}
		in, idx = in.Select(keep), next
	}
}

// refusals turns the rows a sink refused into rejects of their reader rows, after those the
// transforms rejected, and checks them against the tolerance. A reader row is rejected once,
// however many of its output rows were refused; its other output rows are written.
func (e *executor) refusals(s *session, sb *sentBatch, refused []sink.Refused) (*batchRejects, error) {
	added := append([]rejectedRow(nil), sb.rejects...)
	seen := map[int]bool{}
	for _, r := range added {
		seen[r.row] = true
	}
	for _, r := range refused {
		row := sb.out.Source(r.Row)
		if row < 0 || row >= sb.src.Len() || seen[row] {
			continue
		}
		seen[row] = true
		rej, err := e.reject(s, sb.src, row, state.StageSink, e.pl.spec.Target.Name, r.Class, r.Message)
		if err != nil {
			return nil, err
		}
		added = append(added, rej)
	}
	if err := e.tolerate(added, sb.adv.RowsRead, false); err != nil {
		return nil, err
	}
	br := &batchRejects{added: added}
	if err := e.resolvedIn(s, sb.src, seen, br); err != nil {
		return nil, err
	}
	br.resolved, br.resolvedFP = append(br.resolved, sb.gone...), append(br.resolvedFP, sb.goneFP...)
	return br, nil
}

// resolvedIn adds to br the keys of the pipeline's unresolved rejects among the reader rows
// of b that were written (not in rejected): those rows passed this time. It costs nothing
// while the pipeline has no rejects, and a map lookup of each row's raw key bytes while it
// has.
func (e *executor) resolvedIn(s *session, b *batch.Batch, rejected map[int]bool, br *batchRejects) error {
	if len(e.unresolved) == 0 {
		return nil
	}
	for i := range b.Len() {
		if rejected[i] {
			continue
		}
		fp, err := s.reader.KeyFingerprint(b, i)
		if err != nil {
			return err
		}
		if _, ok := e.unresolved[fp]; !ok {
			continue
		}
		keys, err := s.reader.KeyValues(b, i)
		if err != nil {
			return err
		}
		br.resolved, br.resolvedFP = append(br.resolved, keys), append(br.resolvedFP, fp)
	}
	return nil
}

// rejectsStatement is br as a statement of the batch's checkpoint transaction (nil: none).
func (e *executor) rejectsStatement(s *session, br *batchRejects) (*state.Statement, error) {
	if br == nil {
		return nil, nil
	}
	r := &state.Rejects{KeyColumns: e.pl.keys, CursorColumn: e.pl.cursor, Resolved: br.resolved}
	for _, a := range br.added {
		r.Added = append(r.Added, a.rec)
	}
	return s.store.RejectsStatement(e.p.RunID, r)
}

// loadUnresolved reads the keys of the pipeline's rejects once per run, so that a batch that
// writes one of them resolves it.
func (e *executor) loadUnresolved(ctx context.Context, s *session) error {
	if e.unresolved != nil {
		return nil
	}
	keys, err := s.store.RejectedKeys(ctx, e.pl.keys, nil, 1<<30)
	if err != nil {
		return err
	}
	e.unresolved = make(map[string]struct{}, len(keys))
	for _, k := range keys {
		fp, err := s.reader.FingerprintOf(k)
		if err != nil {
			return err
		}
		e.unresolved[fp] = struct{}{}
	}
	return nil
}

// writeRefusing writes a batch that a sink failed with a row error again, without the rows
// it refuses, and commits it with its rejects and its checkpoint.
func (e *executor) writeRefusing(ctx context.Context, s *session, sb *sentBatch, expected []string) (*batchRejects, error) {
	rj, ok := s.sink.(sink.Rejecter)
	if !ok {
		return nil, fmt.Errorf("sink of %s cannot isolate refused rows", e.pl.spec.Target.Name)
	}
	var br *batchRejects
	var rejStmt *state.Statement
	start := time.Now()
	_, refused, err := rj.WriteRejecting(ctx, sb.out, func(refused []sink.Refused) ([]sink.Statement, error) {
		var err error
		if br, err = e.refusals(s, sb, refused); err != nil {
			return nil, err
		}
		if rejStmt, err = e.rejectsStatement(s, br); err != nil {
			return nil, err
		}
		if s.txSink == nil {
			return nil, nil
		}
		var stmts []sink.Statement
		if !e.opts.CheckpointAtEnd || sb.adv.Position == nil {
			st := s.store.AdvanceStatement(e.epoch, e.refusedAdvance(sb, refused), expected)
			stmts = append(stmts, sink.Statement{SQL: st.SQL, Params: st.Params})
		}
		if rejStmt != nil {
			stmts = append(stmts, sink.Statement{SQL: rejStmt.SQL, Params: rejStmt.Params})
		}
		return stmts, nil
	})
	if err != nil {
		if failure.IsFenced(err) {
			return nil, fmt.Errorf("commit batch and checkpoint of pipeline %s with epoch %d: %w", e.p.Pipeline, e.epoch,
				errors.Join(failure.ErrFenced, err))
		}
		return nil, err
	}
	sb.obs.Write += time.Since(start)
	adv := e.refusedAdvance(sb, refused)
	if s.txSink == nil {
		var also []*state.Statement
		if rejStmt != nil {
			also = append(also, rejStmt)
		}
		if !e.opts.CheckpointAtEnd || adv.Position == nil || rejStmt != nil {
			start = time.Now()
			if err := s.store.Advance(ctx, e.epoch, adv, also...); err != nil {
				return nil, err
			}
			sb.obs.Checkpoint = time.Since(start)
		}
	}
	e.committed(sb.pos, adv, sb.obs, br)
	return br, nil
}

// refusedAdvance is a batch's advance less the rows the sink refused.
func (e *executor) refusedAdvance(sb *sentBatch, refused []sink.Refused) state.Advance {
	adv := sb.adv
	for _, r := range refused {
		if sb.out.IsDeleted(r.Row) {
			adv.RowsDeleted--
		} else {
			adv.RowsWritten--
		}
	}
	return adv
}

// rowError reports whether the sink failed a write because of some rows of the batch.
func rowError(s *session, err error) bool {
	rj, ok := s.sink.(sink.Rejecter)
	return ok && rj.RowError(err)
}

// recoverRefused handles a batch in flight that the sink failed with a row error: the
// batches sent after it fail too, at once (their checkpoints, which go first, do not follow
// the committed one), so their results are read and set aside. The refused batch is written
// again with writeRefusing, from the committed checkpoint, and the others are sent again as
// they were. Another runner's claim (a stale epoch) still stops the run.
func (e *executor) recoverRefused(ctx context.Context, s *session, first sentBatch) error {
	rest := e.inflight
	e.inflight = nil
	for range rest {
		if _, err := s.txSink.Receive(ctx); err != nil && !rowError(s, err) && !checkpointMoved(err) {
			return err
		}
	}
	if _, err := e.writeRefusing(ctx, s, &first, e.after); err != nil {
		return err
	}
	first.release()
	e.sentAfter = e.after
	for _, sb := range rest {
		sb.br = nil // computed again against what is unresolved now
		if err := e.write(ctx, s, sb); err != nil {
			return err
		}
	}
	return nil
}

// checkpointMoved reports the error of a batch sent after a failed one: its checkpoint does
// not follow the committed one.
func checkpointMoved(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == failure.CheckpointMovedSQLState
}

// rejectsCondition is the RowsRejected condition after a run, and whether to remove it
// instead: True while the pipeline has rows in etl_rejects, False when a pipeline that
// tolerates rejects has none, absent otherwise.
func rejectsCondition(p state.Pipeline, unresolved, rejected int64, tolerates bool) (metav1.Condition, bool) {
	c := metav1.Condition{Type: etlv1.ConditionRowsRejected}
	switch {
	case unresolved > 0:
		c.Status, c.Reason = metav1.ConditionTrue, etlv1.ReasonRowsRejected
		c.Message = fmt.Sprintf("%d rows of the pipeline are in etl.etl_rejects (%d rejected by its last run): "+
			"SELECT * FROM etl.rejects WHERE namespace = '%s' AND name = '%s'; once the cause is fixed, "+
			"annotate %s to replay them", unresolved, rejected, p.Namespace, p.Name, etlv1.AnnotationReplayRejectsRequestedAt)
	case tolerates:
		c.Status, c.Reason = metav1.ConditionFalse, etlv1.ReasonNoRejects
		c.Message = "no row of the pipeline is in etl.etl_rejects"
	default:
		return c, true
	}
	return c, false
}

// endRejects counts the pipeline's unresolved rejects as the run ends and sets the
// RowsRejected condition from them; it returns the count for status.unresolvedRejects, nil
// when it cannot be read (the failure that ends the run took the state database).
func (e *executor) endRejects(ctx context.Context, s *session) *int64 {
	if e.pl == nil || s == nil || s.store == nil || s.state == nil || s.state.IsClosed() {
		return nil
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), statusTimeout)
	defer cancel()
	n, err := s.store.UnresolvedRejects(cctx)
	if err != nil {
		e.log.Warn("cannot count the pipeline's rejects", "error", e.scrub.scrub(err.Error()))
		return nil
	}
	recent, err := s.store.RecentRejects(cctx, etlv1.MaxRecentRejects)
	if err != nil {
		e.log.Warn("cannot read the pipeline's rejects", "error", e.scrub.scrub(err.Error()))
		return nil
	}
	e.recentRejects = recentRejects(recent, e.redacted())
	c, clear := rejectsCondition(e.p.Pipeline, n, e.rowsRejected, e.pl.tolerance.tolerates())
	if clear {
		e.cleared = append(e.cleared, c.Type)
	} else {
		e.setCondition(c)
	}
	if e.rowsRejected > 0 {
		e.event(context.WithoutCancel(ctx), true, etlv1.ReasonRowsRejected, fmt.Sprintf("run %s rejected %d rows; %d rows of the pipeline are in etl.etl_rejects",
			e.p.RunID, e.rowsRejected, n))
	}
	return &n
}

// recentRejects renders the newest rejects for status.recentRejects: the key as name=value
// pairs (masked when the checkpoint is redacted), the message bounded.
func recentRejects(rows []state.RecentReject, redact bool) []etlv1.RejectSummary {
	out := make([]etlv1.RejectSummary, 0, len(rows))
	for _, r := range rows {
		values := r.Key
		if redact {
			values = status.Mask(values)
		}
		pairs := make([]string, len(values))
		for i, v := range values {
			name := "?"
			if i < len(r.KeyColumns) {
				name = r.KeyColumns[i]
			}
			pairs[i] = name + "=" + v
		}
		msg := r.Message
		if len(msg) > 1024 {
			msg = msg[:1021] + "..."
		}
		at := metav1.NewTime(r.At)
		out = append(out, etlv1.RejectSummary{Key: strings.Join(pairs, ", "), Stage: r.Stage, Class: r.Class, Message: msg,
			RunID: r.RunID, Time: &at, Attempts: r.Attempts})
	}
	return out
}
