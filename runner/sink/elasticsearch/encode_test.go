package elasticsearch

import (
	"encoding/json"
	"math"
	"math/big"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
)

func num(s string) pgtype.Numeric {
	var n pgtype.Numeric
	if err := n.Scan(s); err != nil {
		panic(err)
	}
	return n
}

func TestValuesRenderAsDeterministicJSON(t *testing.T) {
	ts := time.Date(2024, 3, 4, 5, 6, 7, 123456000, time.FixedZone("CET", 3600))
	bigInt, _ := new(big.Int).SetString("123456789012345678901234567890", 10)
	cases := []struct {
		name string
		v    any
		oid  uint32
		elem uint32
		want string
	}{
		{"null", nil, 0, 0, `null`},
		{"int64", int64(-9223372036854775808), pgtype.Int8OID, 0, `-9223372036854775808`},
		{"int32", int32(42), pgtype.Int4OID, 0, `42`},
		{"int16", int16(-7), pgtype.Int2OID, 0, `-7`},
		{"uint32 (oid)", uint32(4294967295), pgtype.OIDOID, 0, `4294967295`},
		{"bool", true, pgtype.BoolOID, 0, `true`},
		{"float64", 1.5, pgtype.Float8OID, 0, `1.5`},
		{"float64 tiny uses an exponent", 1e-7, pgtype.Float8OID, 0, `1e-7`},
		{"float64 huge uses an exponent", 1e21, pgtype.Float8OID, 0, `1e+21`},
		{"float64 NaN is a string", math.NaN(), pgtype.Float8OID, 0, `"NaN"`},
		{"float64 -Inf is a string", math.Inf(-1), pgtype.Float8OID, 0, `"-Infinity"`},
		{"float32 keeps its shortest form", float32(0.1), pgtype.Float4OID, 0, `0.1`},
		{"numeric keeps its scale", num("2.50"), pgtype.NumericOID, 0, `2.50`},
		{"numeric below one", num("-0.0012"), pgtype.NumericOID, 0, `-0.0012`},
		{"numeric zero with scale", num("0.00"), pgtype.NumericOID, 0, `0.00`},
		{"numeric integer with trailing zeros", num("1200"), pgtype.NumericOID, 0, `1200`},
		{"numeric beyond int64", pgtype.Numeric{Int: bigInt, Exp: -10, Valid: true}, pgtype.NumericOID, 0, `12345678901234567890.1234567890`},
		{"numeric NaN is a string", pgtype.Numeric{NaN: true, Valid: true}, pgtype.NumericOID, 0, `"NaN"`},
		{"numeric infinity is a string", pgtype.Numeric{InfinityModifier: pgtype.Infinity, Valid: true}, pgtype.NumericOID, 0, `"Infinity"`},
		{"timestamptz in UTC with micros", ts, pgtype.TimestamptzOID, 0, `"2024-03-04T04:06:07.123456Z"`},
		{"timestamptz whole seconds", ts.Truncate(time.Second), pgtype.TimestamptzOID, 0, `"2024-03-04T04:06:07Z"`},
		{"timestamp keeps its wall time, no zone", time.Date(2024, 3, 4, 5, 6, 7, 0, time.UTC), pgtype.TimestampOID, 0, `"2024-03-04T05:06:07"`},
		{"date", time.Date(2024, 3, 4, 0, 0, 0, 0, time.UTC), pgtype.DateOID, 0, `"2024-03-04"`},
		{"time of a transform is an instant", ts, 0, 0, `"2024-03-04T04:06:07.123456Z"`},
		{"infinite date", pgtype.Date{InfinityModifier: pgtype.Infinity, Valid: true}, pgtype.DateOID, 0, `"infinity"`},
		{"-infinite timestamptz", pgtype.Timestamptz{InfinityModifier: pgtype.NegativeInfinity, Valid: true}, pgtype.TimestamptzOID, 0, `"-infinity"`},
		{"jsonb object stays an object", json.RawMessage(`{"a": 1, "big": 12345678901234567890}`), pgtype.JSONBOID, 0, `{"a": 1, "big": 12345678901234567890}`},
		{"json with line breaks is compacted", json.RawMessage("{\n  \"a\": [1,\r\n 2]\n}"), pgtype.JSONOID, 0, `{"a":[1,2]}`},
		{"uuid canonical", [16]byte{0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0}, pgtype.UUIDOID, 0, `"12345678-9abc-def0-1234-56789abcdef0"`},
		{"bytea in base64", []byte{0, 1, 2, 255}, pgtype.ByteaOID, 0, `"AAEC/w=="`},
		{"array of integers", []any{int32(1), nil, int32(3)}, pgtype.Int4ArrayOID, pgtype.Int4OID, `[1,null,3]`},
		{"array of dates keeps the element type", []any{time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC)}, pgtype.DateArrayOID, pgtype.DateOID, `["2024-01-02"]`},
		{"nested arrays", []any{[]any{"a"}, []any{"b"}}, pgtype.TextArrayOID, pgtype.TextOID, `[["a"],["b"]]`},
		{"map with sorted keys", map[string]any{"b": int64(2), "a": "x"}, 0, 0, `{"a":"x","b":2}`},
		{"inet host without prefix", netip.MustParsePrefix("10.1.2.3/32"), pgtype.InetOID, 0, `"10.1.2.3"`},
		{"cidr keeps its prefix", netip.MustParsePrefix("10.0.0.0/8"), pgtype.CIDROID, 0, `"10.0.0.0/8"`},
		{"interval as Postgres text", pgtype.Interval{Days: 1, Microseconds: 3600e6, Valid: true}, pgtype.IntervalOID, 0, `"1 day 01:00:00"`},
		{"json.Number", json.Number("1.0e3"), 0, 0, `1.0e3`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := appendValue([]byte("x"), tc.v, tc.oid, tc.elem)
			if err != nil {
				t.Fatalf("appendValue(%#v): %v", tc.v, err)
			}
			if string(got) != "x"+tc.want {
				t.Fatalf("appendValue(%#v) = %s, want %s", tc.v, got[1:], tc.want)
			}
			if !json.Valid(got[1:]) {
				t.Fatalf("appendValue(%#v) = %s is not valid JSON", tc.v, got[1:])
			}
		})
	}
}

