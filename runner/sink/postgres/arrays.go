package postgres

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/sluice-dev/sluice/runner/batch"
	"github.com/sluice-dev/sluice/runner/failure"
)

// shape is the prepared upsert of one batch shape (column names, types and wire formats),
// made once per connection.
type shape struct {
	// stmt is the prepared upsert, del the delete of keys, seen the record of a Mirror run's
	// keys (when the sink mirrors).
	stmt, del, seen string
	columns         []string
	keyIdx          []int
	// elems are the element types of the array parameters: the source type where it can be
	// carried as is, else the target's, else text.
	elems []uint32
	// text marks columns carried as text: values that arrived as text, or that are encoded in
	// text format (arrays, types pgx has no binary codec for).
	text []bool
	// encodeAs is, for a decoded value, the type whose encoder renders it.
	encodeAs []uint32
	// keys is the shape of the key columns alone, which deletes and the side table take.
	keys *shape
}

func binaryFormats(n int) []int16 {
	f := make([]int16, n)
	for i := range f {
		f[i] = pgtype.BinaryFormatCode
	}
	return f
}

// query is one prepared statement of a batch's write.
type query struct {
	stmt   string
	params [][]byte
}

// queries returns the statements that write a batch, the last row of each key only: the
// upsert of the written rows (first, when there are any), the delete of the deleted keys,
// and the record of the written keys in a Mirror run's side table. upsert reports whether
// the first is the upsert.
func (s *Sink) queries(sh *shape, b *batch.Batch) (qs []query, upsert bool, err error) {
	var keep []int
	if b.Raw != nil {
		keep = s.lastPerKeyRaw(b.Raw, sh.keyIdx)
	} else {
		keep = lastPerKeyIndex(b.Rows, sh.keyIdx)
	}
	var dels []int
	if b.Deleted != nil {
		keep, dels = splitDeleted(keep, b.Deleted)
	}
	var params [][]byte
	if keep == nil || len(keep) > 0 {
		if b.Raw != nil {
			// pgconn copies parameters into its send buffer, so the arrays serve every batch.
			s.bufs = rawArrays(b.Raw, keep, nil, sh.elems, s.bufs)
			params = s.bufs
		} else if params, err = s.encodeArrays(sh, rowsAt(b.Rows, keep, nil)); err != nil {
			return nil, false, err
		}
		qs = append(qs, query{stmt: sh.stmt, params: params})
	}
	if len(dels) > 0 {
		var keys [][]byte
		if b.Raw != nil {
			keys = rawArrays(b.Raw, dels, sh.keyIdx, sh.keys.elems, nil)
		} else if keys, err = s.encodeArrays(sh.keys, rowsAt(b.Rows, dels, sh.keyIdx)); err != nil {
			return nil, false, err
		}
		qs = append(qs, query{stmt: sh.del, params: keys})
	}
	if sh.seen != "" && params != nil {
		keys := make([][]byte, len(sh.keyIdx))
		for k, c := range sh.keyIdx {
			keys[k] = params[c]
		}
		qs = append(qs, query{stmt: sh.seen, params: keys})
	}
	return qs, params != nil, nil
}

// splitDeleted splits the rows to keep (all when nil) into the written and the deleted ones,
// by the batch's flags.
func splitDeleted(keep []int, deleted []bool) (ups, dels []int) {
	if keep == nil {
		keep = make([]int, len(deleted))
		for i := range keep {
			keep[i] = i
		}
	}
	ups = make([]int, 0, len(keep))
	for _, i := range keep {
		if deleted[i] {
			dels = append(dels, i)
		} else {
			ups = append(ups, i)
		}
	}
	return ups, dels
}

// rowsAt returns the rows at the indexes (all when nil), cut to the columns cols (all when
// nil).
func rowsAt(rows [][]any, idx, cols []int) [][]any {
	if idx == nil && cols == nil {
		return rows
	}
	n := len(rows)
	if idx != nil {
		n = len(idx)
	}
	out := make([][]any, n)
	for k := range n {
		i := k
		if idx != nil {
			i = idx[k]
		}
		r := rows[i]
		if cols != nil {
			cut := make([]any, len(cols))
			for j, c := range cols {
				cut[j] = r[c]
			}
			r = cut
		}
		out[k] = r
	}
	return out
}

