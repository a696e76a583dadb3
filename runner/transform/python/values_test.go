package python

import (
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/sluice-dev/sluice/runner/batch"
)

func num(s string) pgtype.Numeric {
	var n pgtype.Numeric
	if err := n.Scan(s); err != nil {
		panic(err)
	}
	return n
}

// TestValuesReachPythonAsDocumented sends one value of each kind the reader produces and
// has Python describe what it got: the "Values reach Python as" table of the package
// documentation.
func TestValuesReachPythonAsDocumented(t *testing.T) {
	cest := time.FixedZone("CEST", 2*3600)
	cases := []struct {
		name string
		oid  uint32
		v    any
		want string
	}{
		{"null", pgtype.TextOID, nil, "NoneType:None"},
		{"boolean", pgtype.BoolOID, true, "bool:True"},
		{"smallint", pgtype.Int2OID, int16(-7), "int:-7"},
		{"integer", pgtype.Int4OID, int32(1 << 30), "int:1073741824"},
		{"bigint beyond 32 bits", pgtype.Int8OID, int64(1) << 40, "int:1099511627776"},
		{"bigint minimum", pgtype.Int8OID, int64(math.MinInt64), "int:-9223372036854775808"},
		{"double", pgtype.Float8OID, 1.5, "float:1.5"},
		{"real", pgtype.Float4OID, float32(0.25), "float:0.25"},
		{"numeric keeps its scale", pgtype.NumericOID, num("12.50"), "Decimal:Decimal('12.50')"},
		{"numeric below one", pgtype.NumericOID, pgtype.Numeric{Int: big.NewInt(5), Exp: -3, Valid: true}, "Decimal:Decimal('0.005')"},
		{"negative numeric", pgtype.NumericOID, pgtype.Numeric{Int: big.NewInt(-125), Exp: -1, Valid: true}, "Decimal:Decimal('-12.5')"},
		{"numeric with a positive exponent", pgtype.NumericOID, pgtype.Numeric{Int: big.NewInt(12), Exp: 3, Valid: true}, "Decimal:Decimal('12000')"},
		{"numeric NaN", pgtype.NumericOID, pgtype.Numeric{NaN: true, Valid: true}, "Decimal:Decimal('NaN')"},
		{"numeric beyond 64 bits", pgtype.NumericOID, num("123456789012345678901234567890.5"), "Decimal:Decimal('123456789012345678901234567890.5')"},
		{"text", pgtype.TextOID, "héllo \"wörld\"", `str:'héllo "wörld"'`},
		{"long text", pgtype.TextOID, strings.Repeat("ab", 200), "str:" + fmt.Sprintf("'%s'", strings.Repeat("ab", 200))},
		{"timestamptz in UTC", pgtype.TimestamptzOID, time.Date(2024, 5, 1, 9, 30, 0, 0, cest), "str:'2024-05-01T07:30:00Z'"},
		{"timestamptz fraction", pgtype.TimestamptzOID, time.Date(2024, 5, 1, 9, 30, 0, 250000000, time.UTC), "str:'2024-05-01T09:30:00.25Z'"},
		{"timestamp keeps the wall time", pgtype.TimestampOID, time.Date(2024, 5, 1, 9, 30, 0, 0, time.UTC), "str:'2024-05-01T09:30:00'"},
		{"date", pgtype.DateOID, time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC), "str:'2024-05-01'"},
		{"infinite timestamptz", pgtype.TimestamptzOID, pgtype.Timestamptz{InfinityModifier: pgtype.Infinity, Valid: true}, "str:'infinity'"},
		{"infinite date", pgtype.DateOID, pgtype.Date{InfinityModifier: pgtype.NegativeInfinity, Valid: true}, "str:'-infinity'"},
		{"time of day", pgtype.TimeOID, pgtype.Time{Microseconds: (9*3600 + 30*60) * 1e6, Valid: true}, "str:'09:30:00'"},
		{"jsonb object", pgtype.JSONBOID, json.RawMessage(`{"a": [1, 2.5, null, true], "big": 12345678901234567890}`),
			"dict:{'a': [1, 2.5, None, True], 'big': 12345678901234567890}"},
		{"json scalar", pgtype.JSONOID, json.RawMessage(`"s"`), "str:'s'"},
		{"bytea", pgtype.ByteaOID, []byte{0, 1, 255}, `bytes:b'\x00\x01\xff'`},
		{"uuid", pgtype.UUIDOID, [16]byte{0x6b, 0xa7, 0xb8, 0x10, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0, 0xc0, 0x4f, 0xd4, 0x30, 0xc8},
			"str:'6ba7b810-9dad-11d1-80b4-00c04fd430c8'"},
		{"bigint array", pgtype.Int8ArrayOID, []any{int64(1), nil, int64(3)}, "list:[1, None, 3]"},
		{"numeric array", pgtype.NumericArrayOID, []any{num("1.50"), nil}, "list:[Decimal('1.50'), None]"},
		{"jsonb array", pgtype.JSONBArrayOID, []any{json.RawMessage(`{"k": 1}`)}, "list:[{'k': 1}]"},
		{"timestamptz array", pgtype.TimestamptzArrayOID, []any{time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)}, "list:['2024-05-01T00:00:00Z']"},
		{"interval in its text form", pgtype.IntervalOID, pgtype.Interval{Days: 1, Microseconds: 3600e6, Valid: true}, "str:'1 day 01:00:00'"},
	}
	in := &batch.Batch{Columns: []batch.Column{{Name: "id", Type: pgtype.Int8OID}}, Rows: [][]any{{int64(1)}}}
	for _, c := range cases {
		in.Columns = append(in.Columns, batch.Column{Name: c.name, Type: c.oid})
		in.Rows[0] = append(in.Rows[0], c.v)
	}
	s := start(t, Options{}, `
def transform(row):
    return {"described " + k: type(v).__name__ + ":" + repr(v) for k, v in row.items()}
`)
	out, err := apply(t, s, in)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	for i, c := range cases {
		if got := out.Rows[0][i+1]; got != c.want {
			t.Errorf("%s: Python got %v, want %s", c.name, got, c.want)
		}
	}
}

