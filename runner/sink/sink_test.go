package sink

import "testing"

func TestExceedsDeleteRatio(t *testing.T) {
	for _, tc := range []struct {
		swept, total int64
		ratio        float64
		refuse       bool
	}{
		{0, 0, 0.5, false},
		{0, 100, 0, false},
		{-5, 100, 0.5, false},
		{1, 100, 0, true},
		{50, 100, 0.5, false},
		{51, 100, 0.5, true},
		{100, 100, 1, false},
		{100, 100, 0.99, true},
	} {
		if got := ExceedsDeleteRatio(tc.swept, tc.total, tc.ratio); got != tc.refuse {
			t.Errorf("ExceedsDeleteRatio(%d, %d, %v) = %v, want %v", tc.swept, tc.total, tc.ratio, got, tc.refuse)
		}
	}
}
