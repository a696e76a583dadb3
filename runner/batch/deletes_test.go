package batch

import (
	"reflect"
	"testing"

	"github.com/jackc/pgx/v5/pgtype"
)

func TestMarkDeleted(t *testing.T) {
	for _, tc := range []struct {
		name   string
		typ    uint32
		format int16
		raw    [][]byte
		rows   []any
		want   []bool
	}{
		{name: "timestamp set or NULL, decoded", typ: 1184, rows: []any{nil, "2024-01-01", nil}, want: []bool{false, true, false}},
		{name: "boolean, decoded", typ: pgtype.BoolOID, rows: []any{true, false, nil}, want: []bool{true, false, false}},
		{name: "nothing deleted, decoded", typ: 1184, rows: []any{nil, nil}, want: nil},
		{name: "timestamp, raw binary", typ: 1184, format: 1, raw: [][]byte{nil, {0, 0, 0, 0, 0, 0, 0, 1}}, want: []bool{false, true}},
		{name: "boolean, raw binary", typ: pgtype.BoolOID, format: 1, raw: [][]byte{{1}, {0}, nil}, want: []bool{true, false, false}},
		{name: "boolean, raw text", typ: pgtype.BoolOID, format: 0, raw: [][]byte{[]byte("t"), []byte("f")}, want: []bool{true, false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &Batch{Columns: []Column{{Name: "id", Type: 20}, {Name: "deleted", Type: tc.typ}}}
			if tc.raw != nil {
				b.Raw = NewRaw([]int16{1, tc.format}, len(tc.raw), 64)
				for i, v := range tc.raw {
					b.Raw.AppendRow([][]byte{{0, 0, 0, 0, 0, 0, 0, byte(i)}, v})
				}
			} else {
				for i, v := range tc.rows {
					b.Rows = append(b.Rows, []any{int64(i), v})
				}
			}
			b.MarkDeleted(1)
			if !reflect.DeepEqual(b.Deleted, tc.want) {
				t.Fatalf("Deleted = %v, want %v", b.Deleted, tc.want)
			}
			want := 0
			for _, d := range tc.want {
				if d {
					want++
				}
			}
			if got := b.CountDeleted(); got != want {
				t.Fatalf("CountDeleted = %d, want %d", got, want)
			}
		})
	}
}

func TestDropColumn(t *testing.T) {
	rows := [][][]byte{
		{[]byte("a"), nil, []byte("xyz")},
		{nil, []byte("deleted"), []byte("")},
		{[]byte("bb"), []byte("1"), nil},
	}
	for col := range 3 {
		raw := NewRaw([]int16{0, 1, 0}, len(rows), 16)
		var want [][][]byte
		for _, r := range rows {
			raw.AppendRow(r)
			var w [][]byte
			for c, v := range r {
				if c != col {
					w = append(w, v)
				}
			}
			want = append(want, w)
		}
		formats := raw.Formats
		b := &Batch{Columns: []Column{{Name: "a"}, {Name: "b"}, {Name: "c"}}, Raw: raw}
		b.DropColumn(col)
		if len(b.Columns) != 2 || b.Index([]string{"a", "b", "c"}[col]) >= 0 {
			t.Fatalf("drop %d: columns %v", col, b.Names())
		}
		if len(formats) != 3 || len(raw.Formats) != 2 {
			t.Fatalf("drop %d: formats %v (the reader's %v must stay)", col, raw.Formats, formats)
		}
		want2 := NewRaw(raw.Formats, len(want), 16)
		for _, w := range want {
			want2.AppendRow(w)
		}
		if !reflect.DeepEqual(raw.Tuples, want2.Tuples) || !reflect.DeepEqual(raw.Starts, want2.Starts) {
			t.Fatalf("drop %d: tuples %q starts %v, want %q %v", col, raw.Tuples, raw.Starts, want2.Tuples, want2.Starts)
		}
		for i, w := range want {
			for c := range w {
				if got := raw.Value(i, c); !reflect.DeepEqual(got, w[c]) {
					t.Fatalf("drop %d: row %d col %d = %q, want %q", col, i, c, got, w[c])
				}
			}
		}
	}
	d := &Batch{Columns: []Column{{Name: "a"}, {Name: "b"}}, Rows: [][]any{{1, 2}, {3, 4}}}
	d.DropColumn(0)
	if !reflect.DeepEqual(d.Rows, [][]any{{2}, {4}}) || d.Names()[0] != "b" {
		t.Fatalf("decoded drop: %v %v", d.Rows, d.Names())
	}
}
