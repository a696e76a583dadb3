package source

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluice-dev/sluice/runner/failure"
)

// A row's cursor value is not its commit order: now() (CURRENT_TIMESTAMP, a trigger's
// transaction_timestamp()) is the writing transaction's *start*, and a sequence value is taken
// long before the row commits. A page that read every row after the checkpoint would let a
// late committer land below it, lost forever. So an Incremental run reads only below a
// horizon that no transaction still open can write under, fixed when the run starts (so the
// run ends under any write load):
//
//   - a time cursor (timestamptz, timestamp, date): the start of the oldest transaction open
//     in the source database, or now() when there is none, minus spec.source.cursor.lag. A
//     transaction that is not open when the horizon is taken starts later, so it stamps later.
//   - any other cursor (an integer from a sequence): the largest cursor value committed when
//     the run starts, once every transaction open at that moment has ended. A value below it
//     was taken before it, by a transaction open then (now ended) or committed already.
//
// The order matters: the horizon is read in its own statement *before* the snapshot of any
// page, from the database's clock. A transaction committing between the two is then either
// still counted in the horizon or visible to the page. Reading both in one snapshot races: a
// transaction committing after the snapshot but before pg_stat_activity is read is neither
// visible nor counted (and pg_stat_activity is itself frozen at its first read in a
// transaction, so it must not share the page's transaction either).

// Holder is the transaction that holds a horizon back.
type Holder struct {
	PID         int32
	Application string
	// State is pg_stat_activity.state ("idle in transaction", "active") or "prepared".
	State string
	// Since is the transaction's start (for a prepared transaction: when it was prepared).
	Since time.Time
	// GID names a prepared transaction.
	GID string
}

// String describes the holder for a condition message.
func (h Holder) String() string {
	if h.GID != "" {
		return fmt.Sprintf("prepared transaction %q (prepared at %s)", h.GID, h.Since.UTC().Format(time.RFC3339))
	}
	app := h.Application
	if app == "" {
		app = "(none)"
	}
	return fmt.Sprintf("backend pid %d (application %q, %s since %s)", h.PID, app, h.State, h.Since.UTC().Format(time.RFC3339))
}

// Horizon is an Incremental run's upper bound.
type Horizon struct {
	// Value is the bound in Postgres' text format; the page casts it to BoundType.
	Value string
	// Inclusive is true for a commit barrier (cursor <= value), false for a time horizon
	// (cursor < value).
	Inclusive bool
	// Empty means nothing after the checkpoint is safe to read in this run.
	Empty bool
	// Holder is the oldest transaction still open when the horizon was taken (nil: none).
	Holder *Holder
}

// Cursor kinds, from the cursor column's type.
const (
	cursorTime     = "time"
	cursorSequence = "sequence"
)

// cursorKind tells how a cursor of a type is bounded.
func cursorKind(typeName string) string {
	switch typeName {
	case "timestamp with time zone", "timestamp without time zone", "date":
		return cursorTime
	}
	if strings.HasPrefix(typeName, "timestamp(") {
		return cursorTime // timestamp(3) with/without time zone
	}
	return cursorSequence
}

// openSQL lists the transactions open in the source database that could still write rows: the
// client backends and background workers (pg_cron and friends) of this database, except the
// runner's own sessions, and the prepared transactions. Autovacuum and replication processes
// write no user rows. A prepared transaction's start is not recorded; its prepare time is the
// nearest bound Postgres keeps (rows it stamped earlier need lag as a margin, see README).
//
// Every row carries now(), the same clock the transactions' starts are on; one row with no
// transaction (a NULL start) carries it when none is open.
const openSQL = `
	SELECT a.pid, coalesce(a.application_name, ''), coalesce(a.state, ''), a.xact_start, '', now()
	FROM pg_stat_activity a
	WHERE a.datname = current_database() AND a.xact_start IS NOT NULL
	  AND a.backend_type IN ('client backend', 'background worker')
	  AND a.pid <> pg_backend_pid() AND NOT (a.pid = ANY ($1::int4[]) AND a.application_name = $2)
	UNION ALL
	SELECT 0, '', 'prepared', p.prepared, p.gid, now()
	FROM pg_prepared_xacts p WHERE p.database = current_database()
	UNION ALL
	SELECT 0, '', '', NULL, '', now()
	ORDER BY 4 NULLS LAST
`

