package v1alpha1

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const grantsBase = `apiVersion: config.etl.sluice.dev/v1alpha1
kind: OperatorConfig
runner: {image: sluice:test}
stateConnection: state
postgres:
  - name: state
    dsnSecret: {name: state, key: dsn}
`

func TestParseRejectsUnknownFields(t *testing.T) {
	for _, doc := range []string{
		grantsBase + "  - name: orders\n    dsnSecret: {name: s, key: dsn}\n    namespace: [team-a]\n",
		grantsBase + "tenancy: {default: NoNamespaces}\n",
		grantsBase + "allowedTargets: {grants: [{targets: [], namespaceSelectors: {}}]}\n",
	} {
		if _, err := Parse([]byte(doc)); err == nil || !strings.Contains(err.Error(), "unknown field") {
			t.Errorf("a misspelt field passed: %v\n%s", err, doc)
		}
	}
}

func TestGrants(t *testing.T) {
	doc := grantsBase + `  - name: orders
    dsnSecret: {name: orders, key: dsn}
    namespaces: [team-a]
    namespaceSelector:
      matchLabels: {sluice.dev/tenant: orders}
  - name: open
    dsnSecret: {name: open, key: dsn}
  - name: everyone
    dsnSecret: {name: everyone, key: dsn}
    namespaceSelector: {}
elasticsearch:
  - name: search
    urls: [http://es:9200]
    namespaceSelector:
      matchExpressions:
        - {key: tier, operator: In, values: [gold, silver]}
allowedTargets:
  postgresTables: [analytics.orders, analytics.free]
  elasticsearchIndexes: [orders]
  grants:
    - targets: [analytics.orders, es:orders]
      namespaces: [team-a]
    - targets: [analytics.orders]
      namespaceSelector:
        matchExpressions:
          - {key: orders-writer, operator: Exists}
`
	for _, def := range []string{"", "tenancy: {defaultGrant: NoNamespaces}\n"} {
		cfg, err := Parse([]byte(doc + def))
		if err != nil {
			t.Fatal(err)
		}
		g := cfg.Grants()
		open := def == ""
		for _, tc := range []struct {
			name        string
			kind, conn  string
			target      string
			ns          string
			labels      map[string]string
			want        bool
			wantDefault bool // the answer is the default grant's
		}{
			{name: "named namespace", kind: ConnPostgres, conn: "orders", ns: "team-a", want: true},
			{name: "not named, no label", kind: ConnPostgres, conn: "orders", ns: "team-b", want: false},
			{name: "by label", kind: ConnPostgres, conn: "orders", ns: "team-b", labels: map[string]string{"sluice.dev/tenant": "orders"}, want: true},
			{name: "wrong label value", kind: ConnPostgres, conn: "orders", ns: "team-b", labels: map[string]string{"sluice.dev/tenant": "billing"}, want: false},
			{name: "no grant: the default", kind: ConnPostgres, conn: "open", ns: "team-b", wantDefault: true},
			{name: "empty selector: everyone", kind: ConnPostgres, conn: "everyone", ns: "anyone", want: true},
			{name: "unknown connection: the default", kind: ConnPostgres, conn: "missing", ns: "team-b", wantDefault: true},
			{name: "same name, other kind", kind: ConnElasticsearch, conn: "orders", ns: "team-a", wantDefault: true},
			{name: "In expression", kind: ConnElasticsearch, conn: "search", ns: "x", labels: map[string]string{"tier": "silver"}, want: true},
			{name: "In expression, other value", kind: ConnElasticsearch, conn: "search", ns: "x", labels: map[string]string{"tier": "bronze"}, want: false},
			{name: "target by name", target: "analytics.orders", ns: "team-a", want: true},
			{name: "target by a second grant", target: "analytics.orders", ns: "team-c", labels: map[string]string{"orders-writer": ""}, want: true},
			{name: "target refused", target: "analytics.orders", ns: "team-c", want: false},
			{name: "es target", target: "es:orders", ns: "team-a", want: true},
			{name: "es target refused", target: "es:orders", ns: "team-b", labels: map[string]string{"orders-writer": "y"}, want: false},
			{name: "target without grant", target: "analytics.free", ns: "team-z", wantDefault: true},
		} {
			want := tc.want
			if tc.wantDefault {
				want = open
			}
			var got bool
			if tc.target != "" {
				got = g.TargetAllowed(tc.target, tc.ns, tc.labels)
			} else {
				got = g.ConnectionAllowed(tc.kind, tc.conn, tc.ns, tc.labels)
			}
			if got != want {
				t.Errorf("default %q, %s: got %v, want %v", cfg.Tenancy.Default(), tc.name, got, want)
			}
		}
	}
}

