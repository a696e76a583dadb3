// Package batch holds the unit of work that flows from the reader through the transforms to a
// sink: ordered columns and rows of generically typed values.
package batch

// Column is one column of a batch.
type Column struct {
	// Name is the column name as the reader (or a transform) produced it.
	Name string
	// Type is the Postgres type OID of the values when known (the reader's columns), or 0 when
	// a stage produced the column without a database type (a Python transform). A sink uses it
	// to write values back with the source type where it can.
	Type uint32
}

// Batch is a page of rows. Values are what pgx decodes (int64, string, time.Time,
// pgtype.Numeric, json.RawMessage for json/jsonb, []any for arrays, ...) or, after a
// transform, plain Go values; nil is SQL NULL.
type Batch struct {
	Columns []Column
	// Rows holds one value per column, in column order. It is nil when Raw is set.
	Rows [][]any
	// Raw, when set, holds the rows undecoded instead of Rows. The executor asks the reader
	// for raw batches only when every stage is the identity and the sink is a
	// sink.RawWriter, so transforms and other sinks always see Rows.
	Raw *Raw
	// More is set by the reader when rows follow this page: it read the row after the
	// page's last one (a page may end before its size, at its byte bound).
	More bool
	// Deleted, when set, flags the rows that delete their key from the sink instead of being
	// written (a soft-deleted source row, a transform's explicit delete). It has one entry per
	// row; only a deleting row's key columns matter.
	Deleted []bool
	// ReadBytes is the size of the values the source sent for the page (and their length
	// words), as the reader counted them to bound the page; 0 when unknown.
	ReadBytes int64
	// Origin, when set by a transform, is the index of the reader row each row came from
	// (a task may drop rows or make several of one); nil: row i came from reader row i.
	Origin []int
}

// Len returns the number of rows.
func (b *Batch) Len() int {
	if b.Raw != nil {
		return b.Raw.Len()
	}
	return len(b.Rows)
}

// Names returns the column names in order.
func (b *Batch) Names() []string {
	names := make([]string, len(b.Columns))
	for i, c := range b.Columns {
		names[i] = c.Name
	}
	return names
}

// Index returns the position of the named column, or -1.
func (b *Batch) Index(name string) int {
	for i, c := range b.Columns {
		if c.Name == name {
			return i
		}
	}
	return -1
}

// Indexes returns the positions of the named columns and the first name that is missing.
func (b *Batch) Indexes(names []string) ([]int, string) {
	idx := make([]int, len(names))
	for i, n := range names {
		idx[i] = b.Index(n)
		if idx[i] < 0 {
			return nil, n
		}
	}
	return idx, ""
}

// Select returns a batch of b's rows at the given indexes, in that order, with b's columns.
// Raw rows are copied; decoded rows are shared.
func (b *Batch) Select(rows []int) *Batch {
	out := &Batch{Columns: b.Columns, More: b.More}
	if b.Raw != nil {
		size := 0
		for _, i := range rows {
			size += len(b.Raw.Tuple(i))
		}
		out.Raw = &Raw{Formats: b.Raw.Formats, Tuples: make([]byte, 0, size), Starts: make([]int, 0, len(rows))}
		for _, i := range rows {
			out.Raw.Starts = append(out.Raw.Starts, len(out.Raw.Tuples))
			out.Raw.Tuples = append(out.Raw.Tuples, b.Raw.Tuple(i)...)
		}
	} else {
		out.Rows = make([][]any, len(rows))
		for j, i := range rows {
			out.Rows[j] = b.Rows[i]
		}
	}
	if b.Deleted != nil {
		out.Deleted = make([]bool, len(rows))
		for j, i := range rows {
			out.Deleted[j] = b.Deleted[i]
		}
	}
	if b.Origin != nil {
		out.Origin = make([]int, len(rows))
		for j, i := range rows {
			out.Origin[j] = b.Origin[i]
		}
	}
	return out
}

// Source returns the index of the reader row that row i of b came from: i itself unless a
// transform recorded Origin.
func (b *Batch) Source(i int) int {
	if b.Origin == nil {
		return i
	}
	return b.Origin[i]
}
