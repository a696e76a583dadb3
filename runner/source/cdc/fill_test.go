package cdc

import (
	"reflect"
	"testing"

	"github.com/sluice-dev/sluice/runner/batch"
)

func TestFillColumns(t *testing.T) {
	cases := []struct {
		name string
		in   []Unchanged
		want []int
	}{
		{"one row", []Unchanged{{Columns: []int{3}}}, []int{3}},
		{"union in column order", []Unchanged{{Columns: []int{4, 1}}, {Columns: []int{2, 4}}}, []int{1, 2, 4}},
		{"none", nil, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := fillColumns(c.in); !reflect.DeepEqual(got, c.want) {
				t.Fatalf("fillColumns = %v, want %v", got, c.want)
			}
		})
	}
}

func TestDropRows(t *testing.T) {
	rows := func(ids ...int) [][]any {
		out := make([][]any, len(ids))
		for i, id := range ids {
			out[i] = []any{id}
		}
		return out
	}
	cases := []struct {
		name        string
		drop        []int
		wantRows    [][]any
		wantDeleted []bool
	}{
		{"nothing", nil, rows(0, 1, 2, 3), []bool{false, true, false, false}},
		{"first and last", []int{0, 3}, rows(1, 2), []bool{true, false}},
		{"adjacent", []int{1, 2}, rows(0, 3), []bool{false, false}},
		{"all", []int{0, 1, 2, 3}, rows(), []bool{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ch := &Changes{Batch: &batch.Batch{Rows: rows(0, 1, 2, 3), Deleted: []bool{false, true, false, false}}}
			dropRows(ch, c.drop)
			if !reflect.DeepEqual(ch.Batch.Rows, c.wantRows) || !reflect.DeepEqual(ch.Batch.Deleted, c.wantDeleted) {
				t.Fatalf("rows %v deleted %v, want %v %v", ch.Batch.Rows, ch.Batch.Deleted, c.wantRows, c.wantDeleted)
			}
		})
	}
}

func TestFillSQL(t *testing.T) {
	s := &Stream{
		opts:   StreamOptions{Table: "sales.orders", Columns: []batch.Column{{Name: "region"}, {Name: "id"}, {Name: "Notes"}, {Name: "doc"}}},
		keyIdx: []int{0, 1}, keyTypes: []string{"text", "bigint"},
	}
	want := `SELECT k.ord, t."Notes", t."doc" FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(k0, k1, ord) ` +
		`JOIN "sales"."orders" AS t ON t."region" = k.k0::text AND t."id" = k.k1::bigint`
	if got := s.fillSQL([]int{2, 3}); got != want {
		t.Fatalf("fillSQL =\n%s\nwant\n%s", got, want)
	}
}
