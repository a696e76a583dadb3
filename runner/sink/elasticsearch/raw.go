package elasticsearch

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/sluice-dev/sluice/runner/batch"
)

// rawDecoder renders values in the source's wire encoding (batch.Raw) as JSON. The common
// types are rendered from their binary form directly, without a Go value in between; the
// others are decoded with the same codecs the reader would use, and rendered as decoded
// values are, so a raw batch and a decoded one give the same documents.
type rawDecoder struct {
	types *pgtype.Map
}

// postgresEpoch is the origin of Postgres' binary dates and timestamps.
var postgresEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// appendDoc renders raw row i as a JSON object, walking its tuple once.
func (d rawDecoder) appendDoc(buf []byte, raw *batch.Raw, i int, sh *shape) ([]byte, error) {
	t := raw.Tuple(i)
	off := 2
	for c := range sh.fields {
		buf = append(buf, sh.fields[c]...)
		l := int32(binary.BigEndian.Uint32(t[off:]))
		off += 4
		var v []byte
		if l >= 0 {
			v = t[off : off+int(l) : off+int(l)]
			off += int(l)
		}
		var err error
		if buf, err = d.appendValue(buf, v, sh.oids[c], sh.formats[c], sh.elems[c]); err != nil {
			return buf, fmt.Errorf("column %s: %w", sh.fields[c][1:len(sh.fields[c])-1], err)
		}
	}
	return append(buf, '}'), nil
}

// appendValue renders one raw value (nil is NULL) of type oid in wire format format.
func (d rawDecoder) appendValue(buf, src []byte, oid uint32, format int16, elem uint32) ([]byte, error) {
	if src == nil {
		return append(buf, "null"...), nil
	}
	if format == pgtype.TextFormatCode {
		// Text comes for arrays and for types without a binary codec (enums, types of
		// extensions): what pgx can decode is decoded, the rest is a string.
		if _, ok := d.types.TypeForOID(oid); !ok {
			return appendString(buf, src), nil
		}
		return d.decoded(buf, src, oid, format, elem)
	}
	switch oid {
	case pgtype.Int8OID:
		if len(src) == 8 {
			return strconv.AppendInt(buf, int64(binary.BigEndian.Uint64(src)), 10), nil
		}
	case pgtype.Int4OID:
		if len(src) == 4 {
			return strconv.AppendInt(buf, int64(int32(binary.BigEndian.Uint32(src))), 10), nil
		}
	case pgtype.Int2OID:
		if len(src) == 2 {
			return strconv.AppendInt(buf, int64(int16(binary.BigEndian.Uint16(src))), 10), nil
		}
	case pgtype.BoolOID:
		if len(src) == 1 {
			return strconv.AppendBool(buf, src[0] != 0), nil
		}
	case pgtype.Float8OID:
		if len(src) == 8 {
			return appendFloat(buf, math.Float64frombits(binary.BigEndian.Uint64(src)), 64), nil
		}
	case pgtype.Float4OID:
		if len(src) == 4 {
			return appendFloat(buf, float64(math.Float32frombits(binary.BigEndian.Uint32(src))), 32), nil
		}
	case pgtype.TextOID, pgtype.VarcharOID, pgtype.BPCharOID, pgtype.NameOID:
		return appendString(buf, src), nil
	case pgtype.NumericOID:
		return appendNumericBinary(buf, src, false)
	case pgtype.TimestamptzOID, pgtype.TimestampOID:
		if len(src) == 8 {
			return appendTimestampBinary(buf, int64(binary.BigEndian.Uint64(src)), oid), nil
		}
	case pgtype.DateOID:
		if len(src) == 4 {
			return appendDateBinary(buf, int32(binary.BigEndian.Uint32(src))), nil
		}
	case pgtype.UUIDOID:
		if len(src) == 16 {
			buf = append(buf, '"')
			buf = appendUUID(buf, [16]byte(src))
			return append(buf, '"'), nil
		}
	case pgtype.JSONOID:
		return appendRawJSON(buf, src)
	case pgtype.JSONBOID:
		if len(src) > 0 && src[0] == 1 {
			return appendRawJSON(buf, src[1:])
		}
	case pgtype.ByteaOID:
		buf = append(buf, '"')
		buf = base64.StdEncoding.AppendEncode(buf, src)
		return append(buf, '"'), nil
	}
	return d.decoded(buf, src, oid, format, elem)
}

// decoded renders a value through its pgx codec and appendValue.
func (d rawDecoder) decoded(buf, src []byte, oid uint32, format int16, elem uint32) ([]byte, error) {
	v, err := d.decode(src, oid, format)
	if err != nil {
		return buf, err
	}
	return appendValue(buf, v, oid, elem)
}

func (d rawDecoder) decode(src []byte, oid uint32, format int16) (any, error) {
	if src == nil {
		return nil, nil
	}
	t, ok := d.types.TypeForOID(oid)
	if !ok {
		if format == pgtype.TextFormatCode {
			return string(src), nil
		}
		return nil, fmt.Errorf("no codec for type %d", oid)
	}
	v, err := t.Codec.DecodeValue(d.types, oid, format, src)
	if err != nil {
		return nil, fmt.Errorf("decode %s: %w", t.Name, err)
	}
	return v, nil
}

