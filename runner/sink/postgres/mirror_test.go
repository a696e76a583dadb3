package postgres

import (
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestDeleteSeenAndSweepSQL(t *testing.T) {
	target, side := pgx.Identifier{"analytics", "t"}, pgx.Identifier{"etl", "mirror_x"}
	cases := []struct {
		name, got, want string
	}{
		{"delete by one key", deleteSQL(target, []string{"id"}, []string{"bigint[]"}, []string{""}),
			`DELETE FROM "analytics"."t" AS sluice_t USING (SELECT unnest($1::bigint[]) AS "id") AS sluice_d ` +
				`WHERE sluice_t."id" = sluice_d."id"`},
		{"delete by a composite key with a cast", deleteSQL(target, []string{"a", "B\"x"}, []string{"text[]", "text[]"}, []string{"", "uuid"}),
			`DELETE FROM "analytics"."t" AS sluice_t USING (SELECT unnest($1::text[]) AS "a", unnest($2::text[])::uuid AS "B""x") AS sluice_d ` +
				`WHERE sluice_t."a" = sluice_d."a" AND sluice_t."B""x" = sluice_d."B""x"`},
		{"record the keys", seenSQL(side, []string{"a", "b"}, []string{"bigint[]", "text[]"}, []string{"", "uuid"}),
			`INSERT INTO "etl"."mirror_x" ("a", "b") SELECT unnest($1::bigint[]), unnest($2::text[])::uuid`},
		{"sweep", sweepSQL(target, side, []string{"a", "b"}),
			`DELETE FROM "analytics"."t" AS sluice_t WHERE NOT EXISTS (SELECT 1 FROM "etl"."mirror_x" AS sluice_s ` +
				`WHERE sluice_s."a" = sluice_t."a" AND sluice_s."b" = sluice_t."b")`},
	}
	for _, tc := range cases {
		if tc.got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, tc.got, tc.want)
		}
	}
}

func TestSweptMark(t *testing.T) {
	str := func(s string) *string { return &s }
	for _, tc := range []struct {
		comment *string
		n       int64
		ok      bool
	}{
		{nil, 0, false},
		{str("a user's comment"), 0, false},
		{str(sweptPrefix + "1200"), 1200, true},
		{str(sweptPrefix + "x"), 0, false},
	} {
		if n, ok := sweptMark(tc.comment); n != tc.n || ok != tc.ok {
			t.Errorf("sweptMark(%v) = %d, %v; want %d, %v", tc.comment, n, ok, tc.n, tc.ok)
		}
	}
}
