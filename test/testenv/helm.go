package testenv

import (
	"os"
	"path/filepath"
)

// EnvHelm names the helm binary that `make test-deps` builds (hack/helm.sh install).
const EnvHelm = "SLUICE_TEST_HELM"

// Helm returns the path of the helm binary. Missing, the test is skipped (a failure in CI).
func Helm(t TB) string {
	t.Helper()
	p := os.Getenv(EnvHelm)
	if p == "" {
		missing(t, "helm", EnvHelm)
		return ""
	}
	if _, err := os.Stat(p); err != nil { // #nosec G703 -- the test bed's own binary
		t.Fatalf("%s=%s: %v", EnvHelm, p, err)
	}
	return p
}

// HelmEnv is the environment for running helm in a test: the process's own, with helm's cache,
// configuration and data under dir, so that a test neither reads nor writes the user's.
func HelmEnv(dir string) []string {
	return append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(dir, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(dir, "config"),
		"HELM_DATA_HOME="+filepath.Join(dir, "data"),
	)
}
