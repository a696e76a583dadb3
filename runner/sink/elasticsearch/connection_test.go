package elasticsearch

import (
	"context"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/failure"
)

func TestResolveConnection(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(ca, []byte("PEM"), 0o600); err != nil {
		t.Fatal(err)
	}
	one := &configv1.OperatorConfig{Elasticsearch: []configv1.ElasticsearchConnection{
		{Name: "search", URLs: []string{"https://es:9200"}, CredentialsSecret: "es-creds"}}}
	two := &configv1.OperatorConfig{Elasticsearch: []configv1.ElasticsearchConnection{
		{Name: "other", URLs: []string{"http://a:9200"}}, {Name: "default", URLs: []string{"http://b:9200"}}}}
	cases := []struct {
		name string
		cfg  *configv1.OperatorConfig
		conn string
		env  map[string]string
		want Connection
		err  string
	}{
		{name: "the only connection, with an API key", cfg: one,
			env:  map[string]string{"SLUICE_ES_SEARCH_API_KEY": "k3y", "SLUICE_ES_SEARCH_USERNAME": "ignored"},
			want: Connection{Name: "search", URLs: []string{"https://es:9200"}, APIKey: "k3y", Username: "ignored"}},
		{name: "basic auth", cfg: one, conn: "search",
			env:  map[string]string{"SLUICE_ES_SEARCH_USERNAME": "sluice", "SLUICE_ES_SEARCH_PASSWORD": " pw "},
			want: Connection{Name: "search", URLs: []string{"https://es:9200"}, Username: "sluice", Password: " pw "}},
		{name: "a CA bundle named by the environment", cfg: one,
			env:  map[string]string{"SLUICE_ES_SEARCH_API_KEY": "k", "SLUICE_ES_SEARCH_CA_FILE": ca},
			want: Connection{Name: "search", URLs: []string{"https://es:9200"}, APIKey: "k", CACert: []byte("PEM")}},
		{name: "a CA bundle named by the environment that the Secret lacks", cfg: one,
			env:  map[string]string{"SLUICE_ES_SEARCH_API_KEY": "k", "SLUICE_ES_SEARCH_CA_FILE": filepath.Join(dir, "nope")},
			want: Connection{Name: "search", URLs: []string{"https://es:9200"}, APIKey: "k"}},
		{name: "a CA bundle that cannot be read", cfg: one,
			env: map[string]string{"SLUICE_ES_SEARCH_API_KEY": "k", "SLUICE_ES_SEARCH_CA_FILE": dir},
			err: "read CA bundle"},
		{name: "credentials Secret without its variables", cfg: one, err: "neither SLUICE_ES_SEARCH_API_KEY nor SLUICE_ES_SEARCH_USERNAME is set"},
		{name: "several connections: the default one", cfg: two,
			want: Connection{Name: "default", URLs: []string{"http://b:9200"}}},
		{name: "several connections: a named one", cfg: two, conn: "other",
			want: Connection{Name: "other", URLs: []string{"http://a:9200"}}},
		{name: "an unknown connection", cfg: two, conn: "nope", err: `"nope" is not an Elasticsearch connection`},
		{name: "no connection at all", cfg: &configv1.OperatorConfig{}, err: "no Elasticsearch connection"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ResolveConnection(tc.cfg, tc.conn, func(k string) (string, bool) {
				v, ok := tc.env[k]
				return v, ok
			})
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || failure.Classify(err) != etlv1.ErrorBusiness {
					t.Fatalf("ResolveConnection = %+v, %v; want a business error containing %q", got, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Name != tc.want.Name || strings.Join(got.URLs, ",") != strings.Join(tc.want.URLs, ",") ||
				got.APIKey != tc.want.APIKey || got.Username != tc.want.Username || got.Password != tc.want.Password ||
				string(got.CACert) != string(tc.want.CACert) {
				t.Fatalf("ResolveConnection = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestCredentialsAndCABundleAreUsed runs Prepare against a TLS server standing in for
// Elasticsearch: the CA bundle makes its certificate trusted, and the credentials arrive.
func TestCredentialsAndCABundleAreUsed(t *testing.T) {
	var mu sync.Mutex
	var auth []string
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auth = append(auth, r.Header.Get("Authorization"))
		mu.Unlock()
		w.Header().Set("X-Elastic-Product", "Elasticsearch")
		_, _ = io.WriteString(w, `{"version":{"number":"8.19.21"}}`)
	}))
	defer srv.Close()
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	ca := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(ca, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := &configv1.OperatorConfig{
		Elasticsearch:  []configv1.ElasticsearchConnection{{Name: "tls", URLs: []string{srv.URL}, CredentialsSecret: "s"}},
		AllowedTargets: configv1.AllowedTargets{ElasticsearchIndexes: []string{"orders"}},
	}
	prepare := func(env map[string]string) error {
		s, err := Open(cfg, Target{Index: "orders", Key: []string{"id"}}, "tls", func(k string) (string, bool) {
			v, ok := env[k]
			return v, ok
		}, Options{})
		if err != nil {
			return err
		}
		defer func() { _ = s.Close(context.Background()) }()
		return s.Prepare(context.Background())
	}
	err := prepare(map[string]string{"SLUICE_ES_TLS_API_KEY": "k3y"})
	if err == nil || failure.Classify(err) != etlv1.ErrorBusiness || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("Prepare without the CA bundle = %v, want a business error about the certificate", err)
	}
	if err := prepare(map[string]string{"SLUICE_ES_TLS_API_KEY": "k3y", "SLUICE_ES_TLS_CA_FILE": ca}); err != nil {
		t.Fatalf("Prepare with an API key: %v", err)
	}
	if err := prepare(map[string]string{"SLUICE_ES_TLS_USERNAME": "u", "SLUICE_ES_TLS_PASSWORD": "p", "SLUICE_ES_TLS_CA_FILE": ca}); err != nil {
		t.Fatalf("Prepare with basic auth: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(auth) != 2 || auth[0] != "APIKey k3y" || auth[1] != "Basic dTpw" {
		t.Fatalf("Authorization headers %q, want the API key then basic auth", auth)
	}
}
