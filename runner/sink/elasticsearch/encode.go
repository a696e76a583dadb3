package elasticsearch

import (
	"bytes"
	"database/sql/driver"
	"encoding"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgtype"
)

// Layouts of the time types. Timestamps with a time zone are written in UTC; timestamps
// without one keep their wall time and no offset (Elasticsearch reads a zone-less date as UTC).
// Trailing zeros of the fraction are dropped, as in time.RFC3339Nano.
const (
	layoutTimestamptz = time.RFC3339Nano
	layoutTimestamp   = "2006-01-02T15:04:05.999999999"
	layoutDate        = time.DateOnly
)

// appendValue appends v as JSON. oid is the Postgres type of the column when known (0 when a
// transform produced the value): it tells a date or a timestamp without time zone from an
// instant, which are all time.Time once decoded. elem is the element type of an array column.
//
// The hot types (integers, strings, numerics, times, JSON) are handled without reflection;
// the rare ones fall back to their text form.
func appendValue(buf []byte, v any, oid, elem uint32) ([]byte, error) {
	switch v := v.(type) {
	case nil:
		return append(buf, "null"...), nil
	case string:
		return appendString(buf, v), nil
	case int64:
		return strconv.AppendInt(buf, v, 10), nil
	case int32:
		return strconv.AppendInt(buf, int64(v), 10), nil
	case int16:
		return strconv.AppendInt(buf, int64(v), 10), nil
	case int8:
		return strconv.AppendInt(buf, int64(v), 10), nil
	case int:
		return strconv.AppendInt(buf, int64(v), 10), nil
	case uint64:
		return strconv.AppendUint(buf, v, 10), nil
	case uint32:
		return strconv.AppendUint(buf, uint64(v), 10), nil
	case uint16:
		return strconv.AppendUint(buf, uint64(v), 10), nil
	case uint8:
		return strconv.AppendUint(buf, uint64(v), 10), nil
	case uint:
		return strconv.AppendUint(buf, uint64(v), 10), nil
	case bool:
		return strconv.AppendBool(buf, v), nil
	case float64:
		return appendFloat(buf, v, 64), nil
	case float32:
		return appendFloat(buf, float64(v), 32), nil
	case pgtype.Numeric:
		return appendNumeric(buf, v, false), nil
	case time.Time:
		return appendTime(buf, v, oid), nil
	case pgtype.Date:
		return appendInfinite(buf, v.Valid, v.InfinityModifier, v.Time, pgtype.DateOID), nil
	case pgtype.Timestamp:
		return appendInfinite(buf, v.Valid, v.InfinityModifier, v.Time, pgtype.TimestampOID), nil
	case pgtype.Timestamptz:
		return appendInfinite(buf, v.Valid, v.InfinityModifier, v.Time, pgtype.TimestamptzOID), nil
	case json.RawMessage:
		return appendRawJSON(buf, v)
	case json.Number:
		if !json.Valid([]byte(v)) {
			// The number is row data: its length, not its text, goes into the error.
			return buf, fmt.Errorf("invalid JSON number (%d bytes)", len(v))
		}
		return append(buf, v...), nil
	case [16]byte:
		buf = append(buf, '"')
		buf = appendUUID(buf, v)
		return append(buf, '"'), nil
	case []byte:
		buf = append(buf, '"')
		buf = base64.StdEncoding.AppendEncode(buf, v)
		return append(buf, '"'), nil
	case []any:
		buf = append(buf, '[')
		for i, e := range v {
			if i > 0 {
				buf = append(buf, ',')
			}
			var err error
			if buf, err = appendValue(buf, e, elem, 0); err != nil {
				return buf, err
			}
		}
		return append(buf, ']'), nil
	case map[string]any:
		buf = append(buf, '{')
		for i, k := range slices.Sorted(maps.Keys(v)) {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = appendString(buf, k)
			buf = append(buf, ':')
			var err error
			if buf, err = appendValue(buf, v[k], 0, 0); err != nil {
				return buf, err
			}
		}
		return append(buf, '}'), nil
	case netip.Prefix:
		// inet: a single address is written without its /32 or /128, as Elasticsearch's ip
		// type expects.
		if v.IsSingleIP() {
			return appendString(buf, v.Addr().String()), nil
		}
		return appendString(buf, v.String()), nil
	}
	return appendOther(buf, v)
}

