package cdc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/failure"
)

// ConnectReplication opens a replication connection (replication=database) to dsn: it runs
// replication commands and, for the publication, plain SQL. A cancelled context only
// interrupts a read (a deadline), never the connection: a wait for the next change is
// cancelled every time the stream is idle.
func ConnectReplication(ctx context.Context, dsn, appName string) (*pgconn.PgConn, error) {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return nil, failure.Business(errors.New("cdc: the source DSN does not parse"))
	}
	cfg.RuntimeParams["replication"] = "database"
	cfg.RuntimeParams["application_name"] = appName
	delete(cfg.RuntimeParams, "default_transaction_read_only")
	if cfg.ConnectTimeout == 0 || cfg.ConnectTimeout > 10*time.Second {
		cfg.ConnectTimeout = 10 * time.Second
	}
	dialer := &net.Dialer{KeepAlive: 15 * time.Second}
	cfg.DialFunc = dialer.DialContext
	cfg.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.DeadlineContextWatcherHandler{Conn: c.Conn()}
	}
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("cdc: open a replication connection to the source: %w", err)
	}
	return conn, nil
}

// EnsurePublication creates the publication of table (`schema.table`) unless it exists.
func EnsurePublication(ctx context.Context, conn *pgconn.PgConn, publication, table string) error {
	schema, name := SplitTable(table)
	q := fmt.Sprintf(`DO $$ BEGIN
		IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = %s) THEN
			CREATE PUBLICATION %s FOR TABLE %s.%s;
		END IF; END $$`, quoteLiteral(publication), pgx.Identifier{publication}.Sanitize(),
		pgx.Identifier{schema}.Sanitize(), pgx.Identifier{name}.Sanitize())
	if _, err := conn.Exec(ctx, q).ReadAll(); err != nil {
		return fmt.Errorf("cdc: create publication %s for %s.%s: %w", publication, schema, name, err)
	}
	return nil
}

func quoteLiteral(s string) string {
	out := []byte{'\''}
	for i := 0; i < len(s); i++ {
		if s[i] == '\'' {
			out = append(out, '\'')
		}
		out = append(out, s[i])
	}
	return string(append(out, '\''))
}

// Created is a slot just created: the position its stream starts at and the snapshot the
// initial copy reads, valid while the connection that created it stays idle.
type Created struct {
	ConsistentPoint pglogrepl.LSN
	Snapshot        string
}

