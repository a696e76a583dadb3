package python

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"unicode/utf8"
)

// Values as the decoder first reads them from marshal data (the "tree" form): nil, bool,
// int64, *big.Int, float64, string, []byte, []any (a list or a tuple), *pyDict, decimalText,
// and the markers below for Python values the runner cannot write.
type (
	// pyDict is a Python dict, its keys in insertion order.
	pyDict struct {
		keys []string
		vals []any
	}
	// decimalText is a decimal.Decimal as the worker sends it: (Ellipsis, "12.50").
	decimalText string
	// unsupported is a Python value the runner cannot write: a set, a complex number...
	unsupported string
	// rowRef is a row of the output read earlier, referred to again (a task that returns
	// the same dict twice).
	rowRef int
	// pending is a ref slot whose object is still being read: a value containing itself.
	pending struct{}
	// ellipsis is Python's Ellipsis, meaningful only as the first item of a decimal.
	ellipsis struct{}
)

// decoder turns the worker's marshal data into Go values. refs are the objects marshal
// flagged for reference, in the order they appeared; colOfRef caches the column of a ref
// that is a column name, so that the keys of every row after the first cost no lookup.
type decoder struct {
	r        reader
	refs     []any
	colOfRef []int32
}

func (d *decoder) reset(data []byte) {
	d.r = reader{data: data}
	clear(d.refs)
	d.refs = d.refs[:0]
	d.colOfRef = d.colOfRef[:0]
}

// value reads one object in tree form.
func (d *decoder) value() (any, error) {
	code, err := d.r.byte()
	if err != nil {
		return nil, err
	}
	if code&flagRef == 0 {
		return d.body(code)
	}
	idx := len(d.refs)
	d.refs = append(d.refs, pending{})
	v, err := d.body(code &^ flagRef)
	d.refs[idx] = v
	return v, err
}

func (d *decoder) body(code byte) (any, error) {
	r := &d.r
	switch code {
	case tNone:
		return nil, nil
	case tTrue:
		return true, nil
	case tFalse:
		return false, nil
	case tInt:
		v, err := r.uint32()
		return int64(int32(v)), err
	case tLong:
		return r.long()
	case tBinaryFloat:
		b, err := r.take(8)
		if err != nil {
			return nil, err
		}
		return math.Float64frombits(binary.LittleEndian.Uint64(b)), nil
	case tShortASCII, tShortASCIIIntd:
		n, err := r.byte()
		if err != nil {
			return nil, err
		}
		b, err := r.take(int(n))
		return string(b), err
	case tASCII, tASCIIInterned, tUnicode, tInterned:
		n, err := r.size()
		if err != nil {
			return nil, err
		}
		b, err := r.take(n)
		return string(b), err
	case tString:
		n, err := r.size()
		if err != nil {
			return nil, err
		}
		b, err := r.take(n)
		// Never nil: a nil []byte is NULL to pgx, b'' is an empty bytea.
		return append(make([]byte, 0, len(b)), b...), err
	case tRef:
		i, err := r.uint32()
		if err != nil {
			return nil, err
		}
		if int(i) >= len(d.refs) {
			return nil, fmt.Errorf("python worker: marshal ref %d out of range", i)
		}
		if _, ok := d.refs[i].(pending); ok {
			return nil, errors.New("a value contains itself")
		}
		return d.refs[i], nil
	case tSmallTuple, tTuple, tList:
		var n int
		var err error
		if code == tSmallTuple {
			var b byte
			b, err = r.byte()
			n = int(b)
		} else {
			n, err = r.size()
		}
		if err != nil {
			return nil, err
		}
		items := make([]any, n)
		for i := range items {
			if items[i], err = d.value(); err != nil {
				return nil, err
			}
		}
		if code != tList && n == 2 {
			if _, ok := items[0].(ellipsis); ok {
				if s, ok := items[1].(string); ok {
					return decimalText(s), nil
				}
			}
		}
		return items, nil
	case tDict:
		dict := &pyDict{}
		for {
			k, err := d.peekEnd()
			if err != nil {
				return nil, err
			}
			if k {
				return dict, nil
			}
			key, err := d.value()
			if err != nil {
				return nil, err
			}
			ks, ok := key.(string)
			if !ok {
				return nil, fmt.Errorf("a dict has a key of type %s (keys must be strings)", typeName(key))
			}
			v, err := d.value()
			if err != nil {
				return nil, err
			}
			dict.keys = append(dict.keys, ks)
			dict.vals = append(dict.vals, v)
		}
	case tEllipsis:
		return ellipsis{}, nil
	case tSet, tFrozenSet:
		n, err := r.size()
		if err != nil {
			return nil, err
		}
		for range n {
			if _, err := d.value(); err != nil {
				return nil, err
			}
		}
		return unsupported("a set (it has no order; return a sorted list)"), nil
	case tBinaryComplex:
		if _, err := r.take(16); err != nil {
			return nil, err
		}
		return unsupported("a complex number"), nil
	case tStopIter:
		return unsupported("StopIteration"), nil
	}
	return nil, fmt.Errorf("python worker: unsupported marshal type %q", code)
}

