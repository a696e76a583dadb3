package python

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/sluice-dev/sluice/runner/batch"
)

// Conversions the worker applies to a column after reading a batch (worker.py's kinds):
// marshal has no decimal and no JSON, so those values travel as text.
const (
	convNumeric      = 1
	convJSON         = 2
	convNumericArray = 3
	convJSONArray    = 4
)

// timeStyle is how a column's time.Time values are rendered for Python.
type timeStyle uint8

const (
	// timeOffset: RFC 3339 with the value's own offset (a column of unknown type).
	timeOffset timeStyle = iota
	// timeUTC: timestamptz, RFC 3339 in UTC ("2024-01-01T00:00:00Z").
	timeUTC
	// timeWall: timestamp without time zone, no offset ("2024-01-01T00:00:00").
	timeWall
	// timeDate: date ("2024-01-01").
	timeDate
)

// Layouts of the time styles: fractional seconds only when not zero, to the microsecond
// (Postgres' precision).
const (
	layoutUTC    = "2006-01-02T15:04:05.999999Z07:00"
	layoutWall   = "2006-01-02T15:04:05.999999"
	layoutDate   = "2006-01-02"
	layoutOffset = "2006-01-02T15:04:05.999999999Z07:00"
)

// inColumn is what the encoder knows of an input column.
type inColumn struct {
	name  string
	oid   uint32
	style timeStyle
	conv  byte
}

func styleOf(oid uint32) timeStyle {
	switch oid {
	case pgtype.TimestamptzOID, pgtype.TimestamptzArrayOID:
		return timeUTC
	case pgtype.TimestampOID, pgtype.TimestampArrayOID:
		return timeWall
	case pgtype.DateOID, pgtype.DateArrayOID:
		return timeDate
	}
	return timeOffset
}

// textMap renders values of types marshal cannot carry and this file does not know (ranges,
// intervals, geometric types...) in their Postgres text format, which Python receives as str.
var textMap = pgtype.NewMap()

// encodeBatch writes a batch frame into e: (rows, conversions), each row a dict from column
// name to value. The first row writes every name as an interned string flagged for
// reference; later rows refer to it, so a name is sent once per batch and Python shares one
// key object between all rows. rowErr reports a value that cannot be sent.
func encodeBatch(e *encoder, in *batch.Batch, cols []inColumn, scratch []byte) ([]byte, *rowError) {
	e.tuple(2)
	e.list(len(in.Rows))
	for i, row := range in.Rows {
		e.dict()
		for c, v := range row {
			if i == 0 {
				if err := e.key(cols[c].name); err != nil {
					return scratch, &rowError{row: i, col: cols[c].name, err: err}
				}
			} else {
				e.ref(c)
			}
			var err error
			if scratch, err = encodeValue(e, v, &cols[c], false, scratch); err != nil {
				return scratch, &rowError{row: i, col: cols[c].name, err: err}
			}
		}
		e.endDict()
	}
	n := 0
	for _, c := range cols {
		if c.conv != 0 {
			n++
		}
	}
	e.list(n)
	for _, c := range cols {
		if c.conv != 0 {
			e.tuple(2)
			_ = e.str(c.name) // checked as a key
			e.int(int64(c.conv))
		}
	}
	return scratch, nil
}

// rowError is a value of input row row that cannot be sent to Python.
type rowError struct {
	row int
	col string
	err error
}

// encodeValue writes one value as the package documentation's table says.
func encodeValue(e *encoder, v any, col *inColumn, inArray bool, scratch []byte) ([]byte, error) {
	switch v := v.(type) {
	case nil:
		e.none()
	case string:
		return scratch, e.str(v)
	case int64:
		e.int(v)
	case int32:
		e.int(int64(v))
	case int16:
		e.int(int64(v))
	case int8:
		e.int(int64(v))
	case int:
		e.int(int64(v))
	case uint32:
		e.int(int64(v))
	case uint64:
		if v > math.MaxInt64 {
			e.bigInt(new(big.Int).SetUint64(v))
		} else {
			e.int(int64(v))
		}
	case float64:
		e.float(v)
	case float32:
		e.float(float64(v))
	case bool:
		e.bool(v)
	case time.Time:
		scratch = appendTime(scratch[:0], v, col.style)
		return scratch, e.str(string(scratch))
	case pgtype.Numeric:
		if !v.Valid {
			e.none()
			return scratch, nil
		}
		scratch = appendNumeric(scratch[:0], v)
		col.conv = pick(inArray, convNumeric, convNumericArray)
		return scratch, e.str(string(scratch))
	case json.RawMessage:
		if v == nil {
			e.none()
			return scratch, nil
		}
		col.conv = pick(inArray, convJSON, convJSONArray)
		return scratch, e.str(string(v))
	case []byte:
		e.bytes(v)
	case []any:
		e.list(len(v))
		for _, item := range v {
			var err error
			if scratch, err = encodeValue(e, item, col, true, scratch); err != nil {
				return scratch, err
			}
		}
	case [16]byte:
		return scratch, e.str(uuidString(v))
	case pgtype.Timestamptz:
		return scratch, encodeInfinity(e, v.Valid, v.InfinityModifier, v.Time, col, scratch)
	case pgtype.Timestamp:
		return scratch, encodeInfinity(e, v.Valid, v.InfinityModifier, v.Time, col, scratch)
	case pgtype.Date:
		return scratch, encodeInfinity(e, v.Valid, v.InfinityModifier, v.Time, col, scratch)
	case pgtype.Time:
		if !v.Valid {
			e.none()
			return scratch, nil
		}
		us := v.Microseconds
		t := time.Date(2000, 1, 1, int(us/3_600_000_000), int(us/60_000_000%60), int(us/1_000_000%60), int(us%1_000_000)*1000, time.UTC)
		scratch = t.AppendFormat(scratch[:0], "15:04:05.999999")
		return scratch, e.str(string(scratch))
	case fmt.Stringer:
		return scratch, e.str(v.String())
	default:
		text, err := textMap.Encode(col.oid, pgtype.TextFormatCode, v, scratch[:0])
		if err != nil || text == nil {
			return scratch, fmt.Errorf("a value of Go type %T cannot be passed to Python", v)
		}
		return text, e.str(string(text))
	}
	return scratch, nil
}

