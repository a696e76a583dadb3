package elasticsearch

import (
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/sluice-dev/sluice/runner/batch"
	"github.com/sluice-dev/sluice/runner/failure"
)

// shape is what the encoding of one batch shape (column names, types, wire formats) needs,
// made once per sink.
type shape struct {
	// fields are the field names as JSON, each with the byte before it: `{"id":`, `,"v":`.
	fields [][]byte
	oids   []uint32
	// elems are the element types of array columns.
	elems   []uint32
	formats []int16
	keyIdx  []int
	keyOIDs []uint32
}

func (s *Sink) shapeFor(b *batch.Batch) (*shape, error) {
	var formats []int16
	if b.Raw != nil {
		formats = b.Raw.Formats
	}
	sig := batch.Signature(b.Columns, formats)
	if sh, ok := s.shapes[sig]; ok {
		return sh, nil
	}
	sh := &shape{formats: formats}
	for i, c := range b.Columns {
		sep := byte(',')
		if i == 0 {
			sep = '{'
		}
		f := appendString([]byte{sep}, c.Name)
		sh.fields = append(sh.fields, append(f, ':'))
		sh.oids = append(sh.oids, c.Type)
		var elem uint32
		if t, ok := s.types.TypeForOID(c.Type); ok {
			if ac, ok := t.Codec.(*pgtype.ArrayCodec); ok && ac.ElementType != nil {
				elem = ac.ElementType.OID
			}
		}
		sh.elems = append(sh.elems, elem)
	}
	idx, missing := b.Indexes(s.target.Key)
	if missing != "" {
		return nil, failure.Business(fmt.Errorf("write to %s: the batch has no key column %q (columns: %s)",
			s.name(), missing, strings.Join(b.Names(), ", ")))
	}
	sh.keyIdx = idx
	for _, i := range idx {
		sh.keyOIDs = append(sh.keyOIDs, b.Columns[i].Type)
	}
	s.shapes[sig] = sh
	return sh, nil
}

// encode renders the batch into s.items: the _id and bulk body of the last row of each _id,
// in the order of those rows.
func (s *Sink) encode(sh *shape, b *batch.Batch) error {
	n := b.Len()
	s.ids, s.idEnds = s.ids[:0], s.idEnds[:0]
	if cap(s.keyVals) < len(sh.keyIdx) {
		s.keyVals = make([]any, len(sh.keyIdx))
	}
	keyVals := s.keyVals[:len(sh.keyIdx)]
	for i := range n {
		start := len(s.ids)
		var err error
		if b.Raw != nil {
			s.ids, err = s.raw.appendID(s.ids, b.Raw, i, sh)
		} else {
			for k, j := range sh.keyIdx {
				keyVals[k] = b.Rows[i][j]
			}
			s.ids, err = appendID(s.ids, keyVals, sh.keyOIDs)
		}
		if err == nil && len(s.ids) == start {
			err = errors.New("the _id is empty")
		}
		if err == nil && len(s.ids)-start > maxIDBytes {
			err = fmt.Errorf("the _id is %d bytes long, Elasticsearch allows %d", len(s.ids)-start, maxIDBytes)
		}
		if err != nil {
			return failure.Business(fmt.Errorf("write to %s: row %d of the batch, key (%s): %w",
				s.name(), i+1, strings.Join(s.target.Key, ", "), err))
		}
		s.idEnds = append(s.idEnds, len(s.ids))
	}
	// One string for all the batch's _ids; each _id is a substring of it.
	all := string(s.ids)
	id := func(i int) string {
		start := 0
		if i > 0 {
			start = s.idEnds[i-1]
		}
		return all[start:s.idEnds[i]]
	}
	clear(s.seen)
	for i := range n {
		s.seen[id(i)] = i
	}
	s.body = s.body[:0]
	s.items = s.items[:0]
	ends := s.docEnds[:0]
	for i := range n {
		key := id(i)
		if s.seen[key] != i {
			continue // a later row has the same _id
		}
		if b.IsDeleted(i) {
			s.items = append(s.items, item{id: key, del: true, row: i})
			ends = append(ends, len(s.body))
			continue
		}
		if s.action == "update" {
			s.body = append(s.body, `{"doc":`...)
		}
		var err error
		if b.Raw != nil {
			s.body, err = s.raw.appendDoc(s.body, b.Raw, i, sh)
		} else {
			s.body, err = appendDoc(s.body, b.Rows[i], sh)
		}
		if err != nil {
			return failure.Business(fmt.Errorf("write to %s: row %d of the batch (_id %q): %w", s.name(), i+1, key, err))
		}
		if s.action == "update" {
			s.body = append(s.body, `,"doc_as_upsert":true}`...)
		}
		s.items = append(s.items, item{id: key, row: i})
		ends = append(ends, len(s.body))
	}
	// The body buffer may have moved while it grew: slice the documents at the end.
	start := 0
	for k := range s.items {
		s.items[k].doc = s.body[start:ends[k]:ends[k]]
		start = ends[k]
	}
	s.docEnds = ends
	return nil
}

// appendDoc renders a decoded row as a JSON object.
func appendDoc(buf []byte, row []any, sh *shape) ([]byte, error) {
	for c, v := range row {
		buf = append(buf, sh.fields[c]...)
		var err error
		if buf, err = appendValue(buf, v, sh.oids[c], sh.elems[c]); err != nil {
			return buf, fmt.Errorf("column %s: %w", sh.fields[c][1:len(sh.fields[c])-1], err)
		}
	}
	return append(buf, '}'), nil
}
