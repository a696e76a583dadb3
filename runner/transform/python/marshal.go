package python

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/big"
	"unicode/utf8"
)

// The subset of Python's marshal format (version 4, stable since Python 3.4) that the worker
// exchanges. marshal is what Python itself uses for .pyc files: its C reader and writer are
// several times faster than the json module's on the same rows (see the package
// documentation), and its binary layout is simple to read and write from Go.
const (
	tNull           = '0' // ends a dict
	tNone           = 'N'
	tFalse          = 'F'
	tTrue           = 'T'
	tStopIter       = 'S'
	tEllipsis       = '.'
	tInt            = 'i' // int32
	tLong           = 'l' // int32 digit count (negative: negative number), 15-bit digits
	tBinaryFloat    = 'g'
	tBinaryComplex  = 'y'
	tString         = 's' // bytes
	tInterned       = 't'
	tRef            = 'r'
	tTuple          = '('
	tSmallTuple     = ')'
	tList           = '['
	tDict           = '{'
	tCode           = 'c'
	tUnicode        = 'u'
	tSet            = '<'
	tFrozenSet      = '>'
	tASCII          = 'a'
	tASCIIInterned  = 'A'
	tShortASCII     = 'z'
	tShortASCIIIntd = 'Z'
	flagRef         = 0x80
)

// encoder appends marshal data to buf.
type encoder struct {
	buf []byte
}

func (e *encoder) none() { e.buf = append(e.buf, tNone) }

func (e *encoder) bool(b bool) {
	if b {
		e.buf = append(e.buf, tTrue)
	} else {
		e.buf = append(e.buf, tFalse)
	}
}

func (e *encoder) int(v int64) {
	if v >= math.MinInt32 && v <= math.MaxInt32 {
		e.buf = append(e.buf, tInt)
		e.buf = binary.LittleEndian.AppendUint32(e.buf, uint32(int32(v)))
		return
	}
	// Larger integers are Python longs: base 2**15 digits, least significant first.
	neg := v < 0
	u := uint64(v)
	if neg {
		u = -u
	}
	var digits [5]uint16
	n := 0
	for ; u > 0; n++ {
		digits[n] = uint16(u & 0x7fff)
		u >>= 15
	}
	e.long(neg, digits[:n])
}

func (e *encoder) bigInt(v *big.Int) {
	if v.IsInt64() {
		e.int(v.Int64())
		return
	}
	abs := new(big.Int).Abs(v)
	mask := big.NewInt(0x7fff)
	var digits []uint16
	for abs.Sign() > 0 {
		digits = append(digits, uint16(new(big.Int).And(abs, mask).Uint64()))
		abs.Rsh(abs, 15)
	}
	e.long(v.Sign() < 0, digits)
}

func (e *encoder) long(neg bool, digits []uint16) {
	n := int32(len(digits))
	if neg {
		n = -n
	}
	e.buf = append(e.buf, tLong)
	e.buf = binary.LittleEndian.AppendUint32(e.buf, uint32(n))
	for _, d := range digits {
		e.buf = binary.LittleEndian.AppendUint16(e.buf, d)
	}
}

func (e *encoder) float(f float64) {
	e.buf = append(e.buf, tBinaryFloat)
	e.buf = binary.LittleEndian.AppendUint64(e.buf, math.Float64bits(f))
}

// str writes a Python str. ASCII strings use the ASCII types, which Python builds without
// decoding UTF-8. A string that is not valid UTF-8 cannot be a Python str: errInvalidUTF8.
func (e *encoder) str(s string) error {
	ascii := true
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	switch {
	case ascii && len(s) < 256:
		e.buf = append(e.buf, tShortASCII, byte(len(s)))
	case ascii:
		e.buf = append(e.buf, tASCII)
		e.buf = binary.LittleEndian.AppendUint32(e.buf, uint32(len(s)))
	case !utf8.ValidString(s):
		return errInvalidUTF8
	default:
		e.buf = append(e.buf, tUnicode)
		e.buf = binary.LittleEndian.AppendUint32(e.buf, uint32(len(s)))
	}
	e.buf = append(e.buf, s...)
	return nil
}

