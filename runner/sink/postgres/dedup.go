package postgres

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"math/big"
	"sort"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/sluice-dev/sluice/runner/batch"
)

// lastPerKeyRaw is lastPerKeyIndex for raw rows: it returns the rows to keep, or nil when no key
// repeats. Raw keys compare by their wire bytes. It hashes instead of building a string per
// row: on a million rows the strings cost more CPU than the rest of the Go side together.
func (s *Sink) lastPerKeyRaw(raw *batch.Raw, keyIdx []int) []int {
	n := raw.Len()
	if s.seen == nil {
		s.seen = make(map[uint64]int, n)
	}
	clear(s.seen)
	var h maphash.Hash
	key := func(i int) uint64 {
		h.Reset()
		for _, k := range keyIdx {
			v := raw.Value(i, k)
			var l [4]byte
			binary.BigEndian.PutUint32(l[:], uint32(len(v)))
			_, _ = h.Write(l[:])
			_, _ = h.Write(v)
		}
		return h.Sum64()
	}
	sameKey := func(i, j int) bool {
		for _, k := range keyIdx {
			if !bytes.Equal(raw.Value(i, k), raw.Value(j, k)) || (raw.Value(i, k) == nil) != (raw.Value(j, k) == nil) {
				return false
			}
		}
		return true
	}
	h.SetSeed(s.seed)
	var later map[int]bool // rows superseded by a later row with the same key
	for i := 0; i < n; i++ {
		k := key(i)
		// Linear probing on collisions keeps distinct keys that share a hash apart.
		for {
			j, ok := s.seen[k]
			if !ok {
				s.seen[k] = i
				break
			}
			if sameKey(i, j) {
				if later == nil {
					later = map[int]bool{}
				}
				later[j] = true
				s.seen[k] = i
				break
			}
			k++
		}
	}
	if later == nil {
		return nil
	}
	keep := make([]int, 0, n-len(later))
	for i := 0; i < n; i++ {
		if !later[i] {
			keep = append(keep, i)
		}
	}
	return keep
}

// lastPerKeyIndex returns the rows to keep when every row whose key appears again later in
// the batch is dropped: one INSERT ... ON CONFLICT cannot touch the same row twice, and the
// last version is the newest. It returns nil when no key repeats (the common case).
func lastPerKeyIndex(rows [][]any, keyIdx []int) []int {
	last := make(map[string]int, len(rows))
	var buf []byte
	dups := false
	for i, r := range rows {
		buf = appendKey(buf[:0], r, keyIdx)
		if _, ok := last[string(buf)]; ok {
			dups = true
		}
		last[string(buf)] = i
	}
	if !dups {
		return nil
	}
	keep := make([]int, 0, len(last))
	for _, i := range last {
		keep = append(keep, i)
	}
	sort.Ints(keep)
	return keep
}

// appendKey renders a row's key so that values Postgres considers equal render equally in
// the common types (numeric 1.0 and 1.00, one instant in two time zones).
func appendKey(buf []byte, row []any, keyIdx []int) []byte {
	for _, i := range keyIdx {
		switch v := row[i].(type) {
		case nil:
			buf = append(buf, 'N')
		case string:
			buf = append(buf, 's')
			buf = strconv.AppendInt(buf, int64(len(v)), 10)
			buf = append(buf, ':')
			buf = append(buf, v...)
		case int64:
			buf = append(buf, 'i')
			buf = strconv.AppendInt(buf, v, 10)
		case int32:
			buf = append(buf, 'i')
			buf = strconv.AppendInt(buf, int64(v), 10)
		case int16:
			buf = append(buf, 'i')
			buf = strconv.AppendInt(buf, int64(v), 10)
		case int:
			buf = append(buf, 'i')
			buf = strconv.AppendInt(buf, int64(v), 10)
		case time.Time:
			buf = append(buf, 't')
			buf = strconv.AppendInt(buf, v.Unix(), 10)
			buf = append(buf, '.')
			buf = strconv.AppendInt(buf, int64(v.Nanosecond()), 10)
		case pgtype.Numeric:
			buf = append(buf, 'n')
			buf = append(buf, numericKey(v)...)
		default:
			buf = fmt.Appendf(buf, "%T:%v", v, v)
		}
		buf = append(buf, 0)
	}
	return buf
}

func numericKey(n pgtype.Numeric) string {
	switch {
	case !n.Valid:
		return "null"
	case n.NaN:
		return "nan"
	case n.InfinityModifier != pgtype.Finite:
		return fmt.Sprint(n.InfinityModifier)
	case n.Int == nil:
		return "0"
	}
	r := new(big.Rat).SetInt(n.Int)
	if n.Exp > 0 {
		r.Mul(r, new(big.Rat).SetInt(new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(n.Exp)), nil)))
	} else if n.Exp < 0 {
		r.Quo(r, new(big.Rat).SetInt(new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(-n.Exp)), nil)))
	}
	return r.RatString()
}