func TestGrantsCheck(t *testing.T) {
	cfg := &OperatorConfig{
		Tenancy:  Tenancy{DefaultGrant: GrantNoNamespaces},
		Postgres: []PostgresConnection{{Name: "src", Grant: Grant{Namespaces: []string{"team-a"}}}, {Name: "dst", Grant: Grant{NamespaceSelector: &metav1.LabelSelector{}}}},
		AllowedTargets: AllowedTargets{PostgresTables: []string{"analytics.t"},
			Grants: []TargetGrant{{Targets: []string{"analytics.t"}, Grant: Grant{Namespaces: []string{"team-a", "team-b"}}}}},
	}
	g := cfg.Grants()
	use := Use{Connections: [][2]string{{ConnPostgres, "src"}, {ConnPostgres, "dst"}}, Target: "analytics.t"}
	for _, tc := range []struct {
		ns, reason string
	}{
		{"team-a", ""},
		{"team-b", ReasonConnectionNotGranted},
		{"team-c", ReasonConnectionNotGranted},
	} {
		r := g.Check(use, tc.ns, nil)
		switch {
		case tc.reason == "" && r != nil:
			t.Errorf("%s: refused: %v", tc.ns, r)
		case tc.reason != "" && (r == nil || r.Reason != tc.reason):
			t.Errorf("%s: got %v, want %s", tc.ns, r, tc.reason)
		case r != nil && (!strings.Contains(r.Message, `"`+tc.ns+`"`) || !strings.Contains(r.Message, `"src"`)):
			t.Errorf("%s: the message names neither the namespace nor the connection: %s", tc.ns, r.Message)
		}
	}
	cfg.Postgres[0].Namespaces = append(cfg.Postgres[0].Namespaces, "team-c")
	if r := cfg.Grants().Check(use, "team-c", nil); r == nil || r.Reason != ReasonTargetNotGranted || !strings.Contains(r.Message, "analytics.t") {
		t.Errorf("team-c's target: %v", r)
	}
}

func TestValidateTenancy(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{"tenancy: {defaultGrant: Closed}\n", "tenancy.defaultGrant"},
		{"tenancy: {admissionPolicy: Enforce}\n", "tenancy.admissionPolicy"},
		{"allowedTargets: {postgresTables: [analytics.a], grants: [{targets: [analytics.b], namespaces: [x]}]}\n", `"analytics.b" is not a whitelisted target`},
		{"allowedTargets: {postgresTables: [analytics.a], grants: [{targets: [analytics.a]}]}\n", "namespaces or namespaceSelector is required"},
		{"allowedTargets: {postgresTables: [analytics.a], grants: [{targets: [analytics.a], namespaces: [Team_A]}]}\n", `"Team_A"`},
		{"allowedTargets: {postgresTables: [analytics.a], grants: [{targets: [analytics.a], namespaceSelector: {matchExpressions: [{key: k, operator: Near}]}}]}\n", "namespaceSelector"},
	} {
		_, err := Parse([]byte(grantsBase + tc.doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error naming %s", strings.TrimSpace(tc.doc), err, tc.want)
		}
	}
	if _, err := Parse([]byte(grantsBase + "tenancy: {defaultGrant: NoNamespaces, admissionPolicy: Deny}\n")); err != nil {
		t.Errorf("a valid tenancy: %v", err)
	}
}
