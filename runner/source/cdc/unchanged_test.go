package cdc

import (
	"reflect"
	"testing"

	"github.com/sluice-dev/sluice/runner/batch"
)

func TestChangesDrop(t *testing.T) {
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
			ch := &Changes{Batch: &batch.Batch{Rows: rows(0, 1, 2, 3), Deleted: []bool{false, true, false, false}},
				Unchanged: []Unchanged{{Row: 1}}}
			ch.Drop(c.drop)
			if !reflect.DeepEqual(ch.Batch.Rows, c.wantRows) || !reflect.DeepEqual(ch.Batch.Deleted, c.wantDeleted) {
				t.Fatalf("rows %v deleted %v, want %v %v", ch.Batch.Rows, ch.Batch.Deleted, c.wantRows, c.wantDeleted)
			}
			if ch.Unchanged != nil {
				t.Fatalf("Unchanged %v after Drop", ch.Unchanged)
			}
		})
	}
}
