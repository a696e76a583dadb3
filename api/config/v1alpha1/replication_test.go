package v1alpha1

import (
	"strings"
	"testing"
)

func TestReplicationRefusal(t *testing.T) {
	cases := []struct {
		name   string
		conn   PostgresConnection
		table  string
		refuse string
	}{
		{"no grant, no list: any table", PostgresConnection{Name: "db"}, "orders", ""},
		{"listed, schema implied", PostgresConnection{Name: "db", ReplicationTables: []string{"public.orders"}}, "orders", ""},
		{"listed without schema", PostgresConnection{Name: "db", ReplicationTables: []string{"orders"}}, "public.orders", ""},
		{"other schema", PostgresConnection{Name: "db", ReplicationTables: []string{"public.orders"}}, "sales.orders", "not among"},
		{"not listed", PostgresConnection{Name: "db", ReplicationTables: []string{"public.orders"}}, "customers", "not among"},
		{"grant without list", PostgresConnection{Name: "db", Grant: Grant{Namespaces: []string{"team-a"}}}, "orders", "lists no replicationTables"},
		{"grant with list", PostgresConnection{Name: "db", Grant: Grant{Namespaces: []string{"team-a"}},
			ReplicationTables: []string{"public.orders"}}, "orders", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := c.conn.ReplicationRefusal(c.table)
			if (c.refuse == "") != (got == "") || !strings.Contains(got, c.refuse) {
				t.Fatalf("ReplicationRefusal(%q) = %q, want %q", c.table, got, c.refuse)
			}
		})
	}
}