// sourceSQL tells whether the role sees other roles' transactions (without pg_read_all_stats,
// pg_stat_activity shows NULL for their xact_start, which would look like no open transaction
// at all) and whether the source is a standby.
const sourceSQL = `SELECT pg_has_role(current_user, 'pg_read_all_stats', 'USAGE'), pg_is_in_recovery()`

// checkSource refuses, once per run, a source on which no horizon of the cursor's kind can be
// known: a role that cannot see the other sessions, or a standby (which cannot see the
// primary's open transactions) unless lag gives a margin for a time cursor.
func checkSource(ctx context.Context, conn *pgx.Conn, kind string, lag time.Duration) error {
	var canSee, standby bool
	if err := conn.QueryRow(ctx, sourceSQL).Scan(&canSee, &standby); err != nil {
		return fmt.Errorf("read horizon: %w", err)
	}
	switch {
	case !canSee:
		return failure.Business(errors.New("read horizon: the source role cannot see other sessions' transactions; " +
			"grant it pg_read_all_stats (GRANT pg_read_all_stats TO <role>) so that an Incremental run can tell which rows are safe to read"))
	case standby && kind == cursorSequence:
		return failure.Business(errors.New("read horizon: the source is a standby, which cannot see the primary's open transactions: " +
			"a sequence cursor has no safe horizon there; read from the primary, or page on a time cursor with spec.source.cursor.lag"))
	case standby && lag <= 0:
		return failure.Business(errors.New("read horizon: the source is a standby, which cannot see the primary's open transactions; " +
			"set spec.source.cursor.lag to more than the longest write transaction plus the replication delay"))
	}
	return nil
}

// openTransactions lists the open transactions, oldest first, and the database's clock.
func openTransactions(ctx context.Context, conn *pgx.Conn, o HorizonOptions) (time.Time, []Holder, error) {
	pids := make([]int32, len(o.Own))
	for i, p := range o.Own {
		pids[i] = int32(p) // #nosec G115 -- backend pids are positive int4 values
	}
	rows, err := conn.Query(ctx, openSQL, pids, o.AppName)
	if err != nil {
		return time.Time{}, nil, fmt.Errorf("read horizon: %w", err)
	}
	var now time.Time
	var out []Holder
	for rows.Next() {
		var h Holder
		var since *time.Time
		if err := rows.Scan(&h.PID, &h.Application, &h.State, &since, &h.GID, &now); err != nil {
			rows.Close()
			return now, nil, fmt.Errorf("read horizon: %w", err)
		}
		if since == nil {
			continue // the row that only carries now()
		}
		h.Since = *since
		out = append(out, h)
	}
	if err := rows.Err(); err != nil {
		return now, nil, fmt.Errorf("read horizon: %w", err)
	}
	return now, out, nil
}

// HorizonOptions configure TakeHorizon.
type HorizonOptions struct {
	// Own are the backend pids of the runner's other sessions, named AppName: they are left
	// out (a pid of another server's session is not, unless it also bears the runner's name).
	Own     []uint32
	AppName string
	// Lag is spec.source.cursor.lag.
	Lag time.Duration
	// Wait bounds how long a sequence cursor's barrier waits for the transactions open at the
	// run's start to end.
	Wait time.Duration
	// Poll is the barrier's polling interval (100ms when 0).
	Poll time.Duration
}