// appendOther writes the rare types: Postgres types pgx decodes into its own structs
// (intervals, geometric types, ranges, ...) as their Postgres text form, anything else as
// encoding/json renders it.
func appendOther(buf []byte, v any) ([]byte, error) {
	switch v := v.(type) {
	case driver.Valuer:
		dv, err := v.Value()
		if err != nil {
			return buf, fmt.Errorf("render %T: %w", v, err)
		}
		if _, same := dv.(driver.Valuer); same {
			return buf, fmt.Errorf("render %T: its value is a %T", v, dv)
		}
		return appendValue(buf, dv, 0, 0)
	case encoding.TextMarshaler:
		text, err := v.MarshalText()
		if err != nil {
			return buf, fmt.Errorf("render %T: %w", v, err)
		}
		return appendString(buf, string(text)), nil
	case fmt.Stringer:
		return appendString(buf, v.String()), nil
	}
	js, err := json.Marshal(v)
	if err != nil {
		return buf, fmt.Errorf("render %T: %w", v, err)
	}
	return append(buf, js...), nil
}

// appendRawJSON writes a json or jsonb value as the JSON it is. A bulk request is one
// document per line, so a value with line breaks (json keeps its input's layout) is compacted.
func appendRawJSON(buf []byte, raw []byte) ([]byte, error) {
	if len(raw) == 0 {
		return append(buf, "null"...), nil
	}
	if bytes.IndexByte(raw, '\n') < 0 && bytes.IndexByte(raw, '\r') < 0 {
		return append(buf, raw...), nil
	}
	out := bytes.NewBuffer(buf)
	if err := json.Compact(out, raw); err != nil {
		return buf, fmt.Errorf("invalid JSON value: %w", err)
	}
	return out.Bytes(), nil
}