// peekEnd consumes the end of a dict if it is next.
func (d *decoder) peekEnd() (bool, error) {
	if d.r.off >= len(d.r.data) {
		return false, errTruncated
	}
	if d.r.data[d.r.off] == tNull {
		d.r.off++
		return true, nil
	}
	return false, nil
}

func typeName(v any) string {
	switch v := v.(type) {
	case nil:
		return "NoneType"
	case bool:
		return "bool"
	case int64, *big.Int:
		return "int"
	case float64:
		return "float"
	case string:
		return "str"
	case []byte:
		return "bytes"
	case []any:
		return "list"
	case *pyDict:
		return "dict"
	case decimalText:
		return "Decimal"
	case unsupported:
		return string(v)
	}
	return fmt.Sprintf("%T", v)
}

// Kinds of output values, as bits: a column whose values are all of one kind gets the
// Postgres type of that kind (see columnType).
const (
	kBool uint16 = 1 << iota
	kInt
	kNumeric
	kFloat
	kText
	kBytes
	kJSON
	kList
)

// output is a decoded result frame.
type output struct {
	cols  []string
	kinds []uint16
	rows  [][]any
	// origin maps output rows to the input rows they came from; nil when row i came from
	// input row i.
	origin []int
	// deletes are the output rows that are a task's sluice.Delete.
	deletes []int
}

// valueError is a value of a row that the runner cannot write; row is the output row.
type valueError struct {
	row int
	col string
	err error
}

func (e *valueError) Error() string { return fmt.Sprintf("column %q %v", e.col, e.err) }

// result reads a result frame: (rows, origin) or (rows, origin, deletes). Rows are decoded straight into the batch's
// layout: columns in the order they first appear, a value slot per column in every row.
func (d *decoder) result(out *output, sizeHint int) error {
	code, err := d.r.byte()
	if err != nil {
		return err
	}
	if code&^flagRef != tSmallTuple {
		return fmt.Errorf("python worker: result is not a tuple (%q)", code)
	}
	n, err := d.r.byte()
	if err != nil || (n != 2 && n != 3) {
		return fmt.Errorf("python worker: malformed result")
	}
	parts := int(n)
	if code&flagRef != 0 {
		d.refs = append(d.refs, unsupported("the result"))
	}
	if code, err = d.r.byte(); err != nil {
		return err
	}
	if code&flagRef != 0 {
		d.refs = append(d.refs, unsupported("the list of rows"))
	}
	if code&^flagRef != tList {
		return fmt.Errorf("python worker: rows are not a list (%q)", code)
	}
	rows, err := d.r.size()
	if err != nil {
		return err
	}
	colIdx := make(map[string]int, len(out.cols))
	for i, c := range out.cols {
		colIdx[c] = i
	}
	width := max(len(out.cols), sizeHint)
	slab := make([]any, rows*width)
	out.rows = make([][]any, 0, rows)
	for i := range rows {
		row := slab[i*width : i*width : (i+1)*width]
		if row, err = d.row(out, colIdx, row); err != nil {
			var ve *valueError
			if errors.As(err, &ve) {
				ve.row = i
			}
			return err
		}
		out.rows = append(out.rows, row)
	}
	for i, row := range out.rows {
		for len(row) < len(out.cols) {
			row = append(row, nil)
		}
		out.rows[i] = row
	}
	// The origin: None, or a list of input row indexes.
	origin, err := d.value()
	if err != nil {
		return err
	}
	if list, ok := origin.([]any); ok {
		if len(list) != len(out.rows) {
			return fmt.Errorf("python worker: %d origins for %d rows", len(list), len(out.rows))
		}
		out.origin = make([]int, len(list))
		for i, o := range list {
			v, ok := o.(int64)
			if !ok {
				return errors.New("python worker: malformed origin")
			}
			out.origin[i] = int(v)
		}
	}
	if parts < 3 {
		return nil
	}
	// The deletes: the indexes of the rows that are sluice.Delete.
	deletes, err := d.value()
	if err != nil {
		return err
	}
	list, ok := deletes.([]any)
	if !ok {
		return errors.New("python worker: malformed deletes")
	}
	out.deletes = make([]int, len(list))
	for i, o := range list {
		v, ok := o.(int64)
		if !ok || v < 0 || int(v) >= len(out.rows) {
			return errors.New("python worker: malformed deletes")
		}
		out.deletes[i] = int(v)
	}
	return nil
}

