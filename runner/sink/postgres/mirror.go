package postgres

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/sluice-dev/sluice/runner/failure"
	"github.com/sluice-dev/sluice/runner/sink"
)

// A Mirror run (target.fullSync Mirror) records every key it writes in a side table of the
// sink's database, etl.mirror_<pipeline>, in the same transaction as the batch's upsert. The
// table survives a crash of the runner and a pause, so a resumed run continues it; it is
// unlogged (a Mirror run writes every key once more), so a crash of the database server
// empties it, which BeginMirror detects and answers by starting the run over. Once the last
// batch is committed, FinishMirror deletes in one transaction every row of the target whose
// key is not in the side table, unless that is more than maxDeleteRatio of the table, and
// marks the side table swept in the same transaction (its comment), so that a runner
// replacing one that crashed right after the sweep does not start the run over; DoneMirror
// drops it once the run is recorded.

var _ sink.Mirror = (*Sink)(nil)

// MirrorTable returns the side table of a pipeline's Mirror runs.
func MirrorTable(pipeline string) pgx.Identifier {
	sum := sha256.Sum256([]byte(pipeline))
	return pgx.Identifier{"etl", "mirror_" + hex.EncodeToString(sum[:12])}
}

// BeginMirror implements sink.Mirror.
func (s *Sink) BeginMirror(ctx context.Context, run sink.MirrorRun) (bool, error) {
	if len(s.shapes) > 0 {
		return false, fmt.Errorf("write to %s: BeginMirror after the first write", s.name())
	}
	side := MirrorTable(run.Pipeline)
	s.ratio = run.MaxDeleteRatio
	s.swept = nil
	if run.Resume {
		var exists, rows bool
		var comment *string
		if err := s.conn.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL, obj_description(to_regclass($1), 'pg_class')`,
			side.Sanitize()).Scan(&exists, &comment); err != nil {
			return false, fmt.Errorf("write to %s: look up the Mirror run's keys: %w", s.name(), err)
		}
		if n, ok := sweptMark(comment); exists && ok {
			s.side, s.swept = side, &n
			return true, nil
		}
		if exists {
			if err := s.conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM "+side.Sanitize()+")").Scan(&rows); err != nil {
				return false, fmt.Errorf("write to %s: look up the Mirror run's keys: %w", s.name(), err)
			}
		}
		if exists && rows {
			s.side = side
			return true, nil
		}
		return false, nil
	}
	keys := make([]string, len(s.key))
	for i, k := range s.key {
		keys[i] = pgx.Identifier{k}.Sanitize()
	}
	list := strings.Join(keys, ", ")
	tx, err := s.conn.Begin(ctx)
	if err != nil {
		return false, fmt.Errorf("write to %s: %w", s.name(), err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	for _, stmt := range []string{
		"CREATE SCHEMA IF NOT EXISTS etl",
		"DROP TABLE IF EXISTS " + side.Sanitize(),
		// The key columns with the target's types, and no rows. No index: a key recorded twice
		// (a batch replayed) changes nothing for the sweep's anti-join, and an index with
		// ON CONFLICT cost seven times the plain insert (1.7 s against 0.25 s for a million
		// keys in batches of 5000).
		"CREATE UNLOGGED TABLE " + side.Sanitize() + " AS SELECT " + list + " FROM " + s.target().Sanitize() + " WITH NO DATA",
	} {
		if _, err := tx.Exec(ctx, stmt); err != nil {
			err = fmt.Errorf("write to %s: create the table of the Mirror run's keys %s: %w", s.name(), side.Sanitize(), err)
			if isPrivilege(err) {
				return false, failure.Business(fmt.Errorf("%w: a Mirror run needs CREATE on the sink database's etl schema (or on the database, to create it)", err))
			}
			return false, err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return false, fmt.Errorf("write to %s: %w", s.name(), err)
	}
	s.side = side
	return true, nil
}

// FinishMirror implements sink.Mirror: the sweep.
func (s *Sink) FinishMirror(ctx context.Context) (int64, error) {
	if s.side == nil {
		return 0, fmt.Errorf("write to %s: FinishMirror without BeginMirror", s.name())
	}
	if s.swept != nil {
		return *s.swept, nil
	}
	if err := s.closePipeline(ctx); err != nil {
		return 0, err
	}
	tx, err := s.conn.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("sweep %s: %w", s.name(), err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	var total int64
	if err := tx.QueryRow(ctx, "SELECT count(*) FROM "+s.target().Sanitize()).Scan(&total); err != nil {
		return 0, fmt.Errorf("sweep %s: count the rows: %w", s.name(), err)
	}
	tag, err := tx.Exec(ctx, sweepSQL(s.target(), s.side, s.key))
	if err != nil {
		return 0, fmt.Errorf("sweep %s: %w", s.name(), err)
	}
	swept := tag.RowsAffected()
	if sink.ExceedsDeleteRatio(swept, total, s.ratio) {
		_ = tx.Rollback(ctx)
		// The next Full run starts over and makes a new table.
		_, _ = s.conn.Exec(ctx, "DROP TABLE IF EXISTS "+s.side.Sanitize())
		return 0, failure.Business(fmt.Errorf("sweep %s: the Full run did not read %d of the table's %d rows (%.1f%%), "+
			"more than target.maxDeleteRatio %g allows: nothing was deleted. If the source really lost those rows, "+
			"raise maxDeleteRatio (1 allows any sweep) and run again", s.name(), swept, total, 100*float64(swept)/float64(total), s.ratio))
	}
	if _, err := tx.Exec(ctx, "COMMENT ON TABLE "+s.side.Sanitize()+" IS '"+sweptPrefix+strconv.FormatInt(swept, 10)+"'"); err != nil {
		return 0, fmt.Errorf("sweep %s: mark the table of the run's keys: %w", s.name(), err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("sweep %s: commit: %w", s.name(), err)
	}
	s.swept = &swept
	return swept, nil
}

// DoneMirror implements sink.Mirror: the side table goes.
func (s *Sink) DoneMirror(ctx context.Context) error {
	if s.side == nil {
		return nil
	}
	if _, err := s.conn.Exec(ctx, "DROP TABLE IF EXISTS "+s.side.Sanitize()); err != nil {
		return fmt.Errorf("write to %s: drop the table of the Mirror run's keys: %w", s.name(), err)
	}
	s.side, s.swept = nil, nil
	return nil
}

// sweptPrefix starts the comment of a side table whose sweep committed, followed by the
// number of rows swept.
const sweptPrefix = "sluice: swept "

// sweptMark reads the number of rows swept from a side table's comment.
func sweptMark(comment *string) (int64, bool) {
	if comment == nil || !strings.HasPrefix(*comment, sweptPrefix) {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimPrefix(*comment, sweptPrefix), 10, 64)
	return n, err == nil
}

// ForgetMirror drops the side table a pipeline's unfinished Mirror run left, if any.
func ForgetMirror(ctx context.Context, conn *pgx.Conn, pipeline string) error {
	if _, err := conn.Exec(ctx, "DROP TABLE IF EXISTS "+MirrorTable(pipeline).Sanitize()); err != nil {
		var pgErr interface{ SQLState() string }
		if errors.As(err, &pgErr) && pgErr.SQLState() == "3F000" { // no etl schema: nothing to drop
			return nil
		}
		return fmt.Errorf("drop the table of the Mirror run's keys: %w", err)
	}
	return nil
}

// isPrivilege reports a missing privilege (insufficient_privilege).
func isPrivilege(err error) bool {
	var pgErr interface{ SQLState() string }
	return errors.As(err, &pgErr) && pgErr.SQLState() == "42501"
}