// TestValuesComeBackAsDocumented returns one value of each kind from Python and checks the
// Go value and the column type the sinks get: the "Values come back" table. Each case is a
// task of its own, because a batch's values decide which of the worker's paths carries
// them back (marshal as is, decimals converted in place, everything converted).
func TestValuesComeBackAsDocumented(t *testing.T) {
	cases := []struct {
		name string
		expr string
		want any
		oid  uint32
	}{
		{"None", "None", nil, 0},
		{"bool", "True", true, pgtype.BoolOID},
		{"int", "-7", int64(-7), pgtype.Int8OID},
		{"int beyond 32 bits", "2**40", int64(1) << 40, pgtype.Int8OID},
		{"int beyond 64 bits", "-2**70", json.Number("-1180591620717411303424"), pgtype.TextOID},
		{"float", "1.5", 1.5, pgtype.Float8OID},
		{"float nan", "float('nan')", "NaN", pgtype.Float8OID},
		{"Decimal", "decimal.Decimal('12.50')", json.Number("12.50"), pgtype.TextOID},
		{"Decimal with an exponent", "decimal.Decimal('1E+3')", json.Number("1E+3"), pgtype.TextOID},
		{"Decimal NaN", "decimal.Decimal('NaN')", "NaN", pgtype.TextOID},
		{"str", "'héllo'", "héllo", pgtype.TextOID},
		{"bytes", `b'\x00\x01'`, []byte{0, 1}, pgtype.ByteaOID},
		{"bytearray", "bytearray(b'a')", []byte("a"), pgtype.ByteaOID},
		{"dict keeps its order", `{"z": 1, "a": [1.0, 2**64, None, "s\n"], "b": b"\x01"}`,
			json.RawMessage(`{"z":1,"a":[1.0,18446744073709551616,null,"s\n"],"b":"AQ=="}`), pgtype.JSONOID},
		{"dict with a Decimal and a datetime", `{"d": decimal.Decimal("1.10"), "t": datetime.date(2024, 5, 1)}`,
			json.RawMessage(`{"d":1.10,"t":"2024-05-01"}`), pgtype.JSONOID},
		{"list", "[1, 'a', None, [2]]", []any{int64(1), "a", nil, []any{int64(2)}}, 0},
		{"list of dicts and Decimals", "[{'k': 1}, decimal.Decimal('2.5')]", []any{json.RawMessage(`{"k":1}`), json.Number("2.5")}, 0},
		{"tuple", "(1, 2)", []any{int64(1), int64(2)}, 0},
		{"datetime", "datetime.datetime(2024, 5, 1, 9, 30, tzinfo=datetime.timezone.utc)", "2024-05-01T09:30:00+00:00", pgtype.TextOID},
		{"date", "datetime.date(2024, 5, 1)", "2024-05-01", pgtype.TextOID},
		{"uuid", "uuid.UUID(int=1)", "00000000-0000-0000-0000-000000000001", pgtype.TextOID},
		{"str subclass", "Mood.HAPPY", "happy", pgtype.TextOID},
		{"int subclass", "Level.HIGH", int64(3), pgtype.Int8OID},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := start(t, Options{}, `
import datetime, decimal, enum, uuid
class Mood(str, enum.Enum):
    HAPPY = "happy"
class Level(enum.IntEnum):
    HIGH = 3
def transform(row):
    return {"id": row["id"], "v": `+c.expr+`}
`)
			out, err := apply(t, s, idRows(1))
			if err != nil {
				t.Fatalf("Apply: %v", err)
			}
			got := out.Rows[0][1]
			if f, ok := got.(float64); ok && math.IsNaN(f) {
				got = "NaN"
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("value %#v (%T), want %#v (%T)", got, got, c.want, c.want)
			}
			if out.Columns[1].Type != c.oid {
				t.Errorf("column type %d, want %d", out.Columns[1].Type, c.oid)
			}
		})
	}
}

