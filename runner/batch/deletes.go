package batch

import (
	"encoding/binary"
	"slices"

	"github.com/jackc/pgx/v5/pgtype"
)

// IsDeleted reports whether row i deletes its key instead of being written.
func (b *Batch) IsDeleted(i int) bool { return b.Deleted != nil && b.Deleted[i] }

// CountDeleted returns the number of deleting rows.
func (b *Batch) CountDeleted() int {
	n := 0
	for _, d := range b.Deleted {
		if d {
			n++
		}
	}
	return n
}

// MarkDeleted flags the rows whose column col marks them deleted: any value but NULL, and for
// a boolean column only true. Rows already flagged stay flagged.
func (b *Batch) MarkDeleted(col int) {
	n := b.Len()
	isBool := b.Columns[col].Type == pgtype.BoolOID
	for i := range n {
		var del bool
		if b.Raw != nil {
			v := b.Raw.Value(i, col)
			del = v != nil
			if del && isBool {
				del = rawTrue(v, b.Raw.Formats[col])
			}
		} else {
			v := b.Rows[i][col]
			del = v != nil
			if t, ok := v.(bool); ok {
				del = t
			}
		}
		if del {
			if b.Deleted == nil {
				b.Deleted = make([]bool, n)
			}
			b.Deleted[i] = true
		}
	}
}

// rawTrue reads a boolean in the wire format: one byte 1 in binary, "t" in text.
func rawTrue(v []byte, format int16) bool {
	if format == 1 {
		return len(v) == 1 && v[0] != 0
	}
	return len(v) > 0 && (v[0] == 't' || v[0] == 'T')
}

// DropColumn removes column col from the batch, values included. Raw tuples are rewritten in
// place, without allocating.
func (b *Batch) DropColumn(col int) {
	b.Columns = slices.Delete(slices.Clone(b.Columns), col, col+1)
	if b.Raw != nil {
		b.Raw.dropColumn(col)
		return
	}
	for i, r := range b.Rows {
		b.Rows[i] = slices.Delete(r, col, col+1)
	}
}

func (r *Raw) dropColumn(col int) {
	r.Formats = slices.Delete(slices.Clone(r.Formats), col, col+1)
	w := 0
	for i := range r.Starts {
		t := r.Tuple(i)
		n := int(binary.BigEndian.Uint16(t))
		// Find the field's bounds in the tuple.
		off := 2
		var from, to int
		for c := 0; c < n; c++ {
			l := int32(binary.BigEndian.Uint32(t[off:]))
			end := off + 4
			if l > 0 {
				end += int(l)
			}
			if c == col {
				from, to = off, end
			}
			off = end
		}
		start := r.Starts[i]
		r.Starts[i] = w
		// The rewritten tuple never starts after the original one: copy moves left.
		binary.BigEndian.PutUint16(r.Tuples[start:], uint16(n-1))
		w += copy(r.Tuples[w:], r.Tuples[start:start+from])
		w += copy(r.Tuples[w:], r.Tuples[start+to:start+len(t)])
	}
	r.Tuples = r.Tuples[:w]
}
