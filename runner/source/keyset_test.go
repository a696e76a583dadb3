package source

import (
	"testing"
)

func TestPageSQL(t *testing.T) {
	cases := []struct {
		name  string
		k     Keyset
		after bool
		want  string
	}{
		{
			name: "first incremental page has no predicate",
			k:    Keyset{Query: "SELECT * FROM t", Order: []string{"updated_at", "id"}, Types: []string{"timestamp with time zone", "bigint"}, Limit: 500},
			want: "SELECT * FROM (\nSELECT * FROM t\n) AS q ORDER BY q.\"updated_at\", q.\"id\" LIMIT 501",
		},
		{
			name:  "next incremental page compares the row with the checkpoint, cast to the column types",
			k:     Keyset{Query: "SELECT * FROM t", Order: []string{"updated_at", "id"}, Types: []string{"timestamp with time zone", "bigint"}, Limit: 500},
			after: true,
			want: "SELECT * FROM (\nSELECT * FROM t\n) AS q WHERE (q.\"updated_at\", q.\"id\") > " +
				"(CAST($1::text AS timestamp with time zone), CAST($2::text AS bigint)) ORDER BY q.\"updated_at\", q.\"id\" LIMIT 501",
		},
		{
			name:  "full page over composite keys",
			k:     Keyset{Query: "SELECT a, b FROM t", Order: []string{"a", "b"}, Types: []string{"text", "integer"}, Limit: 10},
			after: true,
			want: "SELECT * FROM (\nSELECT a, b FROM t\n) AS q WHERE (q.\"a\", q.\"b\") > " +
				"(CAST($1::text AS text), CAST($2::text AS integer)) ORDER BY q.\"a\", q.\"b\" LIMIT 11",
		},
		{
			name:  "identifiers are quoted, trailing semicolon and comment are harmless",
			k:     Keyset{Query: "SELECT 1 AS \"Odd\"\"Name\" -- note\n;  ", Order: []string{"Odd\"Name"}, Types: []string{"integer"}, Limit: 1},
			after: true,
			want: "SELECT * FROM (\nSELECT 1 AS \"Odd\"\"Name\" -- note\n) AS q WHERE (q.\"Odd\"\"Name\") > " +
				"(CAST($1::text AS integer)) ORDER BY q.\"Odd\"\"Name\" LIMIT 2",
		},
		{
			name: "first page of a run under a time horizon",
			k: Keyset{Query: "SELECT * FROM t", Order: []string{"updated_at", "id"}, Types: []string{"timestamp with time zone", "bigint"},
				Limit: 500, Bound: "<", BoundType: "timestamp with time zone"},
			want: "SELECT * FROM (\nSELECT * FROM t\n) AS q WHERE q.\"updated_at\" < CAST($1::text AS timestamp with time zone) " +
				"ORDER BY q.\"updated_at\", q.\"id\" LIMIT 501",
		},
		{
			name: "next page under a commit barrier keeps the column's modifier",
			k: Keyset{Query: "SELECT * FROM t", Order: []string{"code", "id"}, Types: []string{"character(4)", "numeric(12,2)"},
				Limit: 100, Bound: "<=", BoundType: "character(4)"},
			after: true,
			want: "SELECT * FROM (\nSELECT * FROM t\n) AS q WHERE (q.\"code\", q.\"id\") > " +
				"(CAST($1::text AS character(4)), CAST($2::text AS numeric(12,2))) AND q.\"code\" <= CAST($3::text AS character(4)) " +
				"ORDER BY q.\"code\", q.\"id\" LIMIT 101",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.k.PageSQL(tc.after); got != tc.want {
				t.Fatalf("PageSQL:\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestNullSQL(t *testing.T) {
	got := NullSQL("SELECT * FROM t", []string{"updated_at"}, []string{"id", "region"}, nil)
	want := "SELECT q.\"id\"::text, q.\"region\"::text FROM (\nSELECT * FROM t\n) AS q WHERE q.\"updated_at\" IS NULL LIMIT 1"
	if got != want {
		t.Fatalf("NullSQL:\n got %q\nwant %q", got, want)
	}
	got = NullSQL("SELECT * FROM t", []string{"a", "b"}, []string{"a", "b"}, nil)
	want = "SELECT q.\"a\"::text, q.\"b\"::text FROM (\nSELECT * FROM t\n) AS q WHERE q.\"a\" IS NULL OR q.\"b\" IS NULL LIMIT 1"
	if got != want {
		t.Fatalf("NullSQL:\n got %q\nwant %q", got, want)
	}
	got = NullSQL("SELECT * FROM t", []string{"c"}, []string{"id"}, []string{"c"})
	want = "SELECT q.\"id\"::text FROM (\nSELECT * FROM t\n) AS q WHERE q.\"c\" IS NULL OR q.\"c\" = 'infinity' LIMIT 1"
	if got != want {
		t.Fatalf("NullSQL:\n got %q\nwant %q", got, want)
	}
}

func TestOrder(t *testing.T) {
	cases := []struct {
		cursor string
		keys   []string
		want   []string
	}{
		{"updated_at", []string{"id"}, []string{"updated_at", "id"}},
		{"", []string{"a", "b"}, []string{"a", "b"}},
		{"id", []string{"id"}, []string{"id"}},
		{"seq", []string{"region", "seq"}, []string{"seq", "region"}},
	}
	for _, tc := range cases {
		got := Order(tc.cursor, tc.keys)
		if len(got) != len(tc.want) {
			t.Fatalf("Order(%q, %v) = %v, want %v", tc.cursor, tc.keys, got, tc.want)
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Fatalf("Order(%q, %v) = %v, want %v", tc.cursor, tc.keys, got, tc.want)
			}
		}
	}
}