// key writes a dict key as an interned str that later rows refer to by ref (see
// encodeBatch): Python then shares one key object between all rows, and a task's literal
// "email" finds it by identity.
func (e *encoder) key(s string) error {
	if len(s) < 256 && isASCII(s) {
		e.buf = append(e.buf, tShortASCIIIntd|flagRef, byte(len(s)))
	} else {
		if !utf8.ValidString(s) {
			return errInvalidUTF8
		}
		e.buf = append(e.buf, tInterned|flagRef)
		e.buf = binary.LittleEndian.AppendUint32(e.buf, uint32(len(s)))
	}
	e.buf = append(e.buf, s...)
	return nil
}

func (e *encoder) ref(i int) {
	e.buf = append(e.buf, tRef)
	e.buf = binary.LittleEndian.AppendUint32(e.buf, uint32(i))
}

func (e *encoder) bytes(b []byte) {
	e.buf = append(e.buf, tString)
	e.buf = binary.LittleEndian.AppendUint32(e.buf, uint32(len(b)))
	e.buf = append(e.buf, b...)
}

func (e *encoder) list(n int) {
	e.buf = append(e.buf, tList)
	e.buf = binary.LittleEndian.AppendUint32(e.buf, uint32(n))
}

func (e *encoder) tuple(n int) {
	if n < 256 {
		e.buf = append(e.buf, tSmallTuple, byte(n))
		return
	}
	e.buf = append(e.buf, tTuple)
	e.buf = binary.LittleEndian.AppendUint32(e.buf, uint32(n))
}

func (e *encoder) dict()    { e.buf = append(e.buf, tDict) }
func (e *encoder) endDict() { e.buf = append(e.buf, tNull) }

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

var errInvalidUTF8 = errors.New("text is not valid UTF-8")

// reader reads marshal data. It only splits the bytes into tokens; what the tokens become is
// up to the caller (decode.go).
type reader struct {
	data []byte
	off  int
}

var errTruncated = errors.New("python worker: truncated marshal data")

func (r *reader) byte() (byte, error) {
	if r.off >= len(r.data) {
		return 0, errTruncated
	}
	b := r.data[r.off]
	r.off++
	return b, nil
}

func (r *reader) uint32() (uint32, error) {
	if r.off+4 > len(r.data) {
		return 0, errTruncated
	}
	v := binary.LittleEndian.Uint32(r.data[r.off:])
	r.off += 4
	return v, nil
}

func (r *reader) take(n int) ([]byte, error) {
	if n < 0 || r.off+n > len(r.data) {
		return nil, errTruncated
	}
	b := r.data[r.off : r.off+n]
	r.off += n
	return b, nil
}

// size reads a 32-bit length.
func (r *reader) size() (int, error) {
	n, err := r.uint32()
	if err != nil {
		return 0, err
	}
	if int64(n) > int64(len(r.data)) {
		return 0, fmt.Errorf("python worker: marshal length %d exceeds the frame", n)
	}
	return int(n), nil
}

// long reads the body of a tLong: an int64 when it fits, else a *big.Int.
func (r *reader) long() (any, error) {
	n32, err := r.uint32()
	if err != nil {
		return nil, err
	}
	n := int32(n32)
	neg := n < 0
	if neg {
		n = -n
	}
	raw, err := r.take(2 * int(n))
	if err != nil {
		return nil, err
	}
	if n <= 4 {
		var u uint64
		for i := int(n) - 1; i >= 0; i-- {
			u = u<<15 | uint64(binary.LittleEndian.Uint16(raw[2*i:]))
		}
		if !neg {
			return int64(u), nil
		}
		return -int64(u), nil
	}
	v := new(big.Int)
	for i := int(n) - 1; i >= 0; i-- {
		v.Lsh(v, 15)
		v.Or(v, big.NewInt(int64(binary.LittleEndian.Uint16(raw[2*i:]))))
	}
	if neg {
		v.Neg(v)
	}
	if v.IsInt64() {
		return v.Int64(), nil
	}
	return v, nil
}
