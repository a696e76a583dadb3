package source

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/sluice-dev/sluice/runner/batch"
	"github.com/sluice-dev/sluice/runner/failure"
)

// Options configure a Reader.
type Options struct {
	// Query is the user's SELECT.
	Query string
	// Cursor is the cursor column (incremental), or empty (full: pages over the keys).
	Cursor string
	// Keys are the key columns that make the order total.
	Keys []string
	// BatchSize is the page size.
	BatchSize int
	// MaxBytes bounds a page's size in bytes as well (0: rows only): a table of wide rows
	// gets pages of fewer rows instead of a runner out of memory (bytes.go).
	MaxBytes int64
	// Snapshot, when set, is an exported snapshot every page reads from (a CDC pipeline's
	// initial copy reads the snapshot its replication slot exported).
	Snapshot string
}

// Reader pages through the reader query's output in keyset order.
type Reader struct {
	conn    *pgx.Conn
	opts    Options
	keyset  Keyset
	columns []batch.Column
	// order holds the positions of the Order columns in a row.
	order []int
	// keys are the positions of the key columns among the Order columns (opts.Keys' order).
	keys []int
	// orderOIDs are their type OIDs, to render checkpoint values in Postgres' text format.
	orderOIDs []uint32
	// bound is the run's horizon (Incremental runs), nil until TakeHorizon.
	bound *Horizon
	// formats are the wire formats asked for each column: binary where pgx has a binary
	// codec, text otherwise (enums, types of extensions) and for arrays, which a sink cannot
	// nest in an array parameter.
	formats pgx.QueryResultFormats
	first   string
	next    string
	// rawSize is the size of the last raw page, to allocate the next one at once.
	rawSize int
	// widest is the widest average row seen, in bytes (bytes.go).
	widest int64
}

// Open describes the query (nothing runs) and checks that its output has the cursor and key
// columns, each once. A query that fails here fails before anything is written.
func Open(ctx context.Context, conn *pgx.Conn, opts Options) (*Reader, error) {
	if opts.BatchSize <= 0 {
		return nil, failure.Business(fmt.Errorf("reader: batch size %d must be positive", opts.BatchSize))
	}
	order := Order(opts.Cursor, opts.Keys)
	if len(order) == 0 {
		return nil, failure.Business(errors.New("reader: no key columns"))
	}
	sd, err := conn.Prepare(ctx, "", DescribeSQL(opts.Query))
	if err != nil {
		return nil, fmt.Errorf("describe reader query: %w", err)
	}
	r := &Reader{conn: conn, opts: opts}
	seen := map[string]bool{}
	var mods []int32
	for _, f := range sd.Fields {
		if seen[f.Name] {
			return nil, failure.Business(fmt.Errorf("reader query returns column %q twice; alias one of them", f.Name))
		}
		seen[f.Name] = true
		r.columns = append(r.columns, batch.Column{Name: f.Name, Type: f.DataTypeOID})
		mods = append(mods, f.TypeModifier)
	}
	b := batch.Batch{Columns: r.columns}
	idx, missing := b.Indexes(order)
	if missing != "" {
		role := "key"
		if missing == opts.Cursor {
			role = "cursor"
		}
		return nil, failure.Business(fmt.Errorf("reader query has no %s column %q (columns: %s)",
			role, missing, strings.Join(b.Names(), ", ")))
	}
	m := conn.TypeMap()
	r.formats = make(pgx.QueryResultFormats, len(r.columns))
	for i, c := range r.columns {
		t, ok := m.TypeForOID(c.Type)
		if !ok || !t.Codec.FormatSupported(pgtype.BinaryFormatCode) {
			continue
		}
		if _, isArray := t.Codec.(*pgtype.ArrayCodec); !isArray {
			r.formats[i] = pgtype.BinaryFormatCode
		}
	}
	r.order = idx
	for _, k := range opts.Keys {
		r.keys = append(r.keys, slices.Index(order, k))
	}
	r.orderOIDs = make([]uint32, len(idx))
	orderMods := make([]int32, len(idx))
	for i, j := range idx {
		r.orderOIDs[i] = r.columns[j].Type
		orderMods[i] = mods[j]
	}
	types, err := typeNames(ctx, conn, r.orderOIDs, orderMods)
	if err != nil {
		return nil, err
	}
	r.keyset = Keyset{Query: opts.Query, Order: order, Types: types, Limit: opts.BatchSize}
	if opts.Cursor != "" {
		r.keyset.BoundType = "timestamp with time zone"
		if cursorKind(types[0]) != cursorTime {
			r.keyset.BoundType = types[0]
		}
	}
	r.first = r.keyset.PageSQL(false)
	r.next = r.keyset.PageSQL(true)
	return r, nil
}

