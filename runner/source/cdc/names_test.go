package cdc

import (
	"regexp"
	"testing"
)

func TestNames(t *testing.T) {
	valid := regexp.MustCompile(`^[a-z0-9_]{1,63}$`)
	base := [4]string{"team-a", "orders", "uid-1", "stream-1"}
	slot, pub := Names(base[0], base[1], base[2], base[3])
	if !valid.MatchString(slot) || !valid.MatchString(pub) {
		t.Fatalf("names %q %q are not valid slot names", slot, pub)
	}
	if again, _ := Names(base[0], base[1], base[2], base[3]); again != slot {
		t.Fatalf("names are not stable: %q then %q", slot, again)
	}
	cases := []struct {
		name string
		in   [4]string
	}{
		{"another namespace", [4]string{"team-b", "orders", "uid-1", "stream-1"}},
		{"another name", [4]string{"team-a", "orders2", "uid-1", "stream-1"}},
		{"re-created pipeline", [4]string{"team-a", "orders", "uid-2", "stream-1"}},
		{"changed stream", [4]string{"team-a", "orders", "uid-1", "stream-2"}},
		{"separator not ambiguous", [4]string{"team-a", "orders\x00uid-1", "", "stream-1"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if other, _ := Names(c.in[0], c.in[1], c.in[2], c.in[3]); other == slot {
				t.Fatalf("%v names the same slot %q as %v", c.in, other, base)
			}
		})
	}
}

func TestSplitTable(t *testing.T) {
	for in, want := range map[string][2]string{"orders": {"public", "orders"}, "sales.orders": {"sales", "orders"}} {
		s, n := SplitTable(in)
		if s != want[0] || n != want[1] {
			t.Errorf("SplitTable(%q) = %q, %q; want %q", in, s, n, want)
		}
	}
}