// appendFloat writes a float as encoding/json does (shortest representation, exponent only
// for very large or small magnitudes). NaN and the infinities, which JSON lacks, become the
// strings Postgres spells them with.
func appendFloat(buf []byte, f float64, bits int) []byte {
	switch {
	case math.IsNaN(f):
		return append(buf, `"NaN"`...)
	case math.IsInf(f, 1):
		return append(buf, `"Infinity"`...)
	case math.IsInf(f, -1):
		return append(buf, `"-Infinity"`...)
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 {
		if bits == 64 && (abs < 1e-6 || abs >= 1e21) || bits == 32 && (float32(abs) < 1e-6 || float32(abs) >= 1e21) {
			format = 'e'
		}
	}
	buf = strconv.AppendFloat(buf, f, format, -1, bits)
	if format == 'e' {
		// 1e-07 becomes 1e-7, as encoding/json writes it.
		if n := len(buf); n >= 4 && buf[n-4] == 'e' && buf[n-3] == '-' && buf[n-2] == '0' {
			buf[n-2] = buf[n-1]
			buf = buf[:n-1]
		}
	}
	return buf
}

// appendNumeric writes a finite numeric as a JSON number with exactly the digits Postgres
// prints (2.50 stays 2.50: the scale is kept). canonical drops trailing fractional zeros
// instead, so that equal values give one document _id. NaN and the infinities are written as
// the strings Postgres spells them with.
func appendNumeric(buf []byte, n pgtype.Numeric, canonical bool) []byte {
	switch {
	case !n.Valid:
		return append(buf, "null"...)
	case n.NaN:
		return append(buf, `"NaN"`...)
	case n.InfinityModifier == pgtype.Infinity:
		return append(buf, `"Infinity"`...)
	case n.InfinityModifier == pgtype.NegativeInfinity:
		return append(buf, `"-Infinity"`...)
	case n.Int == nil || n.Int.Sign() == 0:
		if canonical || n.Exp >= 0 {
			return append(buf, '0')
		}
		buf = append(buf, "0."...)
		for range -n.Exp {
			buf = append(buf, '0')
		}
		return buf
	}
	start := len(buf)
	if n.Int.IsInt64() {
		buf = strconv.AppendInt(buf, n.Int.Int64(), 10)
	} else {
		buf = n.Int.Append(buf, 10)
	}
	if buf[start] == '-' {
		start++
	}
	return placePoint(buf, start, int(n.Exp), canonical)
}

// placePoint turns the digits in buf[start:] times 10^exp into decimal notation in place.
func placePoint(buf []byte, start, exp int, canonical bool) []byte {
	if exp >= 0 {
		for range exp {
			buf = append(buf, '0')
		}
		return buf
	}
	frac := -exp
	digits := len(buf) - start
	if digits <= frac {
		// 0.00ddd: shift the digits right to make room for "0." and leading zeros.
		pad := frac - digits + 2
		buf = append(buf, make([]byte, pad)...)
		copy(buf[start+pad:], buf[start:start+digits])
		buf[start] = '0'
		buf[start+1] = '.'
		for i := start + 2; i < start+pad; i++ {
			buf[i] = '0'
		}
	} else {
		buf = append(buf, 0)
		point := len(buf) - 1 - frac
		copy(buf[point+1:], buf[point:len(buf)-1])
		buf[point] = '.'
	}
	if canonical {
		for buf[len(buf)-1] == '0' {
			buf = buf[:len(buf)-1]
		}
		if buf[len(buf)-1] == '.' {
			buf = buf[:len(buf)-1]
		}
	}
	return buf
}

// appendTime writes a time as a JSON string in the layout of its Postgres type.
func appendTime(buf []byte, t time.Time, oid uint32) []byte {
	buf = append(buf, '"')
	buf = appendTimeText(buf, t, oid)
	return append(buf, '"')
}

func appendTimeText(buf []byte, t time.Time, oid uint32) []byte {
	switch oid {
	case pgtype.DateOID:
		return t.AppendFormat(buf, layoutDate)
	case pgtype.TimestampOID:
		return t.AppendFormat(buf, layoutTimestamp)
	}
	return t.UTC().AppendFormat(buf, layoutTimestamptz)
}

// appendInfinite writes a date or timestamp that may be infinite: the infinities become the
// strings Postgres prints.
func appendInfinite(buf []byte, valid bool, mod pgtype.InfinityModifier, t time.Time, oid uint32) []byte {
	switch {
	case !valid:
		return append(buf, "null"...)
	case mod == pgtype.Infinity:
		return append(buf, `"infinity"`...)
	case mod == pgtype.NegativeInfinity:
		return append(buf, `"-infinity"`...)
	}
	return appendTime(buf, t, oid)
}

const hexDigits = "0123456789abcdef"

// appendUUID writes the canonical 8-4-4-4-12 form.
func appendUUID(buf []byte, u [16]byte) []byte {
	for i, b := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			buf = append(buf, '-')
		}
		buf = append(buf, hexDigits[b>>4], hexDigits[b&0x0f])
	}
	return buf
}

// safe marks the ASCII bytes that stand for themselves inside a JSON string.
var safe = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// appendString writes s as a JSON string. Invalid UTF-8 becomes U+FFFD (a bulk request must
// be valid UTF-8); U+2028 and U+2029 are escaped, as encoding/json does.
func appendString[S string | []byte](buf []byte, s S) []byte {
	buf = append(buf, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if safe[c] {
				i++
				continue
			}
			buf = append(buf, s[start:i]...)
			switch c {
			case '"', '\\':
				buf = append(buf, '\\', c)
			case '\n':
				buf = append(buf, '\\', 'n')
			case '\r':
				buf = append(buf, '\\', 'r')
			case '\t':
				buf = append(buf, '\\', 't')
			default:
				buf = append(buf, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0x0f])
			}
			i++
			start = i
			continue
		}
		r, size := decodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			buf = append(buf, s[start:i]...)
			buf = append(buf, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			buf = append(buf, s[start:i]...)
			buf = append(buf, '\\', 'u', '2', '0', '2', hexDigits[r&0x0f])
			i += size
			start = i
			continue
		}
		i += size
	}
	buf = append(buf, s[start:]...)
	return append(buf, '"')
}