// Order returns the keyset order for a cursor (possibly empty) and key columns.
func Order(cursor string, keys []string) []string {
	order := make([]string, 0, len(keys)+1)
	if cursor != "" {
		order = append(order, cursor)
	}
	for _, k := range keys {
		if k != cursor {
			order = append(order, k)
		}
	}
	return order
}

// typeNames returns the SQL names of type OIDs with their modifiers (character(4),
// numeric(12,2), bit(8)) as the source database spells them (schema qualified and quoted when
// needed), for the casts of checkpoint values: a cast to a bare character would keep one.
func typeNames(ctx context.Context, conn *pgx.Conn, oids []uint32, mods []int32) ([]string, error) {
	rows, err := conn.Query(ctx, "SELECT format_type(t, nullif(m, -1)) FROM unnest($1::oid[], $2::int4[]) WITH ORDINALITY AS u(t, m, n) ORDER BY n", oids, mods)
	if err != nil {
		return nil, fmt.Errorf("look up reader column types: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("look up reader column types: %w", err)
	}
	return names, nil
}

// UseSnapshot makes every later page read from an exported snapshot (Options.Snapshot).
func (r *Reader) UseSnapshot(id string) { r.opts.Snapshot = id }

// Columns returns the reader's output columns.
func (r *Reader) Columns() []batch.Column { return r.columns }

// OrderColumns returns the keyset order: the checkpoint holds one value per column.
func (r *Reader) OrderColumns() []string { return r.keyset.Order }

// Read returns the page after the checkpoint (nil: from the start) with decoded values.
// Rows whose cursor or key is NULL are a business error naming the row: skipping them would
// lose them silently.
func (r *Reader) Read(ctx context.Context, after []string) (*batch.Batch, error) {
	return r.read(ctx, after, false)
}

// ReadRaw returns the page after the checkpoint undecoded (batch.Raw), for a sink that writes
// the source's wire encoding as is.
func (r *Reader) ReadRaw(ctx context.Context, after []string) (*batch.Batch, error) {
	return r.read(ctx, after, true)
}

func (r *Reader) read(ctx context.Context, after []string, raw bool) (*batch.Batch, error) {
	b := &batch.Batch{Columns: r.columns}
	if raw {
		b.Raw = batch.NewRaw(r.formats, r.opts.BatchSize+1, r.rawSize+r.rawSize/8)
	} else {
		b.Rows = make([][]any, 0, r.opts.BatchSize+1)
	}
	if r.bound != nil && r.bound.Empty {
		return b, nil
	}
	if after != nil && len(after) != len(r.keyset.Order) {
		return nil, failure.Business(fmt.Errorf("checkpoint has %d values for the %d order columns %s",
			len(after), len(r.keyset.Order), strings.Join(r.keyset.Order, ", ")))
	}
	var lookahead bool
	err := r.readOnly(ctx, func(tx pgx.Tx) error {
		limit := r.pageLimit()
		var f fetched
		if r.opts.MaxBytes > 0 && r.widest == 0 && r.opts.BatchSize > probeRows {
			// The run's first page probes the rows' width on a few of them, then reads the
			// rest of the page after them, in as many rows as fit: one batch all the same.
			var err error
			if f, err = r.fetch(ctx, tx, b, raw, after, probeRows); err != nil {
				return err
			}
			r.observe(f.size, f.rows)
			b.ReadBytes += f.size
			if f.rows <= probeRows || f.full {
				lookahead = f.rows > probeRows || (f.full && b.Len() > 1)
				return nil
			}
			last, err := r.Position(b, b.Len()-1)
			if err != nil {
				return err
			}
			after, limit = last, r.pageLimit()-b.Len()
			if limit <= 0 {
				lookahead = true // the probe's look-ahead row is the page's next row
				return nil
			}
		}
		f, err := r.fetch(ctx, tx, b, raw, after, limit)
		if err != nil {
			return err
		}
		r.observe(f.size, f.rows)
		b.ReadBytes += f.size
		lookahead = f.rows > limit || (f.full && b.Len() > 1)
		return nil
	})
	if err != nil {
		return nil, readErr("read page", err)
	}
	if err := r.dropLookahead(b, lookahead); err != nil {
		return nil, err
	}
	if b.Raw != nil {
		r.rawSize = len(b.Raw.Tuples)
	}
	return b, nil
}

// fetched is what one page query brought.
type fetched struct {
	rows int
	size int64
	// full is set when the rows reached MaxBytes: the query stopped one look-ahead row later.
	full bool
}

// fetch appends to b the rows of a page query of limit rows (and its look-ahead row) after
// the position after (nil: from the start), stopping one row after the page reached MaxBytes.
func (r *Reader) fetch(ctx context.Context, tx pgx.Tx, b *batch.Batch, raw bool, after []string, limit int) (fetched, error) {
	var f fetched
	args := []any{r.formats}
	for _, v := range after {
		args = append(args, v)
	}
	if r.keyset.Bound != "" {
		args = append(args, r.bound.Value)
	}
	rows, err := tx.Query(ctx, r.pageSQL(after != nil, limit), args...)
	if err != nil {
		return f, err
	}
	// A page cut short by its byte bound leaves rows unread: Close discards them.
	defer rows.Close()
	for rows.Next() {
		if !f.full {
			f.size += rowBytes(rows.RawValues())
		}
		f.rows++
		if raw {
			// RawValues alias the connection's buffer: AppendRow copies them.
			b.Raw.AppendRow(rows.RawValues())
		} else {
			vals, err := rows.Values()
			if err != nil {
				return f, fmt.Errorf("decode reader row %d: %w", b.Len()+1, err)
			}
			b.Rows = append(b.Rows, vals)
		}
		if err := r.checkNotNull(b, b.Len()-1); err != nil {
			return f, err
		}
		if f.full {
			return f, nil // the look-ahead row of a page cut at its byte bound
		}
		f.full = r.opts.MaxBytes > 0 && f.size >= r.opts.MaxBytes
	}
	return f, rows.Err()
}

// dropLookahead checks that no two consecutive rows of the page, its look-ahead row included,
// tie in the keyset order, then removes the look-ahead row. The next page starts strictly
// after the page's last row, so a tie (a join that repeats a row, key columns that are not
// unique) at a page boundary would be skipped silently; a tie inside a page is refused too, so
// that the outcome does not depend on the page size.
func (r *Reader) dropLookahead(b *batch.Batch, lookahead bool) error {
	n := b.Len()
	for i := 1; i < n; i++ {
		if !r.sameOrder(b, i-1, i) {
			continue
		}
		pos, err := r.Position(b, i)
		if err != nil {
			return err
		}
		pairs := make([]string, len(pos))
		for k, v := range pos {
			pairs[k] = keyPair(r.keyset.Order[k], v)
		}
		return failure.Business(fmt.Errorf("the reader's output has two rows with the same (%s), reader row (%s): "+
			"the keyset order must be unique, or a row is skipped; make source.cursor.keyColumns unique for each row",
			strings.Join(r.keyset.Order, ", "), strings.Join(pairs, ", ")))
	}
	b.More = lookahead
	if !lookahead {
		return nil
	}
	if b.Raw != nil {
		b.Raw.DropLast()
	} else {
		b.Rows = b.Rows[:n-1]
	}
	return nil
}

// sameOrder tells whether rows i and j have equal order columns: the bytes Postgres sent for
// a raw batch, the decoded values otherwise.
func (r *Reader) sameOrder(b *batch.Batch, i, j int) bool {
	for _, col := range r.order {
		if b.Raw != nil {
			if !bytes.Equal(b.Raw.Value(i, col), b.Raw.Value(j, col)) {
				return false
			}
		} else if !reflect.DeepEqual(b.Rows[i][col], b.Rows[j][col]) {
			return false
		}
	}
	return true
}

// readOnly runs fn in an explicit READ ONLY transaction. The connection's
// default_transaction_read_only alone is not enough: a reader query can switch it off with
// set_config for every later page, while a transaction begun READ ONLY cannot be made
// read-write once a query ran in it. So the reader query can never write, nor call the state
// functions (etl.advance) of any pipeline, whatever it does.
func readOnly(ctx context.Context, conn *pgx.Conn, fn func(pgx.Tx) error) error {
	return readOnlyIn(ctx, conn, "", fn)
}

// readOnly is the reader's readOnly: in its snapshot, when it has one.
func (r *Reader) readOnly(ctx context.Context, fn func(pgx.Tx) error) error {
	return readOnlyIn(ctx, r.conn, r.opts.Snapshot, fn)
}

func readOnlyIn(ctx context.Context, conn *pgx.Conn, snapshot string, fn func(pgx.Tx) error) error {
	opts := pgx.TxOptions{AccessMode: pgx.ReadOnly}
	if snapshot != "" {
		opts.IsoLevel = pgx.RepeatableRead
	}
	tx, err := conn.BeginTx(ctx, opts)
	if err != nil {
		return err
	}
	if snapshot != "" {
		if _, err := tx.Exec(ctx, "SET TRANSACTION SNAPSHOT '"+strings.ReplaceAll(snapshot, "'", "''")+"'"); err != nil {
			_ = tx.Rollback(ctx)
			return fmt.Errorf("read from snapshot %s: %w", snapshot, err)
		}
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback(ctx)
		return err
	}
	return tx.Commit(ctx)
}

// readErr wraps an error of the reader's query. A write attempted in the read-only transaction
// (SQLSTATE 25006) is the query's fault, not a failover to a standby: a business error.
func readErr(what string, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "25006" {
		return failure.Business(fmt.Errorf("%s: the reader query tried to write, and a reader may only read: %w", what, err))
	}
	return fmt.Errorf("%s: %w", what, err)
}

// value returns column col of row i of a batch, decoded (from the raw bytes when the batch is raw).
func (r *Reader) value(b *batch.Batch, i, col int) (any, error) {
	if b.Raw == nil {
		return b.Rows[i][col], nil
	}
	src := b.Raw.Value(i, col)
	if src == nil {
		return nil, nil
	}
	oid, format := r.columns[col].Type, b.Raw.Formats[col]
	if format == pgtype.TextFormatCode {
		return string(src), nil
	}
	m := r.conn.TypeMap()
	t, ok := m.TypeForOID(oid)
	if !ok {
		return nil, fmt.Errorf("no codec for type %d", oid)
	}
	return t.Codec.DecodeValue(m, oid, format, src)
}

// isNull tells a NULL without decoding.
func isNull(b *batch.Batch, i, col int) bool {
	if b.Raw == nil {
		return b.Rows[i][col] == nil
	}
	return b.Raw.Value(i, col) == nil
}

func (r *Reader) checkNotNull(b *batch.Batch, row int) error {
	for i, j := range r.order {
		if !isNull(b, row, j) {
			continue
		}
		role := "key"
		if i == 0 && r.opts.Cursor != "" {
			role = "cursor"
		}
		return failure.Business(fmt.Errorf("source row (%s) has a NULL %s column %q",
			r.describeKey(b, row), role, r.keyset.Order[i]))
	}
	return nil
}

// describeKey renders a row's key columns for an error message.
func (r *Reader) describeKey(b *batch.Batch, row int) string {
	parts := make([]string, len(r.keys))
	for k, i := range r.keys {
		s := "NULL"
		if v, err := r.value(b, row, r.order[i]); err == nil && v != nil {
			if text, err := r.render(i, v); err == nil {
				s = text
			}
		}
		parts[k] = keyPair(r.opts.Keys[k], s)
	}
	return strings.Join(parts, ", ")
}

// keyPair renders one key column of a row for an error message: name=value, the value quoted
// when it could be read as more than one value or as the end of the list (a comma, a
// parenthesis, a space, a quote), so that the list is unambiguous to a reader and to
// status.RedactValues, which masks the values of a pipeline with redacted checkpoints.
func keyPair(name, text string) string {
	if text == "" || strings.ContainsAny(text, ",()= \"\\\t\n") {
		text = strconv.Quote(text)
	}
	return name + "=" + text
}

// Position returns the checkpoint of row i of a batch: its order columns in Postgres' text
// format, which the next page casts back to the column types.
func (r *Reader) Position(b *batch.Batch, i int) ([]string, error) {
	out := make([]string, len(r.order))
	for k, j := range r.order {
		v, err := r.value(b, i, j)
		if err == nil {
			out[k], err = r.render(k, v)
		}
		if err != nil {
			return nil, failure.Business(fmt.Errorf("render checkpoint column %q: %w", r.keyset.Order[k], err))
		}
	}
	return out, nil
}

func (r *Reader) render(i int, v any) (string, error) {
	switch v := v.(type) {
	case string:
		// Types pgx does not know (enums, domains over them) arrive as text already.
		return v, nil
	case json.RawMessage:
		return string(v), nil
	}
	buf, err := r.conn.TypeMap().Encode(r.orderOIDs[i], pgtype.TextFormatCode, v, nil)
	if err != nil {
		return "", err
	}
	return string(buf), nil
}

// FindNull looks for a row whose cursor (incremental) or key (full) is NULL, or whose time
// cursor is infinity, which the keyset predicate and the horizon would skip forever, and
// returns its key rendered for an error message. It runs once
// a run has caught up; with an index on the cursor it is an index lookup.
func (r *Reader) FindNull(ctx context.Context) (string, bool, error) {
	nullable := r.opts.Keys
	var infinite []string
	if r.opts.Cursor != "" {
		nullable = []string{r.opts.Cursor}
		if r.cursorKind() == cursorTime {
			infinite = nullable
		}
	}
	vals := make([]*string, len(r.opts.Keys))
	found := false
	err := r.readOnly(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, NullSQL(r.opts.Query, nullable, r.opts.Keys, infinite))
		if err != nil {
			return err
		}
		defer rows.Close()
		if !rows.Next() {
			return rows.Err()
		}
		dst := make([]any, len(vals))
		for i := range vals {
			dst[i] = &vals[i]
		}
		found = true
		return rows.Scan(dst...)
	})
	if err != nil {
		return "", false, readErr("check reader rows for NULL order columns", err)
	}
	if !found {
		return "", false, nil
	}
	parts := make([]string, len(vals))
	for i, v := range vals {
		s := "NULL"
		if v != nil {
			s = *v
		}
		parts[i] = keyPair(r.opts.Keys[i], s)
	}
	return strings.Join(parts, ", "), true, nil
}