// TestJSONColumnsGoBackAsJSON: a column read from json or jsonb goes back as JSON whatever
// json.loads made of it, so that an identity transform writes what it read. Only a JSON null
// cannot: Python has one None for it and for SQL NULL.
func TestJSONColumnsGoBackAsJSON(t *testing.T) {
	docs := []string{`{"b": 1, "a": [1.5, "x", {"n": null}]}`, `[1, 2]`, `"text"`, `12345678901234567890`, `2.5`, `true`, `null`}
	want := []any{json.RawMessage(`{"b":1,"a":[1.5,"x",{"n":null}]}`), json.RawMessage(`[1,2]`), json.RawMessage(`"text"`),
		json.RawMessage(`12345678901234567890`), json.RawMessage(`2.5`), json.RawMessage(`true`), nil}
	in := &batch.Batch{Columns: []batch.Column{{Name: "id", Type: pgtype.Int8OID}, {Name: "doc", Type: pgtype.JSONBOID}}}
	for i, d := range docs {
		in.Rows = append(in.Rows, []any{int64(i + 1), json.RawMessage(d)})
	}
	s := start(t, Options{}, "def transform(row):\n    return row\n")
	out, err := apply(t, s, in)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if out.Columns[1].Type != pgtype.JSONBOID {
		t.Errorf("column type %d, want jsonb", out.Columns[1].Type)
	}
	for i, row := range out.Rows {
		if !reflect.DeepEqual(row[1], want[i]) {
			t.Errorf("%s came back as %s, want %s", docs[i], row[1], want[i])
		}
	}
}

// TestColumnsTypedByTheirValues checks the typing of a column whose values differ in kind
// from row to row.
func TestColumnsTypedByTheirValues(t *testing.T) {
	cases := []struct {
		name  string
		exprs string // a Python list indexed by the row number
		want  []any
		oid   uint32
	}{
		{"ints and Decimals are decimals", "[1, decimal.Decimal('2.5'), None]", []any{json.Number("1"), json.Number("2.5"), nil}, pgtype.TextOID},
		{"ints and floats are text", "[1, 1.5, 1e20]", []any{"1", "1.5", "1e+20"}, pgtype.TextOID},
		{"bools and ints are text", "[True, 0, None]", []any{"true", "0", nil}, pgtype.TextOID},
		{"strs and dicts are text", "['a', {'b': 1}, float('inf')]", []any{"a", `{"b":1}`, "Infinity"}, pgtype.TextOID},
		{"None only has no type", "[None, None, None]", []any{nil, nil, nil}, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := start(t, Options{}, `
import decimal
def transform(row):
    return {"id": row["id"], "v": `+c.exprs+`[row["id"] - 1]}
`)
			out, err := apply(t, s, idRows(3))
			if err != nil {
				t.Fatalf("Apply: %v", err)
			}
			for i, row := range out.Rows {
				if !reflect.DeepEqual(row[1], c.want[i]) {
					t.Errorf("row %d: %#v, want %#v", i+1, row[1], c.want[i])
				}
			}
			if out.Columns[1].Type != c.oid {
				t.Errorf("column type %d, want %d", out.Columns[1].Type, c.oid)
			}
		})
	}
}

