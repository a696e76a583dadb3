package source

import "math/bits"

// A page is bounded in bytes as well as rows: 5,000 rows of 2 MB would take a runner to out of
// memory long before the sink sees them. The reader keeps the widest average row it has seen
// and asks each page for as many rows as fit in MaxBytes (a power of two, so that few distinct
// statements are prepared), starting a run with a small probe page; a page that still reaches
// the bound (wider rows than seen) stops there, one look-ahead row later.

// probeRows is the size of the first page of a run with a byte bound.
const probeRows = 64

// rowBytes is the size of a row as Postgres sent it.
func rowBytes(values [][]byte) int64 {
	var n int64
	for _, v := range values {
		n += int64(len(v)) + 4
	}
	return n
}

// pageLimit returns how many rows the next page asks for.
func (r *Reader) pageLimit() int {
	return pageLimit(r.opts.BatchSize, r.opts.MaxBytes, r.widest)
}

// pageLimit is the rule, pure so it is table-tested: the batch size without a byte bound;
// with one, a probe before any row was seen, then the largest power of two of rows of the
// widest average width seen that fit, at least one.
func pageLimit(batchSize int, maxBytes, widest int64) int {
	if maxBytes <= 0 {
		return batchSize
	}
	if widest <= 0 {
		return min(batchSize, probeRows)
	}
	n := maxBytes / widest
	if n < 1 {
		return 1
	}
	if n >= int64(batchSize) {
		return batchSize
	}
	return 1 << (bits.Len64(uint64(n)) - 1)
}

// observe records a page's average row width.
func (r *Reader) observe(size int64, rows int) {
	if rows == 0 {
		return
	}
	if avg := size / int64(rows); avg > r.widest {
		r.widest = avg
	}
}

// pageSQL returns the statement of a page of limit rows.
func (r *Reader) pageSQL(after bool, limit int) string {
	if limit == r.opts.BatchSize {
		if after {
			return r.next
		}
		return r.first
	}
	k := r.keyset
	k.Limit = limit
	return k.PageSQL(after)
}