// RegisterTypes adjusts how a source connection decodes values so that they survive the trip
// to a sink unchanged: json and jsonb stay raw JSON (json.RawMessage) instead of being parsed
// into Go maps, which would turn large integers into float64 and reorder keys; an infinite
// date or timestamp stays a pgtype value that pgx can encode again (pgx's default decodes it
// to a bare InfinityModifier, which it cannot write back).
func RegisterTypes(m *pgtype.Map) {
	m.RegisterType(&pgtype.Type{Name: "date", OID: pgtype.DateOID, Codec: dateCodec{}})
	m.RegisterType(&pgtype.Type{Name: "timestamp", OID: pgtype.TimestampOID, Codec: timestampCodec{&pgtype.TimestampCodec{}}})
	m.RegisterType(&pgtype.Type{Name: "timestamptz", OID: pgtype.TimestamptzOID, Codec: timestamptzCodec{&pgtype.TimestamptzCodec{}}})
	raw := func(data []byte, v any) error {
		if p, ok := v.(*any); ok {
			*p = json.RawMessage(bytes.Clone(data))
			return nil
		}
		return json.Unmarshal(data, v)
	}
	jsonType := &pgtype.Type{Name: "json", OID: pgtype.JSONOID, Codec: &pgtype.JSONCodec{Marshal: json.Marshal, Unmarshal: raw}}
	jsonbType := &pgtype.Type{Name: "jsonb", OID: pgtype.JSONBOID, Codec: &pgtype.JSONBCodec{Marshal: json.Marshal, Unmarshal: raw}}
	m.RegisterType(jsonType)
	m.RegisterType(jsonbType)
	m.RegisterType(&pgtype.Type{Name: "_json", OID: pgtype.JSONArrayOID, Codec: &pgtype.ArrayCodec{ElementType: jsonType}})
	m.RegisterType(&pgtype.Type{Name: "_jsonb", OID: pgtype.JSONBArrayOID, Codec: &pgtype.ArrayCodec{ElementType: jsonbType}})
}

