package cdc

import (
	"strings"
	"testing"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/failure"
)

func TestProblem(t *testing.T) {
	good := Facts{WALLevel: "logical", Role: "etl", Replication: true, Table: "public.orders", Exists: true,
		Identity: 'd', IdentityColumns: []string{"id"}, Columns: []string{"id", "name", "amount"}, Owner: true}
	cases := []struct {
		name    string
		edit    func(*Facts)
		keys    []string
		columns []string
		want    []string
	}{
		{"good", nil, []string{"id"}, nil, nil},
		{"good with columns", nil, []string{"id"}, []string{"id", "amount"}, nil},
		{"wal_level replica", func(f *Facts) { f.WALLevel = "replica" }, []string{"id"}, nil, []string{`wal_level is "replica"`}},
		{"no replication privilege", func(f *Facts) { f.Replication = false }, []string{"id"}, nil, []string{"ALTER ROLE etl REPLICATION"}},
		{"missing table", func(f *Facts) { f.Exists = false }, []string{"id"}, nil, []string{"public.orders does not exist"}},
		{"no primary key", func(f *Facts) { f.IdentityColumns = nil }, []string{"id"}, nil, []string{"has no primary key"}},
		{"identity nothing", func(f *Facts) { f.Identity = 'n'; f.IdentityColumns = nil }, []string{"id"}, nil, []string{"REPLICA IDENTITY NOTHING"}},
		{"keys are not the primary key", nil, []string{"name"}, nil, []string{"(name) are not table public.orders's primary key (id)"}},
		{"keys are a subset of a composite key", func(f *Facts) { f.IdentityColumns = []string{"id", "name"} }, []string{"id"}, nil, []string{"primary key (id, name)"}},
		{"composite key in another order", func(f *Facts) { f.IdentityColumns = []string{"name", "id"} }, []string{"id", "name"}, nil, nil},
		{"identity index", func(f *Facts) { f.Identity = 'i'; f.IdentityColumns = []string{"name"} }, []string{"id"}, nil, []string{"replica identity index (name)"}},
		{"identity full takes any key columns", func(f *Facts) { f.Identity = 'f'; f.IdentityColumns = nil }, []string{"name"}, nil, nil},
		{"unknown key column with full identity", func(f *Facts) { f.Identity = 'f' }, []string{"nope"}, nil, []string{`key column "nope" is not a column`}},
		{"unknown column", nil, []string{"id"}, []string{"id", "nope"}, []string{`"nope" is not a column`}},
		{"columns lack the key", nil, []string{"id"}, []string{"amount"}, []string{`lacks key column "id"`}},
		{"cannot publish", func(f *Facts) { f.Owner = false }, []string{"id"}, nil, []string{"cannot publish it"}},
		{"a publication made by the owner", func(f *Facts) { f.Owner = false; f.PublicationExists = true }, []string{"id"}, nil, nil},
		{"several problems at once", func(f *Facts) { f.WALLevel = "minimal"; f.Replication = false }, []string{"id"}, nil,
			[]string{`wal_level is "minimal"`, "REPLICATION"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := good
			f.IdentityColumns = append([]string(nil), good.IdentityColumns...)
			if c.edit != nil {
				c.edit(&f)
			}
			err := Problem(f, c.keys, c.columns)
			if len(c.want) == 0 {
				if err != nil {
					t.Fatalf("Problem = %v, want none", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Problem = nil, want %q", c.want)
			}
			if failure.Classify(err) != etlv1.ErrorBusiness {
				t.Fatalf("Problem is %s, want a business error", failure.Classify(err))
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Problem = %q, want it to say %q", err, w)
				}
			}
		})
	}
}