// TakeHorizon takes the run's horizon on the reader's connection and bounds every later page
// by it. It runs once per run, before the first page.
func (r *Reader) TakeHorizon(ctx context.Context, o HorizonOptions) (Horizon, error) {
	if r.opts.Cursor == "" {
		return Horizon{}, errors.New("take horizon: a Full run has no cursor")
	}
	kind := r.cursorKind()
	if err := checkSource(ctx, r.conn, kind, o.Lag); err != nil {
		return Horizon{}, err
	}
	var h Horizon
	var err error
	if kind == cursorTime {
		h, err = timeHorizon(ctx, r.conn, o)
	} else {
		if o.Lag > 0 {
			return Horizon{}, failure.Business(fmt.Errorf("source.cursor.lag applies to a time cursor; cursor column %q is %s, "+
				"whose horizon is exact without it: remove lag", r.opts.Cursor, r.keyset.Types[0]))
		}
		h, err = r.barrier(ctx, o)
	}
	if err != nil {
		return Horizon{}, err
	}
	r.Bound(h)
	return h, nil
}

// Bound limits every later page to a horizon taken earlier in the run (by the reader of an
// earlier session: a retry keeps the run's horizon).
func (r *Reader) Bound(h Horizon) {
	r.bound = &h
	r.keyset.Bound = boundOp(h)
	r.first = r.keyset.PageSQL(false)
	r.next = r.keyset.PageSQL(true)
}

func boundOp(h Horizon) string {
	if h.Inclusive {
		return "<="
	}
	return "<"
}

func (r *Reader) cursorKind() string { return cursorKind(r.keyset.Types[0]) }

// timeHorizon is min(oldest open transaction's start, now()) - lag.
func timeHorizon(ctx context.Context, conn *pgx.Conn, o HorizonOptions) (Horizon, error) {
	now, open, err := openTransactions(ctx, conn, o)
	if err != nil {
		return Horizon{}, err
	}
	at := now
	var holder *Holder
	if len(open) > 0 && open[0].Since.Before(now) {
		at = open[0].Since
		holder = &open[0]
	}
	at = at.Add(-o.Lag)
	return Horizon{
		Value:  at.UTC().Format("2006-01-02 15:04:05.999999Z07:00"),
		Holder: holder,
	}, nil
}

// barrier bounds a sequence cursor by the largest value committed now, once every transaction
// open after that value was read has ended: a smaller value still uncommitted was taken
// before the largest, by one of them.
func (r *Reader) barrier(ctx context.Context, o HorizonOptions) (Horizon, error) {
	var maxValue *string
	err := readOnly(ctx, r.conn, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, MaxSQL(r.opts.Query, r.opts.Cursor)).Scan(&maxValue)
	})
	if err != nil {
		return Horizon{}, readErr("read the cursor's largest value", err)
	}
	_, open, err := openTransactions(ctx, r.conn, o)
	if err != nil {
		return Horizon{}, err
	}
	poll := o.Poll
	if poll <= 0 {
		poll = 100 * time.Millisecond
	}
	for deadline := time.Now().Add(o.Wait); len(open) > 0 && time.Now().Before(deadline); {
		t := time.NewTimer(poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return Horizon{}, fmt.Errorf("read horizon: %w", ctx.Err())
		case <-t.C:
		}
		_, current, err := openTransactions(ctx, r.conn, o)
		if err != nil {
			return Horizon{}, err
		}
		open = stillOpen(open, current)
	}
	switch {
	case len(open) > 0:
		// A transaction open at the run's start may still commit a smaller value: nothing
		// after the checkpoint is safe yet. The next run tries again.
		return Horizon{Empty: true, Holder: &open[0]}, nil
	case maxValue == nil:
		return Horizon{Empty: true}, nil
	}
	return Horizon{Value: *maxValue, Inclusive: true}, nil
}

// stillOpen keeps the transactions of before that are in now: the same backend with the same
// transaction start, or the same prepared transaction.
func stillOpen(before, now []Holder) []Holder {
	type id struct {
		pid   int32
		since time.Time
		gid   string
	}
	present := make(map[id]bool, len(now))
	for _, h := range now {
		present[id{h.PID, h.Since, h.GID}] = true
	}
	var out []Holder
	for _, h := range before {
		if present[id{h.PID, h.Since, h.GID}] {
			out = append(out, h)
		}
	}
	return out
}
