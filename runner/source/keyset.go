// Package source reads the reader query's output in keyset pages: every page is one indexed
// range query after the last committed row, never an OFFSET, so memory and time per page stay
// flat however large the source grows.
package source

import (
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Keyset is the SQL shape of a paged reader: the user's query wrapped as a subquery and the
// columns of its total order. Building the statements is pure, so it is table-tested.
type Keyset struct {
	// Query is the user's SELECT.
	Query string
	// Order is the keyset order: the cursor column then the key columns (incremental), or the
	// key columns alone (full).
	Order []string
	// Types are the SQL types of the Order columns, used to cast the checkpoint's text values
	// back to the column types so the comparison stays indexable.
	Types []string
	// Limit is the page size. A page reads one row more, to see whether the row after its
	// last one ties with it (see Reader.Read).
	Limit int
	// Bound is the comparison of the run's horizon with the cursor column ("<" or "<="),
	// empty for none (Full runs). The horizon is the page's last parameter.
	Bound string
	// BoundType is the type the horizon is cast to: timestamptz for a time horizon, the
	// cursor's type for a commit barrier.
	BoundType string
}

// subquery wraps the user's query. The newlines keep a trailing line comment in the query from
// swallowing the closing parenthesis; trailing semicolons are removed because a subquery may
// not have one.
func subquery(query string) string {
	q := strings.TrimRight(strings.TrimSpace(query), "; \t\r\n")
	return "(\n" + q + "\n) AS q"
}

func qualified(cols []string) []string {
	out := make([]string, len(cols))
	for i, c := range cols {
		out[i] = "q." + pgx.Identifier{c}.Sanitize()
	}
	return out
}

// DescribeSQL returns the statement whose description gives the reader's columns without
// running the query.
func DescribeSQL(query string) string {
	return "SELECT * FROM " + subquery(query)
}

// PageSQL returns the statement of a page. The first page of a run (no checkpoint) has no
// predicate; the next ones compare the row (order...) with the checkpoint, which Postgres
// turns into an index range scan when an index on the same columns exists:
//
//	SELECT * FROM (<query>) AS q WHERE (q.c, q.k) > (CAST($1::text AS t1), CAST($2::text AS t2))
//	  AND q.c < CAST($3::text AS timestamptz)
//	ORDER BY q.c, q.k LIMIT n+1
//
// The types carry their modifiers (character(4), numeric(12,2)): a cast to a bare character
// would cut the checkpoint to one character and read the same page forever.
func (k Keyset) PageSQL(after bool) string {
	var b strings.Builder
	cols := qualified(k.Order)
	b.WriteString("SELECT * FROM ")
	b.WriteString(subquery(k.Query))
	n := 0
	where := " WHERE "
	if after {
		b.WriteString(where + "(")
		where = " AND "
		b.WriteString(strings.Join(cols, ", "))
		b.WriteString(") > (")
		for i := range k.Order {
			if i > 0 {
				b.WriteString(", ")
			}
			n++
			fmt.Fprintf(&b, "CAST($%d::text AS %s)", n, k.Types[i])
		}
		b.WriteString(")")
	}
	if k.Bound != "" {
		n++
		fmt.Fprintf(&b, "%s%s %s CAST($%d::text AS %s)", where, cols[0], k.Bound, n, k.BoundType)
	}
	b.WriteString(" ORDER BY ")
	b.WriteString(strings.Join(cols, ", "))
	fmt.Fprintf(&b, " LIMIT %d", k.Limit+1)
	return b.String()
}

// MaxSQL returns the statement of the largest cursor value of the reader's output, as text.
func MaxSQL(query, cursor string) string {
	return "SELECT max(" + qualified([]string{cursor})[0] + ")::text FROM " + subquery(query)
}

// NullSQL returns the statement that finds one row whose nullable columns hold a NULL and
// returns its key columns as text. A row comparison never matches a NULL, so without this check a row
// with a NULL cursor would be skipped silently forever.
//
// A time cursor of 'infinity' is as unreachable: it never lies below a read horizon.
func NullSQL(query string, nullable, key, infinite []string) string {
	conds := qualified(nullable)
	for i := range conds {
		conds[i] += " IS NULL"
	}
	for _, c := range qualified(infinite) {
		conds = append(conds, c+" = 'infinity'")
	}
	keys := qualified(key)
	for i := range keys {
		keys[i] += "::text"
	}
	return "SELECT " + strings.Join(keys, ", ") + " FROM " + subquery(query) +
		" WHERE " + strings.Join(conds, " OR ") + " LIMIT 1"
}