// row reads one row dict into row, whose length grows as columns appear.
func (d *decoder) row(out *output, colIdx map[string]int, row []any) ([]any, error) {
	code, err := d.r.byte()
	if err != nil {
		return nil, err
	}
	flagged := code&flagRef != 0
	code &^= flagRef
	switch code {
	case tDict:
	case tRef:
		// The same dict object as an earlier row or value.
		i, err := d.r.uint32()
		if err != nil {
			return nil, err
		}
		if int(i) >= len(d.refs) {
			return nil, fmt.Errorf("python worker: marshal ref %d out of range", i)
		}
		switch v := d.refs[i].(type) {
		case rowRef:
			return append(row, out.rows[v]...), nil
		case *pyDict:
			for k, key := range v.keys {
				if row, err = d.set(out, colIdx, row, key, v.vals[k]); err != nil {
					return nil, err
				}
			}
			return row, nil
		default:
			return nil, fmt.Errorf("a row is %s, not a dict", typeName(v))
		}
	default:
		return nil, fmt.Errorf("python worker: a row is marshal type %q, not a dict", code)
	}
	if flagged {
		d.refs = append(d.refs, rowRef(len(out.rows)))
	}
	for {
		end, err := d.peekEnd()
		if err != nil {
			return nil, err
		}
		if end {
			break
		}
		col, name, err := d.column(out, colIdx)
		if err != nil {
			return nil, err
		}
		v, err := d.value()
		if err != nil {
			return nil, err
		}
		if col < 0 {
			row, err = d.set(out, colIdx, row, name, v)
		} else {
			row, err = d.setAt(out, row, col, v)
		}
		if err != nil {
			return nil, err
		}
	}
	return row, nil
}

// column reads a row's key and returns its column index, or -1 and the name for a name not
// resolved through the ref cache.
func (d *decoder) column(out *output, colIdx map[string]int) (int, string, error) {
	code, err := d.r.byte()
	if err != nil {
		return 0, "", err
	}
	if code == tRef {
		i, err := d.r.uint32()
		if err != nil {
			return 0, "", err
		}
		if int(i) < len(d.colOfRef) && d.colOfRef[i] >= 0 {
			return int(d.colOfRef[i]), "", nil
		}
		if int(i) >= len(d.refs) {
			return 0, "", fmt.Errorf("python worker: marshal ref %d out of range", i)
		}
		name, ok := d.refs[i].(string)
		if !ok {
			return 0, "", fmt.Errorf("a column name is %s (names must be strings)", typeName(d.refs[i]))
		}
		col := d.colFor(out, colIdx, name)
		d.cacheCol(int(i), col)
		return col, "", nil
	}
	ref := -1
	if code&flagRef != 0 {
		ref = len(d.refs)
		d.refs = append(d.refs, pending{})
	}
	v, err := d.body(code &^ flagRef)
	if err != nil {
		return 0, "", err
	}
	name, ok := v.(string)
	if !ok {
		return 0, "", fmt.Errorf("a column name is %s (names must be strings)", typeName(v))
	}
	col := d.colFor(out, colIdx, name)
	if ref >= 0 {
		d.refs[ref] = name
		d.cacheCol(ref, col)
	}
	return col, name, nil
}