func TestStringsAreEscapedForOneLineJSON(t *testing.T) {
	cases := []struct{ in, want string }{
		{"plain", `"plain"`},
		{"quote \" backslash \\", `"quote \" backslash \\"`},
		{"lines\nand\rtabs\t", `"lines\nand\rtabs\t"`},
		{"control \x00\x1f", `"control \u0000\u001f"`},
		{"unicode é 日本 🎉", `"unicode é 日本 🎉"`},
		{"invalid \xff utf-8", `"invalid \ufffd utf-8"`},
		{"separators \u2028\u2029", `"separators \u2028\u2029"`},
		{"<html> & stays", `"<html> & stays"`},
	}
	for _, tc := range cases {
		for _, got := range []string{string(appendString(nil, tc.in)), string(appendString(nil, []byte(tc.in)))} {
			if got != tc.want {
				t.Errorf("appendString(%q) = %s, want %s", tc.in, got, tc.want)
			}
			if strings.ContainsAny(got, "\n\r") {
				t.Errorf("appendString(%q) has a line break", tc.in)
			}
			var back string
			if err := json.Unmarshal([]byte(got), &back); err != nil {
				t.Errorf("appendString(%q) = %s does not parse: %v", tc.in, got, err)
			}
		}
	}
}

func TestDocumentIDsAreDeterministicAndUnambiguous(t *testing.T) {
	u := [16]byte{0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11}
	ts := time.Date(2024, 1, 2, 3, 4, 5, 600000000, time.FixedZone("X", -7200))
	cases := []struct {
		name string
		vals []any
		oids []uint32
		want string
	}{
		{"bigint", []any{int64(42)}, []uint32{pgtype.Int8OID}, `42`},
		{"negative int", []any{int32(-7)}, []uint32{pgtype.Int4OID}, `-7`},
		{"string as it is", []any{"a/b \"c\""}, []uint32{pgtype.TextOID}, `a/b "c"`},
		{"numeric without trailing zeros", []any{num("1.50")}, []uint32{pgtype.NumericOID}, `1.5`},
		{"numeric integral with scale", []any{num("3.000")}, []uint32{pgtype.NumericOID}, `3`},
		{"numeric large", []any{num("1200")}, []uint32{pgtype.NumericOID}, `1200`},
		{"uuid canonical", []any{u}, []uint32{pgtype.UUIDOID}, `a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11`},
		{"timestamptz in UTC", []any{ts}, []uint32{pgtype.TimestamptzOID}, `2024-01-02T05:04:05.6Z`},
		{"date", []any{time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC)}, []uint32{pgtype.DateOID}, `2024-01-02`},
		{"bool", []any{true}, []uint32{pgtype.BoolOID}, `true`},
		{"composite: numbers bare, strings quoted", []any{int64(42), "eu-west"}, []uint32{pgtype.Int8OID, pgtype.TextOID}, `[42,"eu-west"]`},
		{"composite: a comma in a string stays inside it", []any{"a,b", "c"}, []uint32{pgtype.TextOID, pgtype.TextOID}, `["a,b","c"]`},
		{"composite: a string that looks like the array", []any{`a","b`}, []uint32{pgtype.TextOID}, `a","b`},
		{"composite: a quote is escaped", []any{`a","b`, "c"}, []uint32{pgtype.TextOID, pgtype.TextOID}, `["a\",\"b","c"]`},
		{"composite: numeric string vs number differ", []any{"1", int64(1)}, []uint32{pgtype.TextOID, pgtype.Int8OID}, `["1",1]`},
		{"composite: uuid and numeric", []any{u, num("2.10")}, []uint32{pgtype.UUIDOID, pgtype.NumericOID}, `["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",2.1]`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := appendID(nil, tc.vals, tc.oids)
			if err != nil {
				t.Fatalf("appendID: %v", err)
			}
			if string(got) != tc.want {
				t.Fatalf("appendID(%v) = %s, want %s", tc.vals, got, tc.want)
			}
			if len(tc.vals) > 1 && !json.Valid(got) {
				t.Fatalf("composite _id %s is not a JSON array", got)
			}
		})
	}
	if _, err := appendID(nil, []any{nil}, []uint32{pgtype.Int8OID}); err != errNullKey {
		t.Fatalf("NULL key: err %v, want errNullKey", err)
	}
	if _, err := appendID(nil, []any{int64(1), nil}, []uint32{pgtype.Int8OID, pgtype.TextOID}); err != errNullKey {
		t.Fatalf("NULL in a composite key: err %v, want errNullKey", err)
	}
}

