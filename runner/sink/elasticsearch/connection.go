package elasticsearch

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	es8 "github.com/elastic/go-elasticsearch/v8"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	"github.com/sluice-dev/sluice/runner/failure"
)

// Connection is an Elasticsearch connection of the operator's configuration with its
// credentials, as a runner finds them in its environment.
type Connection struct {
	// Name is the connection's name in the operator's configuration.
	Name string
	URLs []string
	// APIKey, when set, is sent instead of Username and Password.
	APIKey             string
	Username, Password string
	// CACert is a PEM bundle of the certificate authorities to trust instead of the system's.
	CACert []byte
}

// ResolveConnection finds the named connection (empty: the configuration's only one, or the
// one named `default`) and its credentials: an API key, or a username and password, from the
// variables of configv1.ElasticsearchEnv, and an optional CA bundle from the file named by
// configv1.ElasticsearchCAFileEnv, else at configv1.ElasticsearchCAPath. A bundle that does not
// exist means none: the manager names the file whether or not the Secret holds one. Every
// problem is a business error that names the connection and the variable, never a value.
func ResolveConnection(cfg *configv1.OperatorConfig, name string, lookupEnv func(string) (string, bool)) (Connection, error) {
	c := cfg.ElasticsearchConnection(name)
	if c == nil {
		if name == "" {
			return Connection{}, failure.Business(errors.New(
				"no Elasticsearch connection: set target.connection, or configure exactly one (or one named `default`)"))
		}
		return Connection{}, failure.Business(fmt.Errorf("%q is not an Elasticsearch connection of the operator's configuration", name))
	}
	conn := Connection{Name: c.Name, URLs: c.URLs}
	if len(conn.URLs) == 0 {
		return Connection{}, failure.Business(fmt.Errorf("elasticsearch connection %q has no urls", c.Name))
	}
	env := func(key string) string {
		v, _ := lookupEnv(configv1.ElasticsearchEnv(c.Name, key))
		return strings.TrimSpace(v)
	}
	conn.APIKey = env(configv1.ESAPIKeyKey)
	conn.Username = env(configv1.ESUsernameKey)
	if v, ok := lookupEnv(configv1.ElasticsearchEnv(c.Name, configv1.ESPasswordKey)); ok {
		conn.Password = v // passwords may begin or end with spaces
	}
	if c.CredentialsSecret != "" && conn.APIKey == "" && conn.Username == "" {
		return Connection{}, failure.Business(fmt.Errorf(
			"elasticsearch connection %q: credentials Secret %q is configured but neither %s nor %s is set",
			c.Name, c.CredentialsSecret, configv1.ElasticsearchEnv(c.Name, configv1.ESAPIKeyKey),
			configv1.ElasticsearchEnv(c.Name, configv1.ESUsernameKey)))
	}
	caFile, ok := lookupEnv(configv1.ElasticsearchCAFileEnv(c.Name))
	if !ok || strings.TrimSpace(caFile) == "" {
		caFile = configv1.ElasticsearchCAPath(c.Name)
	}
	pem, err := os.ReadFile(caFile) // #nosec G304 -- a path of the operator's own configuration
	switch {
	case err == nil:
		conn.CACert = pem
	case !errors.Is(err, os.ErrNotExist):
		return Connection{}, failure.Business(fmt.Errorf("elasticsearch connection %q: read CA bundle %s: %w", c.Name, caFile, err))
	}
	return conn, nil
}

// Timeouts of the HTTP client. A bulk request may legitimately take long on a busy cluster,
// so only the wait for the answer's headers is bounded, generously: a request cut short on our
// side may still be applied by Elasticsearch later.
const (
	dialTimeout           = 10 * time.Second
	tlsTimeout            = 10 * time.Second
	responseHeaderTimeout = 2 * time.Minute
)

// newClient builds the client of a connection. Retries are off: the sink retries failed
// items itself, with backoff, and the transport would otherwise copy every request body to
// be able to resend it.
func newClient(c Connection, rt http.RoundTripper) (*es8.Client, error) {
	if rt == nil {
		tr := &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: dialTimeout, KeepAlive: 15 * time.Second}).DialContext,
			TLSHandshakeTimeout:   tlsTimeout,
			ResponseHeaderTimeout: responseHeaderTimeout,
			MaxIdleConnsPerHost:   8,
			IdleConnTimeout:       90 * time.Second,
			TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12},
		}
		if len(c.CACert) > 0 {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(c.CACert) {
				return nil, failure.Business(fmt.Errorf("elasticsearch connection %q: the CA bundle holds no PEM certificate", c.Name))
			}
			tr.TLSClientConfig.RootCAs = pool
		}
		rt = tr
	}
	cfg := es8.Config{
		Addresses:    c.URLs,
		Transport:    rt,
		DisableRetry: true,
	}
	if c.APIKey != "" {
		cfg.APIKey = c.APIKey
	} else {
		cfg.Username, cfg.Password = c.Username, c.Password
	}
	client, err := es8.NewClient(cfg)
	if err != nil {
		// The client's errors quote URLs, which may carry credentials: name the connection.
		return nil, failure.Business(fmt.Errorf("elasticsearch connection %q: invalid urls", c.Name))
	}
	return client, nil
}
