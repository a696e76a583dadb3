package state

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// SlotRecord is a replication slot and publication a CDC pipeline created in a source.
type SlotRecord struct {
	UID, Connection, Slot, Publication string
}

// RecordSlot records the slot and publication of the pipeline's stream before they are
// created: a crash right after the creation leaves nothing unknown behind.
func (s *Store) RecordSlot(ctx context.Context, r SlotRecord) error {
	_, err := s.conn.Exec(ctx, `INSERT INTO etl.etl_slots (namespace, name, pipeline_uid, connection, slot, publication)
		VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (connection, slot) DO NOTHING`,
		s.p.Namespace, s.p.Name, r.UID, r.Connection, r.Slot, r.Publication)
	if err != nil {
		return fmt.Errorf("record replication slot %s of pipeline %s: %w", r.Slot, s.p, err)
	}
	return nil
}

// Slots returns the slots recorded for the pipeline's name, of any UID: those of an
// earlier pipeline of the name, or of an earlier stream, are to be dropped.
func (s *Store) Slots(ctx context.Context) ([]SlotRecord, error) {
	var exists bool
	if err := s.conn.QueryRow(ctx, `SELECT to_regclass('etl.etl_slots') IS NOT NULL`).Scan(&exists); err != nil || !exists {
		return nil, err
	}
	rows, err := s.conn.Query(ctx, `SELECT pipeline_uid, connection, slot, publication FROM etl.etl_slots
		WHERE namespace = $1 AND name = $2 ORDER BY created_at`, s.p.Namespace, s.p.Name)
	if err != nil {
		return nil, fmt.Errorf("read replication slots of pipeline %s: %w", s.p, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (SlotRecord, error) {
		var x SlotRecord
		err := r.Scan(&x.UID, &x.Connection, &x.Slot, &x.Publication)
		return x, err
	})
	if err != nil {
		return nil, fmt.Errorf("read replication slots of pipeline %s: %w", s.p, err)
	}
	return out, nil
}

// ForgetSlot removes the record of a slot that was dropped.
func (s *Store) ForgetSlot(ctx context.Context, connection, slot string) error {
	if _, err := s.conn.Exec(ctx, `DELETE FROM etl.etl_slots WHERE connection = $1 AND slot = $2`, connection, slot); err != nil {
		return fmt.Errorf("forget replication slot %s: %w", slot, err)
	}
	return nil
}