func (d *decoder) colFor(out *output, colIdx map[string]int, name string) int {
	if c, ok := colIdx[name]; ok {
		return c
	}
	c := len(out.cols)
	colIdx[name] = c
	out.cols = append(out.cols, name)
	out.kinds = append(out.kinds, 0)
	return c
}

func (d *decoder) cacheCol(ref, col int) {
	for len(d.colOfRef) <= ref {
		d.colOfRef = append(d.colOfRef, -1)
	}
	d.colOfRef[ref] = int32(col)
}

func (d *decoder) set(out *output, colIdx map[string]int, row []any, name string, v any) ([]any, error) {
	return d.setAt(out, row, d.colFor(out, colIdx, name), v)
}

func (d *decoder) setAt(out *output, row []any, col int, v any) ([]any, error) {
	for len(row) <= col {
		row = append(row, nil)
	}
	val, kind, err := outValue(v)
	if err != nil {
		return nil, &valueError{col: out.cols[col], err: err}
	}
	row[col] = val
	out.kinds[col] |= kind
	return row, nil
}

// outValue turns a top-level value from tree form into what sinks take, and its kind.
func outValue(v any) (any, uint16, error) {
	switch v := v.(type) {
	case nil:
		return nil, 0, nil
	case string:
		return v, kText, nil
	case int64:
		return v, kInt, nil
	case float64:
		return v, kFloat, nil
	case bool:
		return v, kBool, nil
	case []byte:
		return v, kBytes, nil
	case decimalText:
		return decimalValue(string(v))
	case *big.Int:
		return json.Number(v.String()), kNumeric, nil
	case *pyDict:
		raw, err := appendJSON(nil, v)
		return json.RawMessage(raw), kJSON, err
	case []any:
		list, err := listValue(v)
		return list, kList, err
	case unsupported:
		return nil, 0, fmt.Errorf("holds %s, which the runner cannot write", string(v))
	case ellipsis:
		return nil, 0, errors.New("holds Ellipsis, which the runner cannot write")
	case rowRef:
		return nil, 0, errors.New("holds a dict that is also an output row; copy it with dict(row)")
	}
	return nil, 0, fmt.Errorf("holds a value of Go type %T", v)
}

// listValue converts a list like the reader's arrays: scalars as they are, decimals as
// numerics, dicts as raw JSON, lists as lists.
func listValue(items []any) ([]any, error) {
	out := make([]any, len(items))
	for i, item := range items {
		switch item := item.(type) {
		case nil, string, int64, float64, bool, []byte:
			out[i] = item
		case []any:
			l, err := listValue(item)
			if err != nil {
				return nil, err
			}
			out[i] = l
		default:
			v, _, err := outValue(item)
			if err != nil {
				return nil, fmt.Errorf("item %d: %w", i, err)
			}
			out[i] = v
		}
	}
	return out, nil
}

// decimalValue is a Decimal's output value: its digits as a json.Number, which Postgres casts
// exactly into a numeric column (cheaper than pgx encoding a pgtype.Numeric, a division per
// four digits) and Elasticsearch receives as a JSON number. NaN and the infinities, which
// JSON lacks, are the strings Postgres spells them with.
func decimalValue(s string) (any, uint16, error) {
	switch s {
	case "NaN", "Infinity", "-Infinity":
		return s, kText, nil
	}
	if !isDecimalDigits(s) {
		return nil, 0, fmt.Errorf("holds Decimal(%q), which the runner cannot write", s)
	}
	return json.Number(s), kNumeric, nil
}

