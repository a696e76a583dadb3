package batch

import (
	"bytes"
	"testing"
)

func TestRawRoundTrip(t *testing.T) {
	rows := [][][]byte{
		{[]byte("a"), nil, []byte("")},
		{nil, []byte("long value"), []byte{0, 1, 2}},
		{[]byte("z"), []byte("y"), nil},
	}
	r := &Raw{}
	for _, row := range rows {
		r.AppendRow(row)
	}
	if r.Len() != len(rows) {
		t.Fatalf("Len = %d", r.Len())
	}
	for i, row := range rows {
		for c, want := range row {
			got := r.Value(i, c)
			if !bytes.Equal(got, want) || (got == nil) != (want == nil) {
				t.Fatalf("Value(%d, %d) = %q, want %q", i, c, got, want)
			}
		}
	}
	// A tuple is a binary COPY tuple: 2 bytes of column count, then length-prefixed fields.
	if tup := r.Tuple(0); len(tup) != 2+(4+1)+4+(4+0) || tup[1] != 3 {
		t.Fatalf("tuple 0 = %v", tup)
	}
}

func TestIndexes(t *testing.T) {
	b := &Batch{Columns: []Column{{Name: "id"}, {Name: "v"}, {Name: "region"}}}
	idx, missing := b.Indexes([]string{"region", "id"})
	if missing != "" || idx[0] != 2 || idx[1] != 0 {
		t.Fatalf("Indexes = %v, %q", idx, missing)
	}
	if _, missing := b.Indexes([]string{"id", "nope"}); missing != "nope" {
		t.Fatalf("missing = %q", missing)
	}
	if b.Len() != 0 || (&Batch{Raw: &Raw{Starts: []int{0}}}).Len() != 1 {
		t.Fatal("Len must count raw rows when Raw is set")
	}
}
