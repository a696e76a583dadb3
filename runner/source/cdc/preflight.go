package cdc

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/sluice-dev/sluice/runner/failure"
)

// Facts are what the preflight reads from the source before anything is created there.
type Facts struct {
	// WALLevel is the server's wal_level; Role the session's user, Replication whether it may
	// replicate (REPLICATION or superuser).
	WALLevel    string
	Role        string
	Replication bool
	// Table is `schema.table`; Exists whether it is a table.
	Table  string
	Exists bool
	// Identity is pg_class.relreplident: d (primary key), i (an index), f (full), n (nothing);
	// IdentityColumns are the primary key's or the index's columns (none for f and n).
	Identity        byte
	IdentityColumns []string
	// Columns are the table's columns.
	Columns []string
	// Owner: the role owns the table (or is superuser) and may publish it;
	// PublicationExists: the pipeline's publication exists already (a DBA may create it).
	Owner             bool
	PublicationExists bool
}

// Problem returns what prevents a CDC stream of the table with the given key columns and
// column list (nil: all), or nil. Every problem is a business error: only a change in the
// source or the spec fixes it. Pure, so it is table-tested.
func Problem(f Facts, keys, columns []string) error {
	var errs []string
	if f.WALLevel != "logical" {
		errs = append(errs, fmt.Sprintf("the source's wal_level is %q: logical replication needs wal_level = logical (postgresql.conf, then a restart)", f.WALLevel))
	}
	if !f.Replication {
		errs = append(errs, fmt.Sprintf("role %q may not replicate: ALTER ROLE %s REPLICATION", f.Role, f.Role))
	}
	if !f.Exists {
		errs = append(errs, fmt.Sprintf("table %s does not exist (or is not a table the role can see)", f.Table))
		return failure.Business(errors.New("cdc: " + strings.Join(errs, "; ")))
	}
	switch f.Identity {
	case 'n':
		errs = append(errs, fmt.Sprintf("table %s has REPLICA IDENTITY NOTHING: its updates and deletes carry no key", f.Table))
	case 'd', 'i':
		if len(f.IdentityColumns) == 0 {
			errs = append(errs, fmt.Sprintf("table %s has no primary key: add one, or set REPLICA IDENTITY USING INDEX (a unique index) or FULL", f.Table))
		} else if !sameSet(keys, f.IdentityColumns) {
			what := "primary key"
			if f.Identity == 'i' {
				what = "replica identity index"
			}
			errs = append(errs, fmt.Sprintf("source.cursor.keyColumns (%s) are not table %s's %s (%s)",
				strings.Join(keys, ", "), f.Table, what, strings.Join(f.IdentityColumns, ", ")))
		}
	}
	for _, k := range keys {
		if !slices.Contains(f.Columns, k) {
			errs = append(errs, fmt.Sprintf("key column %q is not a column of table %s", k, f.Table))
		}
	}
	for _, c := range columns {
		if !slices.Contains(f.Columns, c) {
			errs = append(errs, fmt.Sprintf("source.columns: %q is not a column of table %s", c, f.Table))
		}
	}
	if len(columns) > 0 {
		for _, k := range keys {
			if !slices.Contains(columns, k) {
				errs = append(errs, fmt.Sprintf("source.columns lacks key column %q", k))
			}
		}
	}
	if !f.PublicationExists && !f.Owner {
		errs = append(errs, fmt.Sprintf("role %q does not own table %s and cannot publish it: grant it ownership, or have the owner run CREATE PUBLICATION for the pipeline (see docs/cdc.md)", f.Role, f.Table))
	}
	if len(errs) == 0 {
		return nil
	}
	return failure.Business(errors.New("cdc: " + strings.Join(errs, "; ")))
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

// Gather reads the Facts of table (`schema.table`) and publication from the source.
func Gather(ctx context.Context, conn *pgx.Conn, table, publication string) (Facts, error) {
	schema, name := SplitTable(table)
	f := Facts{Table: schema + "." + name}
	err := conn.QueryRow(ctx, `SELECT current_setting('wal_level'), current_user,
		(SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user),
		EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)`, publication).
		Scan(&f.WALLevel, &f.Role, &f.Replication, &f.PublicationExists)
	if err != nil {
		return f, fmt.Errorf("cdc: read the source's settings: %w", err)
	}
	var oid uint32
	var ident string
	err = conn.QueryRow(ctx, `SELECT c.oid, c.relreplident::text, pg_has_role(c.relowner, 'USAGE')
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')`, schema, name).Scan(&oid, &ident, &f.Owner)
	if errors.Is(err, pgx.ErrNoRows) {
		return f, nil
	}
	if err != nil {
		return f, fmt.Errorf("cdc: read table %s: %w", f.Table, err)
	}
	f.Exists = true
	if ident != "" {
		f.Identity = ident[0]
	}
	if err := conn.QueryRow(ctx, `SELECT coalesce(array_agg(a.attname::text ORDER BY a.attnum), '{}')
		FROM pg_attribute a WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped`, oid).Scan(&f.Columns); err != nil {
		return f, fmt.Errorf("cdc: read the columns of %s: %w", f.Table, err)
	}
	flag := "indisprimary"
	if f.Identity == 'i' {
		flag = "indisreplident"
	}
	// #nosec G202 -- flag is one of two constants
	if err := conn.QueryRow(ctx, `SELECT coalesce(array_agg(a.attname::text ORDER BY k.ord), '{}')
		FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
		JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
		WHERE i.indrelid = $1 AND i.`+flag, oid).Scan(&f.IdentityColumns); err != nil {
		return f, fmt.Errorf("cdc: read the key of %s: %w", f.Table, err)
	}
	return f, nil
}
