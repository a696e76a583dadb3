package cdc

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Unchanged is a row of a batch whose update left large values unchanged: Postgres keeps a
// value of more than about 2 kB out of line (TOASTed), and under the table's default replica
// identity the log does not carry such a value when an update leaves it as it was.
type Unchanged struct {
	// Row is the row's index in the batch; Keys its key values as the log gave them (text),
	// in the order of the key columns; Columns the batch columns the log did not carry.
	Row     int
	Keys    []string
	Columns []int
}

// Fill reads the values the log did not carry from the table, by key, into the batch's rows,
// in one statement over conn (the source). It reads the table as it is now, which may be newer
// than the change: every change that made it newer follows in the stream, so the sink still
// ends where the source is. A row the table no longer holds was deleted by a transaction that
// follows in the stream too: its change is dropped from the batch, and the delete applies.
func (s *Stream) Fill(ctx context.Context, conn *pgx.Conn, ch *Changes) error {
	if len(ch.Unchanged) == 0 {
		return nil
	}
	if s.keyTypes == nil {
		types, err := keyTypes(ctx, conn, s)
		if err != nil {
			return err
		}
		s.keyTypes = types
	}
	cols := fillColumns(ch.Unchanged)
	args := make([]any, 0, len(s.keyIdx)+1)
	args = append(args, pgx.QueryResultFormats{pgx.TextFormatCode})
	for k := range s.keyIdx {
		keys := make([]string, len(ch.Unchanged))
		for i, u := range ch.Unchanged {
			keys[i] = u.Keys[k]
		}
		args = append(args, keys)
	}
	rows, err := conn.Query(ctx, s.fillSQL(cols), args...)
	if err != nil {
		return fmt.Errorf("cdc: read the unchanged large values of %s: %w", s.opts.Table, err)
	}
	defer rows.Close()
	found := make([]bool, len(ch.Unchanged))
	for rows.Next() {
		raw := rows.RawValues()
		ord, err := strconv.Atoi(string(raw[0]))
		if err != nil || ord < 1 || ord > len(ch.Unchanged) {
			return fmt.Errorf("cdc: read the unchanged large values of %s: row %q", s.opts.Table, raw[0])
		}
		u := ch.Unchanged[ord-1]
		found[ord-1] = true
		for _, j := range u.Columns {
			data := raw[1+slices.Index(cols, j)]
			if data == nil {
				ch.Batch.Rows[u.Row][j] = nil
				continue
			}
			v, err := s.decode(j, data)
			if err != nil {
				return err
			}
			ch.Batch.Rows[u.Row][j] = v
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("cdc: read the unchanged large values of %s: %w", s.opts.Table, err)
	}
	var gone []int
	for i, ok := range found {
		if !ok {
			gone = append(gone, ch.Unchanged[i].Row)
		}
	}
	dropRows(ch, gone)
	ch.Unchanged = nil
	return nil
}

// fillColumns returns the batch columns any of the rows misses, in order.
func fillColumns(us []Unchanged) []int {
	var cols []int
	for _, u := range us {
		for _, j := range u.Columns {
			if slices.Index(cols, j) < 0 {
				cols = append(cols, j)
			}
		}
	}
	slices.Sort(cols)
	return cols
}

// dropRows removes the rows at the given ascending indexes from the batch.
func dropRows(ch *Changes, rows []int) {
	if len(rows) == 0 {
		return
	}
	b := ch.Batch
	keep, next := 0, 0
	for i := range b.Rows {
		if next < len(rows) && rows[next] == i {
			next++
			continue
		}
		b.Rows[keep] = b.Rows[i]
		if b.Deleted != nil {
			b.Deleted[keep] = b.Deleted[i]
		}
		keep++
	}
	b.Rows = b.Rows[:keep]
	if b.Deleted != nil {
		b.Deleted = b.Deleted[:keep]
	}
}

// fillSQL selects, for each key in the arrays $1..$n (text, cast to the key columns' types),
// its ordinal and the given columns in text form.
func (s *Stream) fillSQL(cols []int) string {
	schema, table := SplitTable(s.opts.Table)
	var b strings.Builder
	b.WriteString("SELECT k.ord")
	for _, j := range cols {
		b.WriteString(", t.")
		b.WriteString(pgx.Identifier{s.opts.Columns[j].Name}.Sanitize())
	}
	b.WriteString(" FROM unnest(")
	for k := range s.keyIdx {
		if k > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "$%d::text[]", k+1)
	}
	b.WriteString(") WITH ORDINALITY AS k(")
	for k := range s.keyIdx {
		fmt.Fprintf(&b, "k%d, ", k)
	}
	b.WriteString("ord) JOIN ")
	b.WriteString(pgx.Identifier{schema, table}.Sanitize())
	b.WriteString(" AS t ON ")
	for k, j := range s.keyIdx {
		if k > 0 {
			b.WriteString(" AND ")
		}
		fmt.Fprintf(&b, "t.%s = k.k%d::%s", pgx.Identifier{s.opts.Columns[j].Name}.Sanitize(), k, s.keyTypes[k])
	}
	return b.String()
}

// keyTypes returns the SQL names of the key columns' types.
func keyTypes(ctx context.Context, conn *pgx.Conn, s *Stream) ([]string, error) {
	types := make([]string, len(s.keyIdx))
	for k, j := range s.keyIdx {
		if err := conn.QueryRow(ctx, `SELECT format_type($1::oid, NULL)`, s.opts.Columns[j].Type).Scan(&types[k]); err != nil {
			return nil, fmt.Errorf("cdc: the type of key column %q of %s: %w", s.opts.Columns[j].Name, s.opts.Table, err)
		}
	}
	return types, nil
}