// TestTasksNormalizeDropAndFanOut runs three tasks in order: the output has exactly the rows
// and columns they make, the columns in the order they first appear.
func TestTasksNormalizeDropAndFanOut(t *testing.T) {
	s := start(t, Options{SinkKey: []string{"id"}}, `
def transform(row):
    row["name"] = row["name"].strip().lower()
    return row
`, `
def transform(row):
    if row["id"] % 2 == 0:
        return None
    return row
`, `
def transform(row):
    if row["id"] == 3:
        return [row, {"id": 1003, "name": row["name"] + " (copy)", "copy_of": 3}]
    return row
`)
	in := idRows(4)
	for i, r := range in.Rows {
		r[1] = fmt.Sprintf("  Row %c  ", 'A'+i)
	}
	out, err := apply(t, s, in)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	want := [][]any{{int64(1), "row a", nil}, {int64(3), "row c", nil}, {int64(1003), "row c (copy)", int64(3)}}
	if got := out.Names(); !reflect.DeepEqual(got, []string{"id", "name", "copy_of"}) {
		t.Fatalf("columns %v", got)
	}
	if !reflect.DeepEqual(out.Rows, want) {
		t.Fatalf("rows %v, want %v", out.Rows, want)
	}

	// A batch whose rows are all dropped keeps the reader's columns (and with them the key)
	// and has no rows.
	even := &batch.Batch{Columns: in.Columns, Rows: [][]any{{int64(2), "b"}, {int64(4), "d"}}}
	out, err = apply(t, s, even)
	if err != nil || out.Len() != 0 || out.Index("id") != 0 {
		t.Fatalf("all dropped: %v, %v; want no rows and the reader's columns", out, err)
	}
}

// TestTasksSeeTheirOwnNamespace checks that a task's globals are its own: two tasks define
// the same names, and setup() runs once before the first batch.
func TestTasksSeeTheirOwnNamespace(t *testing.T) {
	s := start(t, Options{}, `
SUFFIX = "-one"
calls = 0
def setup():
    global calls
    calls += 1
def transform(row):
    row["name"] += SUFFIX + str(calls)
    return row
`, `
SUFFIX = "-two"
def transform(row):
    row["name"] += SUFFIX
    return row
`)
	for range 2 {
		out, err := apply(t, s, idRows(1))
		if err != nil || out.Rows[0][1] != "Row A-one1-two" {
			t.Fatalf("Apply = %v, %v; want Row A-one1-two", out, err)
		}
	}
}

func TestAppendNumeric(t *testing.T) {
	cases := []struct {
		n    pgtype.Numeric
		want string
	}{
		{pgtype.Numeric{Int: big.NewInt(1250), Exp: -2, Valid: true}, "12.50"},
		{pgtype.Numeric{Int: big.NewInt(-5), Exp: -3, Valid: true}, "-0.005"},
		{pgtype.Numeric{Int: big.NewInt(5), Exp: -1, Valid: true}, "0.5"},
		{pgtype.Numeric{Int: big.NewInt(0), Exp: -2, Valid: true}, "0.00"},
		{pgtype.Numeric{Int: big.NewInt(12), Exp: 2, Valid: true}, "1200"},
		{pgtype.Numeric{Int: big.NewInt(0), Exp: 2, Valid: true}, "0"},
		{pgtype.Numeric{Valid: true}, "0"},
		{pgtype.Numeric{NaN: true, Valid: true}, "NaN"},
		{pgtype.Numeric{InfinityModifier: pgtype.NegativeInfinity, Valid: true}, "-Infinity"},
	}
	for _, c := range cases {
		if got := string(appendNumeric([]byte("x"), c.n)); got != "x"+c.want {
			t.Errorf("appendNumeric(%v) = %q, want %q", c.n, got[1:], c.want)
		}
	}
}

func TestAppendPyFloat(t *testing.T) {
	tenth, fifth := 0.1, 0.2
	cases := map[float64]string{1: "1.0", -0.5: "-0.5", 1e16: "1e+16", 1e15: "1000000000000000.0", 1e-5: "1e-05",
		0.0001: "0.0001", tenth + fifth: "0.30000000000000004", 123456789.125: "123456789.125"}
	for f, want := range cases {
		if got := string(appendPyFloat(nil, f)); got != want {
			t.Errorf("appendPyFloat(%v) = %q, want %q (Python's repr)", f, got, want)
		}
	}
}