func decodeRune[S string | []byte](s S) (rune, int) {
	switch s := any(s).(type) {
	case string:
		return utf8.DecodeRuneInString(s)
	case []byte:
		return utf8.DecodeRune(s)
	}
	return utf8.RuneError, 1
}

// maxIDBytes is Elasticsearch's limit on the length of a document _id.
const maxIDBytes = 512

// errNullKey is returned for a NULL key value: a document needs an _id.
var errNullKey = errors.New("the key is NULL")

// appendID appends the document _id of a row's key values (see the package documentation):
// the text form of a single key, or a JSON array of the values of a composite key.
func appendID(buf []byte, vals []any, oids []uint32) ([]byte, error) {
	if len(vals) == 1 {
		return appendKeyText(buf, vals[0], oids[0])
	}
	buf = append(buf, '[')
	for i, v := range vals {
		if i > 0 {
			buf = append(buf, ',')
		}
		start := len(buf)
		var err error
		if buf, err = appendKeyText(buf, v, oids[i]); err != nil {
			return buf, err
		}
		if !bareInArray(v) {
			// The text form of a string-like value goes into the array as a JSON string.
			text := string(buf[start:])
			buf = appendString(buf[:start], text)
		}
	}
	return append(buf, ']'), nil
}

// bareInArray reports whether a key value's text form is a JSON number or boolean, written
// bare in a composite _id.
func bareInArray(v any) bool {
	switch v := v.(type) {
	case int64, int32, int16, int8, int, uint64, uint32, uint16, uint8, uint, bool:
		return true
	case float64:
		return !math.IsNaN(v) && !math.IsInf(v, 0)
	case float32:
		return !math.IsNaN(float64(v)) && !math.IsInf(float64(v), 0)
	case pgtype.Numeric:
		return v.Valid && !v.NaN && v.InfinityModifier == pgtype.Finite
	}
	return false
}

// appendKeyText appends the text form of one key value: a string as it is, a number in
// decimal (a numeric without trailing fractional zeros, so that 1.50 and 1.5 are one key), a
// uuid in its canonical form, a time as in documents, anything else as its JSON text.
func appendKeyText(buf []byte, v any, oid uint32) ([]byte, error) {
	switch v := v.(type) {
	case nil:
		return buf, errNullKey
	case string:
		return append(buf, v...), nil
	case pgtype.Numeric:
		if !v.Valid {
			return buf, errNullKey
		}
		if v.NaN || v.InfinityModifier != pgtype.Finite {
			// Without the quotes of the document form.
			s := appendNumeric(nil, v, true)
			return append(buf, s[1:len(s)-1]...), nil
		}
		return appendNumeric(buf, v, true), nil
	case float64:
		if math.IsNaN(v) || math.IsInf(v, 0) {
			s := appendFloat(nil, v, 64)
			return append(buf, s[1:len(s)-1]...), nil
		}
		return appendFloat(buf, v, 64), nil
	case float32:
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			s := appendFloat(nil, float64(v), 32)
			return append(buf, s[1:len(s)-1]...), nil
		}
		return appendFloat(buf, float64(v), 32), nil
	case time.Time:
		return appendTimeText(buf, v, oid), nil
	case [16]byte:
		return appendUUID(buf, v), nil
	case []byte:
		return base64.StdEncoding.AppendEncode(buf, v), nil
	}
	start := len(buf)
	buf, err := appendValue(buf, v, oid, 0)
	if err != nil {
		return buf, err
	}
	if text := buf[start:]; len(text) >= 2 && text[0] == '"' {
		// A JSON string (an infinite date, an enum rendered by its Valuer, ...): its content.
		var s string
		if err := json.Unmarshal(text, &s); err != nil {
			return buf, err
		}
		return append(buf[:start], s...), nil
	}
	if string(buf[start:]) == "null" {
		return buf[:start], errNullKey
	}
	return buf, nil
}
