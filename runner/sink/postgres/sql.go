package postgres

import (
	"strings"

	"github.com/jackc/pgx/v5"
)

// upsertSQL builds the statement that writes a batch: one binary array parameter per column,
// unnested into rows and upserted on the key:
//
//	INSERT INTO "analytics"."t" ("id", "v") SELECT unnest($1::bigint[]), unnest($2::text[])::jsonb
//	ON CONFLICT ("id") DO UPDATE SET "v" = EXCLUDED."v"
//
// The unnests stand in the select list, where Postgres steps through the arrays in lockstep
// row by row; in FROM it would first materialize all rows (we measured about 12% more CPU for
// a batch). arrayTypes are the SQL types of the parameters. casts[i] is the target type of
// column i when the carried type differs from it (Postgres converts with an explicit cast,
// which knows more conversions than an assignment), or "". When every column is a key column
// there is nothing to update: DO NOTHING.
func upsertSQL(target pgx.Identifier, columns, arrayTypes, casts, key []string) string {
	ids := make([]string, len(columns))
	for i, c := range columns {
		ids[i] = pgx.Identifier{c}.Sanitize()
	}
	var b strings.Builder
	b.WriteString("INSERT INTO ")
	b.WriteString(target.Sanitize())
	b.WriteString(" (")
	b.WriteString(strings.Join(ids, ", "))
	b.WriteString(") SELECT ")
	for i, t := range arrayTypes {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("unnest($")
		b.WriteString(itoa(i + 1))
		b.WriteString("::")
		b.WriteString(t)
		b.WriteString(")")
		if casts[i] != "" {
			b.WriteString("::")
			b.WriteString(casts[i])
		}
	}
	b.WriteString(" ON CONFLICT (")
	for i, k := range key {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(pgx.Identifier{k}.Sanitize())
	}
	b.WriteString(") DO ")
	isKey := make(map[string]bool, len(key))
	for _, k := range key {
		isKey[k] = true
	}
	sets := make([]string, 0, len(columns))
	for i, c := range columns {
		if !isKey[c] {
			sets = append(sets, ids[i]+" = EXCLUDED."+ids[i])
		}
	}
	if len(sets) == 0 {
		b.WriteString("NOTHING")
		return b.String()
	}
	b.WriteString("UPDATE SET ")
	b.WriteString(strings.Join(sets, ", "))
	return b.String()
}

func itoa(i int) string {
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoa(i/10) + string(rune('0'+i%10))
}