// TestPassThroughColumnsKeepTheirReaderTypes: a column that keeps a reader column's name and
// still holds values in the form Python got them goes back with the reader's type, so that
// the sinks write it as legacy mode does; a value changed out of that form leaves the column
// typed by its values, and Postgres casts it.
func TestPassThroughColumnsKeepTheirReaderTypes(t *testing.T) {
	ts := time.Date(2024, 5, 1, 9, 30, 0, 250000000, time.UTC)
	in := &batch.Batch{Columns: []batch.Column{{Name: "id", Type: pgtype.Int8OID}, {Name: "tz", Type: pgtype.TimestamptzOID},
		{Name: "wall", Type: pgtype.TimestampOID}, {Name: "day", Type: pgtype.DateOID}, {Name: "small", Type: pgtype.Int4OID}},
		Rows: [][]any{
			{int64(1), ts, ts, time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC), int32(7)},
			{int64(2), pgtype.Timestamptz{InfinityModifier: pgtype.Infinity, Valid: true}, nil,
				pgtype.Date{InfinityModifier: pgtype.NegativeInfinity, Valid: true}, nil},
		}}
	s := start(t, Options{}, "def transform(row):\n    return row\n")
	out, err := apply(t, s, in)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	for c, col := range out.Columns {
		if col.Type != in.Columns[c].Type {
			t.Errorf("column %s came back as type %d, want the reader's %d", col.Name, col.Type, in.Columns[c].Type)
		}
	}
	want := [][]any{
		{int64(1), ts, ts, time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC), int64(7)},
		{int64(2), pgtype.Timestamptz{InfinityModifier: pgtype.Infinity, Valid: true}, nil,
			pgtype.Date{InfinityModifier: pgtype.NegativeInfinity, Valid: true}, nil},
	}
	if !reflect.DeepEqual(out.Rows, want) {
		t.Errorf("rows %v, want %v", out.Rows, want)
	}

	s = start(t, Options{}, `
def transform(row):
    row["tz"] = "yesterday"
    row["wall"] = row["wall"] and row["wall"].replace("T", " ")
    row["small"] = 2**40
    return row
`)
	out, err = apply(t, s, in)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	for c, want := range []uint32{pgtype.Int8OID, pgtype.TextOID, pgtype.TextOID, pgtype.DateOID, pgtype.Int8OID} {
		if out.Columns[c].Type != want {
			t.Errorf("changed column %s has type %d, want %d", out.Columns[c].Name, out.Columns[c].Type, want)
		}
	}
	if out.Rows[0][2] != "2024-05-01 09:30:00.25" {
		t.Errorf("changed wall time %v", out.Rows[0][2])
	}
}

// TestDeletesTravelFlagged: a task's sluice.Delete reaches the batch as a flagged row, alone or
// in a list, past later tasks; rows made from a reader row already flagged (a soft delete) are
// flagged too; a dict that only looks like a delete is a row.
func TestDeletesTravelFlagged(t *testing.T) {
	s := start(t, Options{SinkKey: []string{"id"}}, `
import sluice

def transform(row):
    if row["id"] == 1:
        return sluice.Delete(row)
    if row["id"] == 2:
        return [row, sluice.Delete({"id": 20})]
    if row["id"] == 3:
        return {"id": 3, "Delete": True, "name": "sluice.Delete"}
    return [row, dict(row, id=row["id"] * 10)]
`, `
def transform(row):
    row["seen"] = True
    return row
`)
	in := idRows(4)
	in.Deleted = []bool{false, false, false, true}
	out, err := apply(t, s, in)
	if err != nil {
		t.Fatal(err)
	}
	ids := out.Index("id")
	seen := out.Index("seen")
	var got []string
	for i, row := range out.Rows {
		g := fmt.Sprint(row[ids])
		if out.IsDeleted(i) {
			g += " deleted"
		}
		if seen >= 0 && row[seen] == true {
			g += " seen"
		}
		got = append(got, g)
	}
	want := []string{"1 deleted", "2 seen", "20 deleted", "3 seen", "4 deleted seen", "40 deleted seen"}
	if strings.Join(got, ", ") != strings.Join(want, ", ") {
		t.Fatalf("rows %v, want %v", got, want)
	}
}