// appendJSON renders a tree value as JSON: a dict's keys keep their order, integers of any
// size stay exact, floats are written as Python's repr writes them (1.0, 1e+16), decimals
// as their digits, bytes as base64 strings (as encoding/json does).
func appendJSON(buf []byte, v any) ([]byte, error) {
	switch v := v.(type) {
	case nil:
		return append(buf, "null"...), nil
	case bool:
		return strconv.AppendBool(buf, v), nil
	case int64:
		return strconv.AppendInt(buf, v, 10), nil
	case *big.Int:
		return v.Append(buf, 10), nil
	case float64:
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, fmt.Errorf("holds %v inside a dict or list, which is not valid JSON", v)
		}
		return appendPyFloat(buf, v), nil
	case string:
		return appendJSONString(buf, v), nil
	case []byte:
		buf = append(buf, '"')
		buf = base64.StdEncoding.AppendEncode(buf, v)
		return append(buf, '"'), nil
	case json.RawMessage:
		return append(buf, v...), nil
	case json.Number:
		return append(buf, v...), nil
	case decimalText:
		if !isDecimalDigits(string(v)) {
			return nil, fmt.Errorf("holds Decimal(%q) inside a dict or list, which is not valid JSON", string(v))
		}
		return append(buf, v...), nil
	case []any:
		buf = append(buf, '[')
		for i, item := range v {
			if i > 0 {
				buf = append(buf, ',')
			}
			var err error
			if buf, err = appendJSON(buf, item); err != nil {
				return nil, err
			}
		}
		return append(buf, ']'), nil
	case *pyDict:
		buf = append(buf, '{')
		for i, k := range v.keys {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = appendJSONString(buf, k)
			buf = append(buf, ':')
			var err error
			if buf, err = appendJSON(buf, v.vals[i]); err != nil {
				return nil, err
			}
		}
		return append(buf, '}'), nil
	}
	_, _, err := outValue(v)
	if err == nil {
		err = fmt.Errorf("holds %s inside a dict or list", typeName(v))
	}
	return nil, err
}

// isDecimalDigits reports whether s is a plain decimal number (JSON has no NaN or Infinity).
func isDecimalDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && c != '.' && c != '-' && c != '+' && c != 'e' && c != 'E' {
			return false
		}
	}
	return s != "" && (s[0] == '-' || (s[0] >= '0' && s[0] <= '9'))
}

// appendPyFloat writes f as Python's repr does: the shortest digits that read back as f,
// positional with at least one decimal between 1e-4 and 1e16, scientific outside.
func appendPyFloat(buf []byte, f float64) []byte {
	if f == 0 {
		if math.Signbit(f) {
			return append(buf, "-0.0"...)
		}
		return append(buf, "0.0"...)
	}
	// The 'e' format has the shortest digits and the exact decimal exponent.
	e := strconv.AppendFloat(nil, f, 'e', -1, 64)
	exp := 0
	for i := len(e) - 1; i >= 0; i-- {
		if e[i] == 'e' {
			exp, _ = strconv.Atoi(string(e[i+1:]))
			break
		}
	}
	if exp < -4 || exp >= 16 {
		return append(buf, e...)
	}
	start := len(buf)
	buf = strconv.AppendFloat(buf, f, 'f', -1, 64)
	for _, c := range buf[start:] {
		if c == '.' {
			return buf
		}
	}
	return append(buf, ".0"...)
}

const hexDigits = "0123456789abcdef"

// appendJSONString quotes s for JSON. Bytes that are not UTF-8 (a Python str with lone
// surrogates) become U+FFFD, which JSON and Postgres accept.
func appendJSONString(buf []byte, s string) []byte {
	buf = append(buf, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				buf = append(buf, '\\', c)
			case c == '\n':
				buf = append(buf, '\\', 'n')
			case c == '\r':
				buf = append(buf, '\\', 'r')
			case c == '\t':
				buf = append(buf, '\\', 't')
			case c < 0x20:
				buf = append(buf, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				buf = append(buf, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			buf = append(buf, `\ufffd`...)
		} else {
			buf = append(buf, s[i:i+size]...)
		}
		i += size
	}
	return append(buf, '"')
}