// CreateSlot creates the logical replication slot (pgoutput), exporting its snapshot.
func CreateSlot(ctx context.Context, conn *pgconn.PgConn, slot string) (Created, error) {
	res, err := pglogrepl.CreateReplicationSlot(ctx, conn, slot, "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{SnapshotAction: "EXPORT_SNAPSHOT", Mode: pglogrepl.LogicalReplication})
	if err != nil {
		return Created{}, fmt.Errorf("cdc: create replication slot %s: %w", slot, err)
	}
	lsn, err := pglogrepl.ParseLSN(res.ConsistentPoint)
	if err != nil {
		return Created{}, fmt.Errorf("cdc: slot %s: consistent point %q: %w", slot, res.ConsistentPoint, err)
	}
	return Created{ConsistentPoint: lsn, Snapshot: res.SnapshotName}, nil
}

// DropSlot drops a slot if it exists, waiting for a walsender that still uses it (a runner
// that is stopping) to let go.
func DropSlot(ctx context.Context, conn *pgconn.PgConn, slot string) error {
	err := pglogrepl.DropReplicationSlot(ctx, conn, slot, pglogrepl.DropReplicationSlotOptions{Wait: true})
	var pgErr *pgconn.PgError
	if err != nil && (!errors.As(err, &pgErr) || pgErr.Code != "42704") { // 42704: undefined_object, no such slot
		return fmt.Errorf("cdc: drop replication slot %s: %w", slot, err)
	}
	return nil
}

// ReleaseSlot ends the walsender that still streams a slot for an earlier runner of the
// pipeline (a pod whose node went away keeps its connection until wal_sender_timeout), and
// waits, up to wait, for the slot to be free. Only the runner that claimed the pipeline calls
// it, so the holder is a runner that lost its claim: its commits are fenced already. A role
// that may not signal the holder leaves it: starting the stream then fails as a retried
// infrastructure error until the server lets go.
func ReleaseSlot(ctx context.Context, conn *pgx.Conn, slot string, wait time.Duration) (released bool, err error) {
	var pid *int32
	err = conn.QueryRow(ctx, `SELECT active_pid FROM pg_replication_slots
		WHERE slot_name = $1 AND database = current_database() AND active AND active_pid <> pg_backend_pid()`, slot).Scan(&pid)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && pid == nil) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("cdc: read the holder of replication slot %s: %w", slot, err)
	}
	var pgErr *pgconn.PgError
	if _, err := conn.Exec(ctx, "SELECT pg_terminate_backend($1)", *pid); err != nil {
		if errors.As(err, &pgErr) && pgErr.Code == "42501" { // insufficient_privilege
			return false, nil
		}
		return false, fmt.Errorf("cdc: end the walsender %d that holds replication slot %s: %w", *pid, slot, err)
	}
	deadline := time.Now().Add(wait)
	for {
		var active bool
		err := conn.QueryRow(ctx, `SELECT coalesce((SELECT active FROM pg_replication_slots
			WHERE slot_name = $1 AND database = current_database()), false)`, slot).Scan(&active)
		if err != nil {
			return true, fmt.Errorf("cdc: read replication slot %s: %w", slot, err)
		}
		if !active || time.Now().After(deadline) {
			return true, nil
		}
		select {
		case <-ctx.Done():
			return true, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// DropPublication drops a publication if it exists.
func DropPublication(ctx context.Context, conn *pgconn.PgConn, publication string) error {
	if _, err := conn.Exec(ctx, "DROP PUBLICATION IF EXISTS "+pgx.Identifier{publication}.Sanitize()).ReadAll(); err != nil {
		return fmt.Errorf("cdc: drop publication %s: %w", publication, err)
	}
	return nil
}

// Slot is a replication slot as pg_replication_slots shows it.
type Slot struct {
	Exists bool
	// WALStatus is reserved, extended, unreserved or lost; Invalidated the server's reason
	// for a lost slot, when it gives one.
	WALStatus   string
	Invalidated string
	// Confirmed is the position the slot's consumer confirmed; Retained the WAL bytes the
	// slot holds back (current WAL position - restart_lsn).
	Confirmed pglogrepl.LSN
	Retained  int64
	// Current is the source's current WAL position.
	Current pglogrepl.LSN
	// MaxWALSize is the server's max_wal_size in bytes.
	MaxWALSize int64
}

// InspectSlot reads a slot of the connection's database.
func InspectSlot(ctx context.Context, conn *pgx.Conn, slot string) (Slot, error) {
	s := Slot{}
	var current string
	var maxWAL int64
	if err := conn.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text,
		(SELECT setting::bigint * CASE unit WHEN 'MB' THEN 1048576 WHEN 'kB' THEN 1024 ELSE 1 END FROM pg_settings WHERE name = 'max_wal_size')`).
		Scan(&current, &maxWAL); err != nil {
		return s, fmt.Errorf("cdc: read the source's WAL position: %w", err)
	}
	s.MaxWALSize = maxWAL
	var err error
	if s.Current, err = pglogrepl.ParseLSN(current); err != nil {
		return s, err
	}
	var walStatus, confirmed, invalidated *string
	var retained *int64
	// invalidation_reason exists from Postgres 17; conflicting is older. Read it through
	// to_jsonb so that one query serves every version.
	err = conn.QueryRow(ctx, `SELECT wal_status, confirmed_flush_lsn::text,
		pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint, to_jsonb(s) ->> 'invalidation_reason'
		FROM pg_replication_slots s WHERE slot_name = $1 AND database = current_database()`, slot).
		Scan(&walStatus, &confirmed, &retained, &invalidated)
	if errors.Is(err, pgx.ErrNoRows) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("cdc: read replication slot %s: %w", slot, err)
	}
	s.Exists = true
	if walStatus != nil {
		s.WALStatus = *walStatus
	}
	if invalidated != nil {
		s.Invalidated = *invalidated
	}
	if retained != nil {
		s.Retained = *retained
	}
	if confirmed != nil {
		if s.Confirmed, err = pglogrepl.ParseLSN(*confirmed); err != nil {
			return s, err
		}
	}
	return s, nil
}

// Lost reports whether the server invalidated the slot: it no longer has the WAL its
// stream needs.
func (s Slot) Lost() bool { return s.Exists && s.WALStatus == "lost" }

// Health judges a slot for the ReplicationSlotHealthy condition: whether it is healthy, the
// reason and a message. Pure, so it is table-tested.
func Health(s Slot) (bool, string, string) {
	switch {
	case !s.Exists:
		return false, etlv1.ReasonSlotLost, "the replication slot does not exist in the source"
	case s.Lost():
		why := ""
		if s.Invalidated != "" {
			why = " (" + s.Invalidated + ")"
		}
		return false, etlv1.ReasonSlotLost, "the server invalidated the replication slot" + why +
			": the WAL it needed is gone; resnapshot the pipeline (docs/cdc.md)"
	case s.WALStatus == "unreserved":
		return false, etlv1.ReasonWALUnreserved, fmt.Sprintf("the slot retains %s of WAL, past max_slot_wal_keep_size: "+
			"the server will invalidate it at its next checkpoint unless the pipeline catches up", bytesText(s.Retained))
	case s.WALStatus == "extended":
		return false, etlv1.ReasonWALExtended, fmt.Sprintf("the slot retains %s of WAL, more than max_wal_size (%s)",
			bytesText(s.Retained), bytesText(s.MaxWALSize))
	}
	return true, etlv1.ReasonWALReserved, fmt.Sprintf("the slot retains %s of WAL", bytesText(s.Retained))
}

func bytesText(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
