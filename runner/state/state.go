package state

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/failure"
)

// Pipeline names the pipeline whose state a Store keeps.
type Pipeline struct {
	Namespace string
	Name      string
	// UID is the pipeline's metadata.uid; empty for a run without a pipeline (by hand,
	// benchmarks), whose state is never reset for it.
	UID string
}

// String returns namespace/name.
func (p Pipeline) String() string { return p.Namespace + "/" + p.Name }

// Store reads and writes one pipeline's rows in the `etl` schema.
type Store struct {
	conn *pgx.Conn
	p    Pipeline
}

// New returns the Store of a pipeline on a connection to the state database.
func New(conn *pgx.Conn, p Pipeline) *Store { return &Store{conn: conn, p: p} }

// Outcomes of a run in etl_runs.
const (
	OutcomeRunning   = "running"
	OutcomeSucceeded = "succeeded"
	OutcomePaused    = "paused"
	OutcomeFailed    = "failed"
	// OutcomeCancelled marks a run the manager cancelled (the pipeline's run changed under it).
	OutcomeCancelled = "cancelled"
	// OutcomeAbandoned marks a run that never finished because a later run replaced it.
	OutcomeAbandoned = "abandoned"
)

// Lock takes the pipeline's session-level advisory lock, polling until wait has passed. Only
// one live runner of a pipeline holds it, so two runners started at once cannot both proceed:
// the second gets failure.ErrFenced without having written anything. The server releases the
// lock when the holder's session ends, so a pod that replaces a crashed one gets it at once.
//
// ownPIDs are the backends of this runner's earlier sessions: after a network failure the
// server may not yet have noticed that one of them is dead, and it still holds the lock. Lock
// terminates such a backend instead of waiting for it, so a reconnect is not fenced by its own
// past.
//
// The backend of a runner whose node died holds the lock until the server notices the dead
// peer: runner sessions ask for server-side TCP keepalives (runner.postgres), which end such a
// backend within about a minute, and a replacement pod waits longer than that (--lock-wait).
func (s *Store) Lock(ctx context.Context, wait time.Duration, ownPIDs []uint32) error {
	key := "sluice/pipeline/" + s.p.String()
	deadline := time.Now().Add(wait)
	for {
		var ok bool
		if err := s.conn.QueryRow(ctx, "SELECT pg_try_advisory_lock(hashtextextended($1, 0))", key).Scan(&ok); err != nil {
			return fmt.Errorf("lock pipeline %s: %w", s.p, err)
		}
		if ok {
			return nil
		}
		if len(ownPIDs) > 0 {
			var terminated bool
			err := s.conn.QueryRow(ctx, `
				SELECT coalesce(bool_or(pg_terminate_backend(l.pid)), false) FROM pg_locks l
				WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
				  AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended($1, 0)
				  AND l.pid = ANY ($2::int4[]) AND l.pid <> pg_backend_pid()`, key, ownPIDs).Scan(&terminated)
			if err != nil {
				return fmt.Errorf("lock pipeline %s: release own stale session: %w", s.p, err)
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("lock pipeline %s: another runner holds it after %s: %w", s.p, wait, failure.ErrFenced)
		}
		t := time.NewTimer(200 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("lock pipeline %s: %w", s.p, ctx.Err())
		case <-t.C:
		}
	}
}

// Run describes the run a runner claims.
type Run struct {
	ID         string
	Generation int64
	Mode       etlv1.Mode
	// Stream fingerprints what defines the pipeline's stream; FullStream, what defines a
	// Full run's output (see the runner's identity.go).
	Stream, FullStream string
	// History is how many etl_runs rows the pipeline keeps (0: all).
	History int
}

// Reset says why a claim started the stream from an empty checkpoint.
type Reset struct {
	// Reason is etlv1.ReasonPipelineRecreated or etlv1.ReasonStreamChanged.
	Reason  string
	Message string
}

// decideReset is the identity rule, pure so it is table-tested. State written before
// identities existed (no UID recorded) is adopted as is: an upgrade must not re-read every
// source from the start.
func decideReset(found bool, storedUID, storedStream *string, uid, stream string) *Reset {
	switch {
	case !found || storedUID == nil:
		return nil
	case uid != "" && *storedUID != "" && *storedUID != uid:
		return &Reset{Reason: etlv1.ReasonPipelineRecreated, Message: fmt.Sprintf(
			"the state held a checkpoint of an earlier pipeline of the same name (uid %s); this pipeline (uid %s) starts from an empty checkpoint",
			*storedUID, uid)}
	case storedStream != nil && *storedStream != stream:
		return &Reset{Reason: etlv1.ReasonStreamChanged, Message: "the source connection, cursor, key columns, target or target connection " +
			"changed: the stream starts from an empty checkpoint"}
	}
	return nil
}

// Position is a committed reader position: the order columns it was taken on and the values
// of the last committed reader row in Postgres' text format.
type Position struct {
	Columns []string
	Values  []string
}

// FullPosition is the position of an unfinished full run.
type FullPosition struct {
	Position
	RunID      string
	Generation int64
}

// Claim is the state a runner found when it claimed its pipeline.
type Claim struct {
	// Epoch is this runner's fencing token.
	Epoch int64
	// SameRun is true when the previous claim was of the same run: this runner replaces a
	// crashed pod, and the counters continue.
	SameRun bool
	// Reset is set when the claim cleared the checkpoints of another identity.
	Reset                          *Reset
	RowsRead, RowsWritten, Batches int64
	RowsDeleted, RowsRejected      int64
	Incremental                    *Position
	Full                           *FullPosition
}

// Claim increments the pipeline's epoch, which fences every earlier runner, and records the
// run in etl_runs. Counters carry over only when the previous claim was of the same run.
func (s *Store) Claim(ctx context.Context, run Run) (Claim, error) {
	var c Claim
	tx, err := s.conn.Begin(ctx)
	if err != nil {
		return c, fmt.Errorf("claim pipeline %s: %w", s.p, err)
	}
	defer func() { _ = tx.Rollback(ctx) }()

	var prevRun, prevUID, prevStream, prevFull *string
	err = tx.QueryRow(ctx, `SELECT run_id, pipeline_uid, stream, full_stream FROM etl.etl_state
		WHERE namespace = $1 AND name = $2 FOR UPDATE`,
		s.p.Namespace, s.p.Name).Scan(&prevRun, &prevUID, &prevStream, &prevFull)
	found := err == nil
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return c, fmt.Errorf("claim pipeline %s: %w", s.p, err)
	}
	c.Reset = decideReset(found, prevUID, prevStream, s.p.UID, run.Stream)
	c.SameRun = prevRun != nil && *prevRun == run.ID && c.Reset == nil
	if c.Reset != nil {
		// Another pipeline's (or another stream's) checkpoints must not be continued, and
		// the run log of an earlier pipeline of the same name goes with it.
		if _, err := tx.Exec(ctx, `
			UPDATE etl.etl_state SET incremental_columns = NULL, incremental_checkpoint = NULL, incremental_at = NULL,
				full_run_id = NULL, full_generation = NULL, full_columns = NULL, full_checkpoint = NULL, full_at = NULL,
				full_stream = NULL
			WHERE namespace = $1 AND name = $2`, s.p.Namespace, s.p.Name); err != nil {
			return c, fmt.Errorf("claim pipeline %s: reset state: %w", s.p, err)
		}
		if c.Reset.Reason == etlv1.ReasonPipelineRecreated {
			if _, err := tx.Exec(ctx, `DELETE FROM etl.etl_runs WHERE namespace = $1 AND name = $2
				AND pipeline_uid IS DISTINCT FROM $3`, s.p.Namespace, s.p.Name, s.p.UID); err != nil {
				return c, fmt.Errorf("claim pipeline %s: remove the run log of the earlier pipeline: %w", s.p, err)
			}
		}
		// Rejects of another identity are rows of another stream: replaying them through
		// this one would write what it never read.
		if _, err := tx.Exec(ctx, `DELETE FROM etl.etl_rejects WHERE namespace = $1 AND name = $2`,
			s.p.Namespace, s.p.Name); err != nil {
			return c, fmt.Errorf("claim pipeline %s: remove the rejects of the earlier stream: %w", s.p, err)
		}
	} else if run.Mode == etlv1.ModeFull && prevFull != nil && *prevFull != run.FullStream {
		// The reader query or the transforms changed: an unfinished Full run's output is
		// not this run's, so it is not continued.
		if _, err := tx.Exec(ctx, `
			UPDATE etl.etl_state SET full_run_id = NULL, full_generation = NULL, full_columns = NULL,
				full_checkpoint = NULL, full_at = NULL
			WHERE namespace = $1 AND name = $2`, s.p.Namespace, s.p.Name); err != nil {
			return c, fmt.Errorf("claim pipeline %s: reset full checkpoint: %w", s.p, err)
		}
	}
	uid := &s.p.UID
	if s.p.UID == "" {
		uid = nil
	}

	var incCols, incVals, fullCols, fullVals []string
	var fullRun *string
	var fullGen *int64
	err = tx.QueryRow(ctx, `
		INSERT INTO etl.etl_state AS s (namespace, name, epoch, run_id, generation, claimed_at, pipeline_uid, stream, full_stream)
		VALUES ($1, $2, 1, $3, $4, now(), $5, $6, CASE WHEN $7 THEN $8 END)
		ON CONFLICT (namespace, name) DO UPDATE SET
			epoch        = s.epoch + 1,
			pipeline_uid = coalesce(EXCLUDED.pipeline_uid, s.pipeline_uid),
			stream       = EXCLUDED.stream,
			full_stream  = CASE WHEN $7 THEN EXCLUDED.full_stream ELSE s.full_stream END,
			run_id       = EXCLUDED.run_id,
			generation   = EXCLUDED.generation,
			claimed_at   = EXCLUDED.claimed_at,
			rows_read    = CASE WHEN s.run_id = EXCLUDED.run_id THEN s.rows_read ELSE 0 END,
			rows_written = CASE WHEN s.run_id = EXCLUDED.run_id THEN s.rows_written ELSE 0 END,
			batches      = CASE WHEN s.run_id = EXCLUDED.run_id THEN s.batches ELSE 0 END,
			rows_deleted = CASE WHEN s.run_id = EXCLUDED.run_id THEN s.rows_deleted ELSE 0 END,
			rows_rejected = CASE WHEN s.run_id = EXCLUDED.run_id THEN s.rows_rejected ELSE 0 END
		RETURNING epoch, rows_read, rows_written, batches, rows_deleted, rows_rejected,
			incremental_columns, incremental_checkpoint,
			full_run_id, full_generation, full_columns, full_checkpoint`,
		s.p.Namespace, s.p.Name, run.ID, run.Generation, uid, run.Stream, run.Mode == etlv1.ModeFull, run.FullStream,
	).Scan(&c.Epoch, &c.RowsRead, &c.RowsWritten, &c.Batches, &c.RowsDeleted, &c.RowsRejected,
		&incCols, &incVals, &fullRun, &fullGen, &fullCols, &fullVals)
	if err != nil {
		return c, fmt.Errorf("claim pipeline %s: %w", s.p, err)
	}
	fill(&c, incCols, incVals, fullRun, fullGen, fullCols, fullVals)

	if _, err := tx.Exec(ctx, `
		UPDATE etl.etl_runs SET outcome = $4, finished_at = now()
		WHERE namespace = $1 AND name = $2 AND run_id <> $3 AND outcome = $5`,
		s.p.Namespace, s.p.Name, run.ID, OutcomeAbandoned, OutcomeRunning); err != nil {
		return c, fmt.Errorf("claim pipeline %s: close abandoned runs: %w", s.p, err)
	}
	if _, err := tx.Exec(ctx, `
		INSERT INTO etl.etl_runs (namespace, name, run_id, epoch, mode, generation, started_at, outcome,
			rows_read, rows_written, batches, pipeline_uid, rows_deleted)
		VALUES ($1, $2, $3, $4, $5, $6, now(), $7, $8, $9, $10, $11, $12)
		ON CONFLICT (namespace, name, run_id) DO UPDATE SET
			epoch = EXCLUDED.epoch, outcome = EXCLUDED.outcome,
			finished_at = NULL, error_class = NULL, error = NULL`,
		s.p.Namespace, s.p.Name, run.ID, c.Epoch, string(run.Mode), run.Generation, OutcomeRunning,
		c.RowsRead, c.RowsWritten, c.Batches, uid, c.RowsDeleted); err != nil {
		return c, fmt.Errorf("claim pipeline %s: record run: %w", s.p, err)
	}
	if run.History > 0 {
		if _, err := tx.Exec(ctx, `
			DELETE FROM etl.etl_runs WHERE namespace = $1 AND name = $2 AND run_id IN (
				SELECT run_id FROM etl.etl_runs WHERE namespace = $1 AND name = $2
				ORDER BY started_at DESC, run_id DESC OFFSET $3)`, s.p.Namespace, s.p.Name, run.History); err != nil {
			return c, fmt.Errorf("claim pipeline %s: prune the run log: %w", s.p, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return c, fmt.Errorf("claim pipeline %s: commit: %w", s.p, err)
	}
	return c, nil
}

// Load re-reads the pipeline's state after a reconnect and checks that epoch is still the
// pipeline's: a runner must not write again after another one claimed the pipeline.
func (s *Store) Load(ctx context.Context, epoch int64) (Claim, error) {
	c := Claim{SameRun: true}
	var incCols, incVals, fullCols, fullVals []string
	var fullRun *string
	var fullGen *int64
	err := s.conn.QueryRow(ctx, `
		SELECT epoch, rows_read, rows_written, batches, rows_deleted, rows_rejected,
			incremental_columns, incremental_checkpoint,
			full_run_id, full_generation, full_columns, full_checkpoint
		FROM etl.etl_state WHERE namespace = $1 AND name = $2`, s.p.Namespace, s.p.Name,
	).Scan(&c.Epoch, &c.RowsRead, &c.RowsWritten, &c.Batches, &c.RowsDeleted, &c.RowsRejected,
		&incCols, &incVals, &fullRun, &fullGen, &fullCols, &fullVals)
	if err != nil {
		return c, fmt.Errorf("load state of pipeline %s: %w", s.p, err)
	}
	if c.Epoch != epoch {
		return c, fmt.Errorf("pipeline %s: epoch is %d, this runner claimed %d: %w", s.p, c.Epoch, epoch, failure.ErrFenced)
	}
	fill(&c, incCols, incVals, fullRun, fullGen, fullCols, fullVals)
	return c, nil
}

func fill(c *Claim, incCols, incVals []string, fullRun *string, fullGen *int64, fullCols, fullVals []string) {
	if incVals != nil {
		c.Incremental = &Position{Columns: incCols, Values: incVals}
	}
	if fullVals != nil && fullRun != nil && fullGen != nil {
		c.Full = &FullPosition{Position: Position{Columns: fullCols, Values: fullVals}, RunID: *fullRun, Generation: *fullGen}
	}
}

// Advance is the effect of a committed batch on the pipeline's state.
type Advance struct {
	Mode       etlv1.Mode
	RunID      string
	Generation int64
	// Position is the new checkpoint; nil leaves the checkpoint as it is (counters only).
	Position *Position
	// Increments of the run's counters.
	RowsRead, RowsWritten, Batches int64
	RowsDeleted                    int64
}

// advanceSQL calls etl.advance, which raises failure.FencedSQLState when epoch is stale and
// failure.CheckpointMovedSQLState when the checkpoint is not the expected one.
const advanceSQL = "SELECT etl.advance($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"

// Statement is a statement with its parameters in text format, for a sink that sends it in the
// batch's own transaction (sink.TxSink).
type Statement struct {
	SQL    string
	Params [][]byte
}

// AdvanceStatement returns the checkpoint write of a as a statement that fails, with
// failure.FencedSQLState, unless epoch is still the pipeline's, and, when expected is not nil,
// with failure.CheckpointMovedSQLState unless the checkpoint is still expected.
func (s *Store) AdvanceStatement(epoch int64, a Advance, expected []string) Statement {
	text := func(v string) []byte { return []byte(v) }
	params := [][]byte{
		text(s.p.Namespace), text(s.p.Name), text(strconv.FormatInt(epoch, 10)),
		text(strconv.FormatBool(a.Mode == etlv1.ModeFull)), text(a.RunID), text(strconv.FormatInt(a.Generation, 10)),
		nil, nil,
		text(strconv.FormatInt(a.RowsRead, 10)), text(strconv.FormatInt(a.RowsWritten, 10)), text(strconv.FormatInt(a.Batches, 10)),
		nil, text(strconv.FormatInt(a.RowsDeleted, 10)),
	}
	if expected != nil {
		params[11] = text(arrayLiteral(expected))
	}
	if a.Position != nil {
		params[6] = text(arrayLiteral(a.Position.Columns))
		params[7] = text(arrayLiteral(a.Position.Values))
	}
	return Statement{SQL: advanceSQL, Params: params}
}

// arrayLiteral renders a text[] in Postgres' array input syntax, every element quoted.
func arrayLiteral(values []string) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, v := range values {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('"')
		for _, r := range v {
			if r == '"' || r == '\\' {
				b.WriteByte('\\')
			}
			b.WriteRune(r)
		}
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

// Advance records a committed batch on its own: the new checkpoint and the counters'
// increments, and with them the statements of also (the batch's rejects), in one
// transaction. It writes only while epoch is the pipeline's, else returns failure.ErrFenced.
func (s *Store) Advance(ctx context.Context, epoch int64, a Advance, also ...*Statement) error {
	st := s.AdvanceStatement(epoch, a, nil)
	var err error
	if len(also) == 0 {
		err = s.conn.PgConn().ExecParams(ctx, st.SQL, st.Params, nil, nil, nil).Read().Err
	} else {
		// A batch of statements runs as one implicit transaction: an error rolls back all.
		b := &pgconn.Batch{}
		b.ExecParams(st.SQL, st.Params, nil, nil, nil)
		for _, x := range also {
			b.ExecParams(x.SQL, x.Params, nil, nil, nil)
		}
		_, err = s.conn.PgConn().ExecBatch(ctx, b).ReadAll()
	}
	if err != nil {
		if failure.IsFenced(err) {
			return fmt.Errorf("commit checkpoint of pipeline %s: epoch %d is no longer current: %w", s.p, epoch, failure.ErrFenced)
		}
		return fmt.Errorf("commit checkpoint of pipeline %s: %w", s.p, err)
	}
	return nil
}

// StartFullOver forgets the Full run's checkpoint, so that a runner that dies before the
// run's first new batch commits resumes from the start too, not after a position of the pass
// the sink lost. It writes only while epoch is current, else returns failure.ErrFenced.
func (s *Store) StartFullOver(ctx context.Context, epoch int64) error {
	tag, err := s.conn.Exec(ctx, `
		UPDATE etl.etl_state SET full_columns = NULL, full_checkpoint = NULL, full_at = NULL
		WHERE namespace = $1 AND name = $2 AND epoch = $3`, s.p.Namespace, s.p.Name, epoch)
	if err != nil {
		return fmt.Errorf("start the full run of pipeline %s over: %w", s.p, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("start the full run of pipeline %s over: %w", s.p, failure.ErrFenced)
	}
	return nil
}

// Sync copies the run's committed counters into its etl_runs row, so that a run that dies
// without a report still shows how far it got.
func (s *Store) Sync(ctx context.Context, epoch int64, runID string) error {
	_, err := s.conn.Exec(ctx, `
		UPDATE etl.etl_runs r SET rows_read = s.rows_read, rows_written = s.rows_written, batches = s.batches,
			rows_deleted = s.rows_deleted, rows_rejected = s.rows_rejected
		FROM etl.etl_state s
		WHERE r.namespace = $1 AND r.name = $2 AND r.run_id = $3
		  AND s.namespace = r.namespace AND s.name = r.name AND s.run_id = r.run_id AND s.epoch = $4`,
		s.p.Namespace, s.p.Name, runID, epoch)
	if err != nil {
		return fmt.Errorf("record progress of run %s of pipeline %s: %w", runID, s.p, err)
	}
	return nil
}

// End is how a run ended.
type End struct {
	Outcome    string
	ErrorClass etlv1.ErrorClass
	Error      string
	// ResetFull clears the full-mode checkpoint: a completed full run leaves nothing to resume.
	ResetFull bool
	// RowsSwept is what a completed Mirror run removed.
	RowsSwept int64
	// RejectsReplayed is what a replay of rejects wrote.
	RejectsReplayed int64
}

// Finish closes the run's etl_runs row with its outcome and final counters. It writes only
// while epoch is current: a fenced runner leaves the row to the runner that fenced it.
func (s *Store) Finish(ctx context.Context, epoch int64, runID string, end End) error {
	tx, err := s.conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("finish run %s of pipeline %s: %w", runID, s.p, err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if end.ResetFull {
		tag, err := tx.Exec(ctx, `
			UPDATE etl.etl_state SET full_run_id = NULL, full_generation = NULL, full_columns = NULL,
				full_checkpoint = NULL, full_at = NULL
			WHERE namespace = $1 AND name = $2 AND epoch = $3`, s.p.Namespace, s.p.Name, epoch)
		if err != nil {
			return fmt.Errorf("finish run %s of pipeline %s: reset full checkpoint: %w", runID, s.p, err)
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("finish run %s of pipeline %s: %w", runID, s.p, failure.ErrFenced)
		}
	}
	var class, msg *string
	if end.ErrorClass != "" {
		c := string(end.ErrorClass)
		class = &c
	}
	if end.Error != "" {
		msg = &end.Error
	}
	tag, err := tx.Exec(ctx, `
		UPDATE etl.etl_runs r SET finished_at = now(), outcome = $5, error_class = $6, error = $7,
			rows_read = s.rows_read, rows_written = s.rows_written, batches = s.batches,
			rows_deleted = s.rows_deleted, rows_swept = $8, rows_rejected = s.rows_rejected,
			rejects_replayed = $9
		FROM etl.etl_state s
		WHERE r.namespace = $1 AND r.name = $2 AND r.run_id = $3
		  AND s.namespace = r.namespace AND s.name = r.name AND s.run_id = r.run_id AND s.epoch = $4`,
		s.p.Namespace, s.p.Name, runID, epoch, end.Outcome, class, msg, end.RowsSwept, end.RejectsReplayed)
	if err != nil {
		return fmt.Errorf("finish run %s of pipeline %s: %w", runID, s.p, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("finish run %s of pipeline %s: epoch %d is no longer current: %w", runID, s.p, epoch, failure.ErrFenced)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("finish run %s of pipeline %s: commit: %w", runID, s.p, err)
	}
	return nil
}

// Forget removes the state of a deleted pipeline: its etl_state row, its run log and its
// rejects, as long
// as they are its own (the UID it recorded, or none when written before identities). State
// that a newer pipeline of the same name already claimed is left to it. It returns the number
// of rows removed. The caller holds the pipeline's lock, so no runner of it is writing.
func (s *Store) Forget(ctx context.Context) (int64, error) {
	if s.p.UID == "" {
		return 0, errors.New("forget pipeline state: the pipeline's uid is required")
	}
	var exists, rejects bool
	if err := s.conn.QueryRow(ctx, `SELECT to_regclass('etl.etl_state') IS NOT NULL, to_regclass('etl.etl_rejects') IS NOT NULL`).Scan(&exists, &rejects); err != nil {
		return 0, fmt.Errorf("forget state of pipeline %s: %w", s.p, err)
	}
	if !exists {
		return 0, nil // no run ever reached this state database
	}
	tx, err := s.conn.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("forget state of pipeline %s: %w", s.p, err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	var n int64
	stmts := []string{
		`DELETE FROM etl.etl_state WHERE namespace = $1 AND name = $2 AND (pipeline_uid = $3 OR pipeline_uid IS NULL)`,
		`DELETE FROM etl.etl_runs WHERE namespace = $1 AND name = $2 AND (pipeline_uid = $3 OR pipeline_uid IS NULL)`,
	}
	if rejects { // a state database that no runner of this version migrated has none
		stmts = append(stmts, `DELETE FROM etl.etl_rejects WHERE namespace = $1 AND name = $2 AND (pipeline_uid = $3 OR pipeline_uid IS NULL)`)
	}
	for _, stmt := range stmts {
		tag, err := tx.Exec(ctx, stmt, s.p.Namespace, s.p.Name, s.p.UID)
		if err != nil {
			return 0, fmt.Errorf("forget state of pipeline %s: %w", s.p, err)
		}
		n += tag.RowsAffected()
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("forget state of pipeline %s: commit: %w", s.p, err)
	}
	return n, nil
}