// shapeFor returns the prepared upsert for a batch shape, preparing it on first use. formats
// are the wire formats of a raw batch (nil for decoded values).
func (s *Sink) shapeFor(ctx context.Context, cols []batch.Column, formats []int16) (*shape, error) {
	sig := batch.Signature(cols, formats)
	if sh, ok := s.shapes[sig]; ok {
		return sh, nil
	}
	sh := &shape{stmt: fmt.Sprintf("sluice_upsert_%d", len(s.shapes)+1)}
	casts := make([]string, len(cols))
	m := s.conn.TypeMap()
	for i, c := range cols {
		tc, ok := s.columns[c.Name]
		if !ok {
			return nil, failure.Business(fmt.Errorf("target table %s has no column %q (the batch has: %s)",
				s.name(), c.Name, strings.Join((&batch.Batch{Columns: cols}).Names(), ", ")))
		}
		if tc.generated {
			return nil, failure.Business(fmt.Errorf("target table %s: column %q is generated and cannot be written", s.name(), c.Name))
		}
		sh.columns = append(sh.columns, c.Name)
		var elem, encodeAs uint32
		text := false
		switch {
		case formats != nil && formats[i] == pgtype.TextFormatCode:
			// Raw text: a textual type takes it as is, anything else parses it from text.
			elem, text = pgtype.TextOID, true
			if textual[c.Type] {
				elem = c.Type
			}
		case formats != nil:
			elem = c.Type
		case c.Type != 0 && binaryScalar(m, c.Type):
			elem, encodeAs = c.Type, c.Type
		case binaryScalar(m, tc.oid):
			elem, encodeAs = tc.oid, tc.oid
		default:
			// Arrays (an array of arrays is not a Postgres type) and types without a binary
			// codec travel as text in the source's or the target's text format.
			elem, text = pgtype.TextOID, true
			if _, ok := m.TypeForOID(c.Type); ok && c.Type != 0 {
				encodeAs = c.Type
			} else if _, ok := m.TypeForOID(tc.oid); ok {
				encodeAs = tc.oid
			}
		}
		sh.elems = append(sh.elems, elem)
		sh.text = append(sh.text, text)
		sh.encodeAs = append(sh.encodeAs, encodeAs)
		if elem != tc.oid {
			casts[i] = tc.typ
		}
	}
	idx, missing := (&batch.Batch{Columns: cols}).Indexes(s.key)
	if missing != "" {
		return nil, failure.Business(fmt.Errorf("write to %s: the batch has no key column %q", s.name(), missing))
	}
	sh.keyIdx = idx
	arrayOIDs, arrayTypes, err := arrayTypesOf(ctx, s.conn, sh.elems)
	if err != nil {
		return nil, fmt.Errorf("write to %s: %w", s.name(), err)
	}
	sql := upsertSQL(s.target(), sh.columns, arrayTypes, casts, s.key)
	if _, err := s.conn.PgConn().Prepare(ctx, sh.stmt, sql, arrayOIDs); err != nil {
		return nil, fmt.Errorf("write to %s: prepare upsert: %w", s.name(), err)
	}
	// The key columns' shape, for the delete and the side table, in the order of s.key.
	k := &shape{columns: s.key}
	var keyOIDs []uint32
	var keyTypes, keyCasts []string
	for _, c := range idx {
		k.elems = append(k.elems, sh.elems[c])
		k.text = append(k.text, sh.text[c])
		k.encodeAs = append(k.encodeAs, sh.encodeAs[c])
		keyOIDs, keyTypes, keyCasts = append(keyOIDs, arrayOIDs[c]), append(keyTypes, arrayTypes[c]), append(keyCasts, casts[c])
	}
	sh.keys = k
	sh.del = sh.stmt + "_delete"
	if _, err := s.conn.PgConn().Prepare(ctx, sh.del, deleteSQL(s.target(), s.key, keyTypes, keyCasts), keyOIDs); err != nil {
		return nil, fmt.Errorf("write to %s: prepare delete: %w", s.name(), err)
	}
	if s.side != nil {
		sh.seen = sh.stmt + "_seen"
		if _, err := s.conn.PgConn().Prepare(ctx, sh.seen, seenSQL(s.side, s.key, keyTypes, keyCasts), keyOIDs); err != nil {
			return nil, fmt.Errorf("write to %s: prepare the record of the run's keys: %w", s.name(), err)
		}
	}
	s.shapes[sig] = sh
	return sh, nil
}

// textual are the types whose binary wire format is their text: raw values that arrived as
// text are valid elements of their arrays unchanged.
var textual = map[uint32]bool{
	pgtype.TextOID: true, pgtype.VarcharOID: true, pgtype.BPCharOID: true, pgtype.NameOID: true,
	pgtype.JSONOID: true, pgtype.UnknownOID: true,
}

// binaryScalar reports whether pgx encodes values of the type in binary and the type is not an
// array.
func binaryScalar(m *pgtype.Map, oid uint32) bool {
	t, ok := m.TypeForOID(oid)
	if !ok || !t.Codec.FormatSupported(pgtype.BinaryFormatCode) {
		return false
	}
	_, isArray := t.Codec.(*pgtype.ArrayCodec)
	return !isArray
}

// arrayTypesOf returns the array type of each element type, as OID and SQL name.
func arrayTypesOf(ctx context.Context, conn *pgx.Conn, elems []uint32) ([]uint32, []string, error) {
	rows, err := conn.Query(ctx, `
		SELECT t.typarray, format_type(t.typarray, NULL), format_type(u.e, NULL)
		FROM unnest($1::oid[]) WITH ORDINALITY AS u(e, n) JOIN pg_type t ON t.oid = u.e
		ORDER BY u.n`, elems)
	if err != nil {
		return nil, nil, fmt.Errorf("look up array types: %w", err)
	}
	defer rows.Close()
	var oids []uint32
	var names []string
	for rows.Next() {
		var oid uint32
		var name, elem string
		if err := rows.Scan(&oid, &name, &elem); err != nil {
			return nil, nil, fmt.Errorf("look up array types: %w", err)
		}
		if oid == 0 {
			return nil, nil, failure.Business(fmt.Errorf("type %s has no array type", elem))
		}
		oids = append(oids, oid)
		names = append(names, name)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("look up array types: %w", err)
	}
	if len(oids) != len(elems) {
		return nil, nil, errors.New("look up array types: a type is missing from the target database")
	}
	return oids, names, nil
}

