package testenv

import (
	"path/filepath"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// StartAPIServer starts a real etcd and kube-apiserver with Sluice's CRDs installed, and stops
// them at cleanup. It returns the client configuration.
func StartAPIServer(t TB) (*rest.Config, *envtest.Environment) {
	t.Helper()
	assets := KubeAssets(t)
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     []string{filepath.Join(RepoRoot(), "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start envtest (etcd + kube-apiserver from %s): %v", assets, err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	return cfg, env
}
