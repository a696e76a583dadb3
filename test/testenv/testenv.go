// Package testenv hands tests the real components that `make test-deps` brings up: a
// kube-apiserver with etcd (envtest), a PostgreSQL cluster and an Elasticsearch node.
//
// Each accessor reads the environment the Makefile sets. When a component is absent a test is
// skipped locally with a one-line reason, and fails when CI=true: in CI nothing is skipped
// silently.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Environment variables that `make test-deps` sets (see hack/test-env.sh).
const (
	EnvKubeAssets  = "KUBEBUILDER_ASSETS"
	EnvPostgresDSN = "SLUICE_TEST_PG_DSN"
	EnvElasticURL  = "SLUICE_TEST_ES_URL"
)

// TB is the part of testing.TB (and of Ginkgo's GinkgoT()) that testenv needs.
type TB interface {
	Helper()
	Skip(args ...any)
	Fatalf(format string, args ...any)
	Cleanup(func())
}

// InCI reports whether the tests run in CI, where a missing component is a failure.
func InCI() bool { return os.Getenv("CI") == "true" }

// missing skips the test, or fails it in CI.
func missing(t TB, component, env string) {
	t.Helper()
	msg := fmt.Sprintf("%s not available: %s is not set (run 'make test-deps' or 'make test')", component, env)
	if InCI() {
		t.Fatalf("%s; CI=true, so this is a failure", msg)
	}
	t.Skip(msg)
}

// KubeAssets returns the directory holding etcd and kube-apiserver.
func KubeAssets(t TB) string {
	t.Helper()
	return binDir(t, "kube-apiserver", EnvKubeAssets, "etcd", "kube-apiserver")
}

// binDir returns the directory that the variable env names, which holds the binaries bins of
// component: missing, the test is skipped (a failure in CI); without one of them, it fails.
func binDir(t TB, component, env string, bins ...string) string {
	t.Helper()
	dir := os.Getenv(env)
	if dir == "" {
		missing(t, component, env)
		return ""
	}
	for _, b := range bins {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil { // #nosec G703 -- the test bed's own directory
			t.Fatalf("%s=%s lacks %s: %v", env, dir, b, err)
		}
	}
	return dir
}

// Kubectl returns the path of the kubectl binary built next to the API server.
func Kubectl(t TB) string {
	t.Helper()
	p := filepath.Join(KubeAssets(t), "kubectl")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("kubectl not found: %v", err)
	}
	return p
}

// PostgresDSN returns the DSN of the test cluster's main database.
func PostgresDSN(t TB) string {
	t.Helper()
	dsn := os.Getenv(EnvPostgresDSN)
	if dsn == "" {
		missing(t, "PostgreSQL", EnvPostgresDSN)
	}
	return dsn
}

// NewPostgresDB creates a database of its own for the calling test and drops it at cleanup,
// so that test packages running in parallel never see each other's tables. It returns the
// database's DSN.
func NewPostgresDB(t TB) string {
	t.Helper()
	base := PostgresDSN(t)
	name := "t_" + randomSuffix()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("connect to test postgres: %v", err)
	}
	defer func() { _ = conn.Close(context.Background()) }()
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, base)
		if err != nil {
			return
		}
		defer func() { _ = c.Close(context.Background()) }()
		_, _ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("parse %s: %v", EnvPostgresDSN, err)
	}
	u.Path = "/" + name
	return u.String()
}

// ElasticsearchURL returns the URL of the test Elasticsearch node.
func ElasticsearchURL(t TB) string {
	t.Helper()
	u := os.Getenv(EnvElasticURL)
	if u == "" {
		missing(t, "Elasticsearch", EnvElasticURL)
	}
	return u
}

// UniqueName returns prefix followed by a random lowercase suffix: an index or table name that
// no other test uses.
func UniqueName(prefix string) string { return prefix + randomSuffix() }

func randomSuffix() string {
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// RepoRoot returns the repository's top directory (where go.mod is).
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return strings.TrimSuffix(filepath.Dir(file), filepath.FromSlash("/test/testenv"))
}