// arrayHeader is the size of a one-dimensional binary array's header: dimensions, null flag,
// element type, length and lower bound.
const arrayHeader = 20

func newArray(elem uint32, capacity int) []byte {
	return resetArray(nil, elem, capacity)
}

// resetArray starts an array in buf, reusing its memory when it is large enough.
func resetArray(buf []byte, elem uint32, capacity int) []byte {
	if cap(buf) < arrayHeader+capacity {
		buf = make([]byte, 0, arrayHeader+capacity)
	}
	a := buf[:arrayHeader]
	clear(a)
	binary.BigEndian.PutUint32(a[0:], 1)
	binary.BigEndian.PutUint32(a[8:], elem)
	binary.BigEndian.PutUint32(a[16:], 1)
	return a
}

func finishArray(a []byte, n int, hasNull bool) {
	if hasNull {
		binary.BigEndian.PutUint32(a[4:], 1)
	}
	binary.BigEndian.PutUint32(a[12:], uint32(n))
}

// rawArrays turns raw rows into one binary array per column. A field of a raw tuple (32-bit
// length, bytes) is laid out exactly like an array element, so it is copied as is. keep are
// the rows to take (all when nil), cols the columns (all when nil), elems their element types.
func rawArrays(raw *batch.Raw, keep, cols []int, elems []uint32, reuse [][]byte) [][]byte {
	n := raw.Len()
	if keep != nil {
		n = len(keep)
	}
	arrays := reuse[:0]
	for c, e := range elems {
		var buf []byte
		if c < cap(reuse) {
			buf = reuse[:cap(reuse)][c]
		}
		arrays = append(arrays, resetArray(buf, e, len(raw.Tuples)/len(elems)+8*n))
	}
	hasNull := make([]bool, len(elems))
	for k := 0; k < n; k++ {
		i := k
		if keep != nil {
			i = keep[k]
		}
		if cols != nil {
			for j, c := range cols {
				v := raw.Value(i, c)
				if v == nil {
					hasNull[j] = true
					arrays[j] = binary.BigEndian.AppendUint32(arrays[j], 0xFFFFFFFF)
					continue
				}
				arrays[j] = binary.BigEndian.AppendUint32(arrays[j], uint32(len(v)))
				arrays[j] = append(arrays[j], v...)
			}
			continue
		}
		t := raw.Tuple(i)
		off := 2
		for c := range elems {
			l := int32(binary.BigEndian.Uint32(t[off:]))
			end := off + 4
			if l < 0 {
				hasNull[c] = true
			} else {
				end += int(l)
			}
			arrays[c] = append(arrays[c], t[off:end]...)
			off = end
		}
	}
	for c := range arrays {
		finishArray(arrays[c], n, hasNull[c])
	}
	return arrays
}

// encodeArrays encodes decoded rows into one binary array per column.
func (s *Sink) encodeArrays(sh *shape, rows [][]any) ([][]byte, error) {
	m := s.conn.TypeMap()
	arrays := make([][]byte, len(sh.elems))
	for c, e := range sh.elems {
		arrays[c] = newArray(e, 16*len(rows))
	}
	hasNull := make([]bool, len(sh.elems))
	var scratch []byte
	for r, row := range rows {
		for c, v := range row {
			var err error
			oid := sh.elems[c]
			switch {
			case v == nil:
				scratch = nil
			case sh.text[c]:
				oid = sh.encodeAs[c]
				scratch, err = encodeText(m, oid, v, scratch[:0])
			default:
				scratch, err = m.Encode(oid, pgtype.BinaryFormatCode, v, scratch[:0])
			}
			if err != nil {
				return nil, s.encodeError(m, r+1, sh.columns[c], oid, v)
			}
			if scratch == nil {
				hasNull[c] = true
				arrays[c] = binary.BigEndian.AppendUint32(arrays[c], 0xFFFFFFFF)
				continue
			}
			arrays[c] = binary.BigEndian.AppendUint32(arrays[c], uint32(len(scratch)))
			arrays[c] = append(arrays[c], scratch...)
		}
	}
	for c := range arrays {
		finishArray(arrays[c], len(rows), hasNull[c])
	}
	return arrays, nil
}

// encodeText renders a value in the text format of type oid (a string is taken as already
// rendered).
func encodeText(m *pgtype.Map, oid uint32, v any, buf []byte) ([]byte, error) {
	if str, ok := v.(string); ok {
		return append(buf, str...), nil
	}
	if oid == 0 {
		return nil, fmt.Errorf("no type to render %T as text", v)
	}
	return m.Encode(oid, pgtype.TextFormatCode, v, buf)
}