func TestBinaryNumericRendersAsPostgresPrintsIt(t *testing.T) {
	// The binary form of a numeric is built by pgx's encoder; the text must equal what the
	// decoded path renders, which TestValuesRenderAsDeterministicJSON pins to Postgres' text.
	m := pgtype.NewMap()
	for _, s := range []string{"0", "0.00", "1", "-1", "2.50", "10000", "12345678.9", "0.0001", "-0.0012",
		"99999999999999999999.99999999", "100000000000000000000", "0.0000000123456", "NaN", "Infinity", "-Infinity"} {
		n := num(s)
		src, err := m.Encode(pgtype.NumericOID, pgtype.BinaryFormatCode, n, nil)
		if err != nil {
			t.Fatalf("encode %s: %v", s, err)
		}
		var decoded pgtype.Numeric
		if err := m.Scan(pgtype.NumericOID, pgtype.BinaryFormatCode, src, &decoded); err != nil {
			t.Fatalf("scan %s: %v", s, err)
		}
		for _, canonical := range []bool{false, true} {
			got, err := appendNumericBinary(nil, src, canonical)
			if err != nil {
				t.Fatalf("appendNumericBinary(%s): %v", s, err)
			}
			want := appendNumeric(nil, decoded, canonical)
			if string(got) != string(want) {
				t.Errorf("numeric %s (canonical %v): binary renders %s, decoded renders %s", s, canonical, got, want)
			}
		}
	}
}