func pick(inArray bool, scalar, array byte) byte {
	if inArray {
		return array
	}
	return scalar
}

func encodeInfinity(e *encoder, valid bool, mod pgtype.InfinityModifier, t time.Time, col *inColumn, scratch []byte) error {
	switch {
	case !valid:
		e.none()
		return nil
	case mod == pgtype.Infinity:
		return e.str("infinity")
	case mod == pgtype.NegativeInfinity:
		return e.str("-infinity")
	}
	return e.str(string(appendTime(scratch[:0], t, col.style)))
}

// appendTime renders t in a time style. The time package formats RFC 3339 layouts on a fast
// path of their own, several times quicker than other layouts: the styles are derived from it
// (a database time has microseconds at most, so RFC3339Nano writes what layoutUTC would).
func appendTime(buf []byte, t time.Time, style timeStyle) []byte {
	if y := t.Year(); y < 1 || y > 9999 {
		return appendTimeLayout(buf, t, style)
	}
	switch style {
	case timeUTC:
		return t.UTC().AppendFormat(buf, time.RFC3339Nano)
	case timeWall, timeDate:
		if t.Location() != time.UTC {
			return appendTimeLayout(buf, t, style)
		}
		start := len(buf)
		buf = t.AppendFormat(buf, time.RFC3339Nano)
		if style == timeDate {
			return buf[:start+len(layoutDate)]
		}
		return buf[:len(buf)-1] // the Z
	}
	return t.AppendFormat(buf, layoutOffset)
}

func appendTimeLayout(buf []byte, t time.Time, style timeStyle) []byte {
	switch style {
	case timeUTC:
		return t.UTC().AppendFormat(buf, layoutUTC)
	case timeWall:
		return t.AppendFormat(buf, layoutWall)
	case timeDate:
		return t.AppendFormat(buf, layoutDate)
	}
	return t.AppendFormat(buf, layoutOffset)
}

// appendNumeric writes a numeric in Postgres' text form, keeping its scale (12.50 stays
// 12.50: decimal.Decimal keeps it too).
func appendNumeric(buf []byte, n pgtype.Numeric) []byte {
	switch {
	case n.NaN:
		return append(buf, "NaN"...)
	case n.InfinityModifier == pgtype.Infinity:
		return append(buf, "Infinity"...)
	case n.InfinityModifier == pgtype.NegativeInfinity:
		return append(buf, "-Infinity"...)
	case n.Int == nil:
		return append(buf, '0')
	}
	start := len(buf)
	buf = n.Int.Append(buf, 10)
	if n.Exp >= 0 {
		if n.Int.Sign() == 0 {
			return buf
		}
		for range n.Exp {
			buf = append(buf, '0')
		}
		return buf
	}
	digits := start
	if buf[start] == '-' {
		digits++
	}
	scale := int(-n.Exp)
	// Pad with zeros so that there is a digit before the point: 5e-3 is 0.005.
	if have := len(buf) - digits; have <= scale {
		pad := scale - have + 1
		buf = append(buf, make([]byte, pad)...)
		copy(buf[digits+pad:], buf[digits:len(buf)-pad])
		for i := range pad {
			buf[digits+i] = '0'
		}
	}
	point := len(buf) - scale
	buf = append(buf, 0)
	copy(buf[point+1:], buf[point:])
	buf[point] = '.'
	return buf
}

func uuidString(u [16]byte) string {
	var b [36]byte
	hex.Encode(b[0:8], u[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], u[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], u[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], u[8:10])
	b[23] = '-'
	hex.Encode(b[24:], u[10:])
	return string(b[:])
}

// keyText renders a key value for an error message.
func keyText(v any, col *inColumn) string {
	switch v := v.(type) {
	case nil:
		return "NULL"
	case string:
		return strconv.Quote(v)
	case time.Time:
		return string(appendTime(nil, v, col.style))
	case pgtype.Numeric:
		return string(appendNumeric(nil, v))
	case []byte:
		return `\x` + hex.EncodeToString(v)
	case [16]byte:
		return uuidString(v)
	}
	return fmt.Sprint(v)
}
