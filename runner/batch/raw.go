package batch

import (
	"encoding/binary"
	"sync"
)

// Raw is a batch in the source's wire encoding, row after row in the layout of a binary COPY
// tuple (a 16-bit column count, then per column a 32-bit length, -1 for NULL, and the bytes).
// When no transform changes the rows, a sink that declares it (sink.RawWriter) writes these
// bytes as they came: no value is decoded into Go and encoded again, which is most of the
// runner's CPU on wide tables.
type Raw struct {
	// Formats are the wire formats of the columns (0 text, 1 binary), as Postgres sent them.
	Formats []int16
	// Tuples holds the rows back to back.
	Tuples []byte
	// Starts are the offsets of the rows in Tuples.
	Starts []int
}

// Len returns the number of rows.
func (r *Raw) Len() int { return len(r.Starts) }

// Tuple returns row i as a binary COPY tuple.
func (r *Raw) Tuple(i int) []byte {
	end := len(r.Tuples)
	if i+1 < len(r.Starts) {
		end = r.Starts[i+1]
	}
	return r.Tuples[r.Starts[i]:end]
}

// Value returns the bytes of column col in row i, nil for NULL.
func (r *Raw) Value(i, col int) []byte {
	t := r.Tuple(i)
	off := 2
	for c := 0; ; c++ {
		n := int32(binary.BigEndian.Uint32(t[off:]))
		off += 4
		if c == col {
			if n < 0 {
				return nil
			}
			return t[off : off+int(n)]
		}
		if n > 0 {
			off += int(n)
		}
	}
}

// AppendRow appends a row of raw values (nil for NULL) in the tuple layout.
func (r *Raw) AppendRow(values [][]byte) {
	r.Starts = append(r.Starts, len(r.Tuples))
	r.Tuples = binary.BigEndian.AppendUint16(r.Tuples, uint16(len(values)))
	for _, v := range values {
		if v == nil {
			r.Tuples = binary.BigEndian.AppendUint32(r.Tuples, 0xFFFFFFFF)
			continue
		}
		r.Tuples = binary.BigEndian.AppendUint32(r.Tuples, uint32(len(v)))
		r.Tuples = append(r.Tuples, v...)
	}
}

// tuplePool recycles the byte buffers of raw batches: a run moves thousands of batches of the
// same size, and reusing their memory keeps the runner's footprint flat however long it runs.
var tuplePool sync.Pool

// NewRaw returns an empty raw batch whose buffer can hold about size bytes, reusing the
// buffer of a released batch when there is one.
func NewRaw(formats []int16, rows, size int) *Raw {
	r := &Raw{Formats: formats, Starts: make([]int, 0, rows)}
	if buf, ok := tuplePool.Get().(*[]byte); ok && cap(*buf) >= size {
		r.Tuples = (*buf)[:0]
	} else {
		r.Tuples = make([]byte, 0, size)
	}
	return r
}

// Release hands the batch's buffer back for reuse. The batch must not be used afterwards;
// the executor calls it once the sink has taken the rows (a sink copies what it sends).
func (r *Raw) Release() {
	if r == nil || r.Tuples == nil {
		return
	}
	buf := r.Tuples[:0]
	r.Tuples, r.Starts = nil, nil
	tuplePool.Put(&buf)
}

// DropLast removes the last row.
func (r *Raw) DropLast() {
	if n := len(r.Starts); n > 0 {
		r.Tuples = r.Tuples[:r.Starts[n-1]]
		r.Starts = r.Starts[:n-1]
	}
}
