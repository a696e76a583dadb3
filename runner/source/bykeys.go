package source

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/sluice-dev/sluice/runner/batch"
)

// KeysSQL returns the statement that reads the reader query's rows whose key columns
// (keys, of the SQL types types) equal one of the tuples given as one text[] parameter per
// key column, in keyset order:
//
//	SELECT * FROM (<query>) AS q
//	WHERE (q.k1, q.k2) IN (SELECT * FROM unnest(CAST($1::text[] AS t1[]), CAST($2::text[] AS t2[])))
//	ORDER BY q.c, q.k1, q.k2
//
// With an index on the key columns each tuple is an index lookup.
func KeysSQL(query string, keys, types, order []string) string {
	var b strings.Builder
	b.WriteString("SELECT * FROM ")
	b.WriteString(subquery(query))
	b.WriteString("\nWHERE (")
	b.WriteString(strings.Join(qualified(keys), ", "))
	b.WriteString(") IN (SELECT * FROM unnest(")
	for i, t := range types {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "CAST($%d::text[] AS %s[])", i+1, t)
	}
	b.WriteString("))\nORDER BY ")
	b.WriteString(strings.Join(qualified(order), ", "))
	return b.String()
}

// ReadKeys reads, decoded, the reader query's rows whose key columns hold one of keys (each
// the key columns' values in Postgres' text form, as RejectedKeys returns them and the
// replication log carries them). A key whose row is gone is not in the batch.
func (r *Reader) ReadKeys(ctx context.Context, keys [][]string) (*batch.Batch, error) {
	b := &batch.Batch{Columns: r.columns, Rows: make([][]any, 0, len(keys))}
	if len(keys) == 0 {
		return b, nil
	}
	names, types := r.opts.Keys, make([]string, len(r.keys))
	for k, i := range r.keys {
		types[k] = r.keyset.Types[i]
	}
	args := []any{r.formats}
	for c := range names {
		col := make([]string, len(keys))
		for i, k := range keys {
			if len(k) != len(names) {
				return nil, fmt.Errorf("key %v has %d values for the key columns %s", k, len(k), strings.Join(names, ", "))
			}
			col[i] = k[c]
		}
		args = append(args, col)
	}
	err := readOnly(ctx, r.conn, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, KeysSQL(r.opts.Query, names, types, r.keyset.Order), args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			vals, err := rows.Values()
			if err != nil {
				return fmt.Errorf("decode reader row %d: %w", b.Len()+1, err)
			}
			b.Rows = append(b.Rows, vals)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, readErr("read rows by key", err)
	}
	return b, nil
}

// RowJSON renders row i of a batch of the reader (raw or decoded) as a JSON object of its
// columns, for etl_rejects: numbers, strings, booleans and JSON as they are, times in RFC
// 3339, bytes in base64, other types in Postgres' text form.
func (r *Reader) RowJSON(b *batch.Batch, i int) (json.RawMessage, error) {
	var buf bytes.Buffer
	buf.WriteByte('{')
	for c, col := range r.columns {
		if c > 0 {
			buf.WriteByte(',')
		}
		name, _ := json.Marshal(col.Name)
		buf.Write(name)
		buf.WriteByte(':')
		v, err := r.value(b, i, c)
		if err != nil {
			return nil, fmt.Errorf("column %q: %w", col.Name, err)
		}
		js, err := valueJSON(v)
		if err != nil {
			// What the type map can render as text (a range, an interval) goes as a string.
			text, terr := r.conn.TypeMap().Encode(col.Type, 0, v, nil)
			if terr != nil {
				return nil, fmt.Errorf("column %q: %w", col.Name, err)
			}
			js, _ = json.Marshal(string(text))
		}
		buf.Write(js)
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

func valueJSON(v any) ([]byte, error) {
	if raw, ok := v.(json.RawMessage); ok {
		if json.Valid(raw) {
			return raw, nil
		}
		return json.Marshal(string(raw))
	}
	return json.Marshal(v)
}

// DescribeKey renders row i's key columns for a message: id=42, region=eu.
func (r *Reader) DescribeKey(b *batch.Batch, i int) string { return r.describeKey(b, i) }

// Key returns row i's values of the key columns, and of the cursor column (nil in Full
// mode), in Postgres' text form.
func (r *Reader) Key(b *batch.Batch, i int) ([]string, *string, error) {
	keys, err := r.KeyValues(b, i)
	if err != nil || r.opts.Cursor == "" {
		return keys, nil, err
	}
	v, err := r.value(b, i, r.order[0])
	if err != nil {
		return nil, nil, err
	}
	if v == nil {
		return keys, nil, nil
	}
	c, err := r.render(0, v)
	if err != nil {
		return nil, nil, err
	}
	return keys, &c, nil
}

// KeyValues returns row i's values of the key columns in Postgres' text form, rendering
// nothing else.
func (r *Reader) KeyValues(b *batch.Batch, i int) ([]string, error) {
	keys := make([]string, len(r.keys))
	for k, j := range r.keys {
		v, err := r.value(b, i, r.order[j])
		if err == nil {
			keys[k], err = r.render(j, v)
		}
		if err != nil {
			return nil, fmt.Errorf("render key column %q: %w", r.opts.Keys[k], err)
		}
	}
	return keys, nil
}

// KeyFingerprint identifies row i's key by its key columns' values in the wire format the
// reader reads them in: equal keys have equal fingerprints, and a raw batch is not decoded
// for it, so it costs a lookup per row to tell whether a batch holds a known key.
func (r *Reader) KeyFingerprint(b *batch.Batch, i int) (string, error) {
	var buf []byte
	for _, k := range r.keys {
		j := r.order[k]
		var v []byte
		if b.Raw != nil {
			v = b.Raw.Value(i, j)
		} else {
			var err error
			if v, err = r.conn.TypeMap().Encode(r.columns[j].Type, r.formats[j], b.Rows[i][j], nil); err != nil {
				return "", fmt.Errorf("key column %q: %w", r.columns[j].Name, err)
			}
		}
		buf = binary.AppendUvarint(buf, uint64(len(v)))
		buf = append(buf, v...)
	}
	return string(buf), nil
}

// FingerprintOf is the KeyFingerprint of a key given as its values in Postgres' text form
// (as RejectedKeys returns them).
func (r *Reader) FingerprintOf(keys []string) (string, error) {
	if len(keys) != len(r.keys) {
		return "", fmt.Errorf("key %v has %d values for %d key columns", keys, len(keys), len(r.keys))
	}
	m := r.conn.TypeMap()
	var buf []byte
	for c, k := range r.keys {
		j := r.order[k]
		oid, format := r.columns[j].Type, r.formats[j]
		v := []byte(keys[c])
		if format != pgtype.TextFormatCode {
			t, ok := m.TypeForOID(oid)
			if !ok {
				return "", fmt.Errorf("key column %q: no codec for type %d", r.columns[j].Name, oid)
			}
			val, err := t.Codec.DecodeValue(m, oid, pgtype.TextFormatCode, v)
			if err == nil {
				v, err = m.Encode(oid, format, val, nil)
			}
			if err != nil {
				return "", fmt.Errorf("key column %q: %w", r.columns[j].Name, err)
			}
		}
		buf = binary.AppendUvarint(buf, uint64(len(v)))
		buf = append(buf, v...)
	}
	return string(buf), nil
}

// OrderTypes returns the SQL types of the order columns (the cursor, then the keys), with
// their modifiers.
func (r *Reader) OrderTypes() []string { return append([]string(nil), r.keyset.Types...) }
