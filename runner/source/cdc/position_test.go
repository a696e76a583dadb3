package cdc

import (
	"testing"

	"github.com/jackc/pglogrepl"
)

func TestEndReached(t *testing.T) {
	const page = 8192
	cases := []struct {
		name string
		end  End
		pos  pglogrepl.LSN
		want bool
	}{
		{"at the end", End{LSN: 0x1000050, BlockSize: page}, 0x1000050, true},
		{"past the end", End{LSN: 0x1000050, BlockSize: page}, 0x1000100, true},
		{"before the end", End{LSN: 0x1000050, BlockSize: page}, 0x1000048, false},
		{"short header: the record before ends at the boundary", End{LSN: 0x1002018, BlockSize: page}, 0x1002000, true},
		{"long header at a segment start", End{LSN: 0x2000028, BlockSize: page}, 0x2000000, true},
		{"short header: a record before the boundary", End{LSN: 0x1002018, BlockSize: page}, 0x1001ff8, false},
		{"a record that spans the boundary ends past a header", End{LSN: 0x1002060, BlockSize: page}, 0x1002000, false},
		{"page size unknown", End{LSN: 0x1002018}, 0x1002000, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := c.end.Reached(c.pos); got != c.want {
				t.Fatalf("End{%s, %d}.Reached(%s) = %v, want %v", c.end.LSN, c.end.BlockSize, c.pos, got, c.want)
			}
		})
	}
}
