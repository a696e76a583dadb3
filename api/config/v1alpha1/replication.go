package v1alpha1

import (
	"fmt"
	"slices"
	"strings"
)

// QualifiedTable returns a CDC source table as `schema.table` (schema public when none is
// given).
func QualifiedTable(table string) string {
	if strings.Contains(table, ".") {
		return table
	}
	return "public." + table
}

// ReplicationRefusal says why connection c may not replicate table for a CDC pipeline, or ""
// when it may (see PostgresConnection.ReplicationTables). Pure, so it is table-tested.
func (c *PostgresConnection) ReplicationRefusal(table string) string {
	q := QualifiedTable(table)
	switch {
	case len(c.ReplicationTables) > 0:
		if slices.ContainsFunc(c.ReplicationTables, func(t string) bool { return QualifiedTable(t) == q }) {
			return ""
		}
		return fmt.Sprintf("table %s is not among connection %q's replicationTables (%s)", q, c.Name,
			strings.Join(c.ReplicationTables, ", "))
	case c.IsSet():
		return fmt.Sprintf("connection %q is shared (it has a grant) and lists no replicationTables: "+
			"no CDC pipeline may replicate through it", c.Name)
	}
	return ""
}