// dateCodec decodes an infinite date as pgtype.Date.
type dateCodec struct{ pgtype.DateCodec }

// DecodeValue implements pgtype.Codec.
func (c dateCodec) DecodeValue(m *pgtype.Map, oid uint32, format int16, src []byte) (any, error) {
	v, err := c.DateCodec.DecodeValue(m, oid, format, src)
	if mod, ok := v.(pgtype.InfinityModifier); ok {
		return pgtype.Date{InfinityModifier: mod, Valid: true}, err
	}
	return v, err
}

// timestampCodec decodes an infinite timestamp as pgtype.Timestamp.
type timestampCodec struct{ *pgtype.TimestampCodec }

// DecodeValue implements pgtype.Codec.
func (c timestampCodec) DecodeValue(m *pgtype.Map, oid uint32, format int16, src []byte) (any, error) {
	v, err := c.TimestampCodec.DecodeValue(m, oid, format, src)
	if mod, ok := v.(pgtype.InfinityModifier); ok {
		return pgtype.Timestamp{InfinityModifier: mod, Valid: true}, err
	}
	return v, err
}

// timestamptzCodec decodes an infinite timestamptz as pgtype.Timestamptz.
type timestamptzCodec struct{ *pgtype.TimestamptzCodec }

// DecodeValue implements pgtype.Codec.
func (c timestamptzCodec) DecodeValue(m *pgtype.Map, oid uint32, format int16, src []byte) (any, error) {
	v, err := c.TimestamptzCodec.DecodeValue(m, oid, format, src)
	if mod, ok := v.(pgtype.InfinityModifier); ok {
		return pgtype.Timestamptz{InfinityModifier: mod, Valid: true}, err
	}
	return v, err
}
