package source

import (
	"testing"
	"time"
)

func TestCursorKind(t *testing.T) {
	cases := map[string]string{
		"timestamp with time zone":       cursorTime,
		"timestamp without time zone":    cursorTime,
		"timestamp(3) with time zone":    cursorTime,
		"timestamp(0) without time zone": cursorTime,
		"date":                           cursorTime,
		"bigint":                         cursorSequence,
		"integer":                        cursorSequence,
		"numeric(20,0)":                  cursorSequence,
		"text":                           cursorSequence,
		"time without time zone":         cursorSequence,
	}
	for typ, want := range cases {
		if got := cursorKind(typ); got != want {
			t.Errorf("cursorKind(%q) = %q, want %q", typ, got, want)
		}
	}
}

func TestStillOpen(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	a := Holder{PID: 10, Since: t0}
	b := Holder{PID: 11, Since: t0.Add(time.Second)}
	p := Holder{State: "prepared", GID: "tx1", Since: t0}
	cases := []struct {
		name         string
		before, now  []Holder
		wantRemained int
	}{
		{"all still open", []Holder{a, b, p}, []Holder{a, b, p}, 3},
		{"ended transactions leave", []Holder{a, b, p}, []Holder{b}, 1},
		{"same backend in a new transaction has ended the old one", []Holder{a}, []Holder{{PID: 10, Since: t0.Add(time.Minute)}}, 0},
		{"a new transaction does not join", []Holder{a}, []Holder{a, {PID: 12, Since: t0}}, 1},
		{"a committed prepared transaction leaves", []Holder{p}, nil, 0},
	}
	for _, tc := range cases {
		if got := stillOpen(tc.before, tc.now); len(got) != tc.wantRemained {
			t.Errorf("%s: %d remain, want %d (%v)", tc.name, len(got), tc.wantRemained, got)
		}
	}
}

func TestPageLimit(t *testing.T) {
	cases := []struct {
		name             string
		batch            int
		maxBytes, widest int64
		want             int
	}{
		{"no byte bound", 5000, 0, 0, 5000},
		{"a probe before any row was seen", 5000, 64 << 20, 0, probeRows},
		{"a small batch needs no probe", 10, 64 << 20, 0, 10},
		{"narrow rows fill the batch", 5000, 64 << 20, 150, 5000},
		{"wide rows: the power of two that fits", 5000, 64 << 20, 1 << 20, 64},
		{"wider still", 5000, 64 << 20, 3 << 20, 16},
		{"a row beyond the bound still makes a page", 5000, 1 << 20, 5 << 20, 1},
	}
	for _, tc := range cases {
		if got := pageLimit(tc.batch, tc.maxBytes, tc.widest); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
}