// appendTimestampBinary renders microseconds since 2000-01-01 (the infinities are the
// extreme values).
func appendTimestampBinary(buf []byte, us int64, oid uint32) []byte {
	switch us {
	case math.MaxInt64:
		return append(buf, `"infinity"`...)
	case math.MinInt64:
		return append(buf, `"-infinity"`...)
	}
	sec, frac := us/1e6, us%1e6
	if frac < 0 {
		sec, frac = sec-1, frac+1e6
	}
	t := time.Unix(postgresEpoch.Unix()+sec, frac*1000).UTC()
	return appendTime(buf, t, oid)
}

// appendDateBinary renders days since 2000-01-01.
func appendDateBinary(buf []byte, days int32) []byte {
	switch days {
	case math.MaxInt32:
		return append(buf, `"infinity"`...)
	case math.MinInt32:
		return append(buf, `"-infinity"`...)
	}
	return appendTime(buf, postgresEpoch.AddDate(0, 0, int(days)), pgtype.DateOID)
}

// Signs of a binary numeric.
const (
	numericNeg    = 0x4000
	numericNaN    = 0xC000
	numericPosInf = 0xD000
	numericNegInf = 0xF000
)

var errNumeric = errors.New("malformed binary numeric")

// appendNumericBinary renders a binary numeric (base-10000 digits, weight, sign, display
// scale) as Postgres prints it; canonical drops trailing fractional zeros (see appendNumeric).
func appendNumericBinary(buf, src []byte, canonical bool) ([]byte, error) {
	if len(src) < 8 {
		return buf, errNumeric
	}
	ndigits := int(binary.BigEndian.Uint16(src))
	weight := int(int16(binary.BigEndian.Uint16(src[2:])))
	sign := binary.BigEndian.Uint16(src[4:])
	dscale := int(binary.BigEndian.Uint16(src[6:]))
	if len(src) != 8+2*ndigits {
		return buf, errNumeric
	}
	switch sign {
	case numericNaN:
		return append(buf, `"NaN"`...), nil
	case numericPosInf:
		return append(buf, `"Infinity"`...), nil
	case numericNegInf:
		return append(buf, `"-Infinity"`...), nil
	}
	digit := func(i int) int {
		if i < 0 || i >= ndigits {
			return 0
		}
		return int(binary.BigEndian.Uint16(src[8+2*i:]))
	}
	if sign == numericNeg && ndigits > 0 {
		buf = append(buf, '-')
	}
	if weight < 0 {
		buf = append(buf, '0')
	} else {
		buf = strconv.AppendInt(buf, int64(digit(0)), 10)
		for i := 1; i <= weight; i++ {
			buf = appendDigits4(buf, digit(i))
		}
	}
	if dscale > 0 {
		buf = append(buf, '.')
		start := len(buf)
		for i := weight + 1; len(buf)-start < dscale; i++ {
			buf = appendDigits4(buf, digit(i))
		}
		buf = buf[:start+dscale]
		if canonical {
			for buf[len(buf)-1] == '0' {
				buf = buf[:len(buf)-1]
			}
			if buf[len(buf)-1] == '.' {
				buf = buf[:len(buf)-1]
			}
		}
	}
	return buf, nil
}

func appendDigits4(buf []byte, d int) []byte {
	return append(buf, byte('0'+d/1000), byte('0'+d/100%10), byte('0'+d/10%10), byte('0'+d%10))
}

// appendID renders the _id of raw row i (see appendID).
func (d rawDecoder) appendID(buf []byte, raw *batch.Raw, i int, sh *shape) ([]byte, error) {
	if len(sh.keyIdx) == 1 {
		c := sh.keyIdx[0]
		buf, _, err := d.appendKeyText(buf, raw.Value(i, c), sh.oids[c], sh.formats[c])
		return buf, err
	}
	buf = append(buf, '[')
	for k, c := range sh.keyIdx {
		if k > 0 {
			buf = append(buf, ',')
		}
		start := len(buf)
		var bare bool
		var err error
		if buf, bare, err = d.appendKeyText(buf, raw.Value(i, c), sh.oids[c], sh.formats[c]); err != nil {
			return buf, err
		}
		if !bare {
			text := string(buf[start:])
			buf = appendString(buf[:start], text)
		}
	}
	return append(buf, ']'), nil
}

// appendKeyText renders a raw key value's text form (see appendKeyText) and whether it is
// written bare in a composite _id.
func (d rawDecoder) appendKeyText(buf, src []byte, oid uint32, format int16) ([]byte, bool, error) {
	if src == nil {
		return buf, false, errNullKey
	}
	if format == pgtype.BinaryFormatCode {
		switch oid {
		case pgtype.Int8OID, pgtype.Int4OID, pgtype.Int2OID:
			out, err := d.appendValue(buf, src, oid, format, 0)
			return out, true, err
		case pgtype.TextOID, pgtype.VarcharOID, pgtype.BPCharOID, pgtype.NameOID:
			return append(buf, src...), false, nil
		case pgtype.UUIDOID:
			if len(src) == 16 {
				return appendUUID(buf, [16]byte(src)), false, nil
			}
		case pgtype.NumericOID:
			start := len(buf)
			out, err := appendNumericBinary(buf, src, true)
			if err == nil && out[start] == '"' {
				// NaN or an infinity: a string, without its quotes.
				return append(out[:start], out[start+1:len(out)-1]...), false, nil
			}
			return out, true, err
		}
	}
	v, err := d.decode(src, oid, format)
	if err != nil {
		return buf, false, err
	}
	out, err := appendKeyText(buf, v, oid)
	return out, bareInArray(v), err
}
