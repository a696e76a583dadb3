package state

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Outcomes of a checkpoint change in etl_runs.
const (
	OutcomeCheckpointReset = "checkpoint-reset"
	OutcomeCheckpointSet   = "checkpoint-set"
)

// ModeCheckpoint is the mode etl_runs records for a checkpoint change.
const ModeCheckpoint = "Checkpoint"

// CheckpointChange is a change of a paused pipeline's checkpoint that a person asked for.
type CheckpointChange struct {
	// RunID names the change in etl_runs; RequestedBy is who asked.
	RunID, RequestedBy string
	// Reset forgets both checkpoints; else the Incremental checkpoint becomes Values on the
	// order columns Columns.
	Reset           bool
	Columns, Values []string
}

// ErrNoState means the pipeline has no state yet: no run ever claimed it.
var ErrNoState = errors.New("no run of the pipeline claimed it yet: it has no checkpoint to set")

// ChangeCheckpoint applies c in one transaction and records it in etl_runs. The caller holds
// the pipeline's lock, so no runner of it is writing; the epoch is bumped, so that a runner
// that lost its session while the change was made cannot commit after it.
func (s *Store) ChangeCheckpoint(ctx context.Context, c CheckpointChange) error {
	tx, err := s.conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("change checkpoint of pipeline %s: %w", s.p, err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	var epoch int64
	err = tx.QueryRow(ctx, `SELECT epoch FROM etl.etl_state WHERE namespace = $1 AND name = $2 FOR UPDATE`,
		s.p.Namespace, s.p.Name).Scan(&epoch)
	found := err == nil
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("change checkpoint of pipeline %s: %w", s.p, err)
	}
	outcome := OutcomeCheckpointReset
	switch {
	case c.Reset && found:
		_, err = tx.Exec(ctx, `
			UPDATE etl.etl_state SET epoch = epoch + 1,
				incremental_columns = NULL, incremental_checkpoint = NULL, incremental_at = NULL,
				full_run_id = NULL, full_generation = NULL, full_columns = NULL, full_checkpoint = NULL, full_at = NULL
			WHERE namespace = $1 AND name = $2`, s.p.Namespace, s.p.Name)
	case c.Reset:
		// Nothing was ever committed: there is nothing to forget.
	case !found:
		return fmt.Errorf("set checkpoint of pipeline %s: %w", s.p, ErrNoState)
	default:
		outcome = OutcomeCheckpointSet
		_, err = tx.Exec(ctx, `
			UPDATE etl.etl_state SET epoch = epoch + 1,
				incremental_columns = $3, incremental_checkpoint = $4, incremental_at = now(),
				full_run_id = NULL, full_generation = NULL, full_columns = NULL, full_checkpoint = NULL, full_at = NULL
			WHERE namespace = $1 AND name = $2`, s.p.Namespace, s.p.Name, c.Columns, c.Values)
	}
	if err != nil {
		return fmt.Errorf("change checkpoint of pipeline %s: %w", s.p, err)
	}
	var uid *string
	if s.p.UID != "" {
		uid = &s.p.UID
	}
	if _, err := tx.Exec(ctx, `
		INSERT INTO etl.etl_runs (namespace, name, run_id, epoch, mode, generation, started_at, finished_at, outcome,
			pipeline_uid, requested_by, checkpoint)
		VALUES ($1, $2, $3, $4, $5, 0, now(), now(), $6, $7, $8, $9)
		ON CONFLICT (namespace, name, run_id) DO NOTHING`,
		s.p.Namespace, s.p.Name, c.RunID, epoch+1, ModeCheckpoint, outcome, uid, c.RequestedBy, c.Values); err != nil {
		return fmt.Errorf("record checkpoint change of pipeline %s: %w", s.p, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("change checkpoint of pipeline %s: commit: %w", s.p, err)
	}
	return nil
}
