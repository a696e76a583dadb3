package smoke

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/discovery"
	"sigs.k8s.io/controller-runtime/pkg/client"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/test/testenv"
)

func TestAPIServerServesNamespacesAndOurCRD(t *testing.T) {
	cfg, env := testenv.StartAPIServer(t)

	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatalf("discovery client: %v", err)
	}
	info, err := dc.ServerVersion()
	if err != nil {
		t.Fatalf("server version: %v", err)
	}
	if !strings.HasPrefix(info.GitVersion, "v1.37.") {
		t.Errorf("kube-apiserver version = %s, want v1.37.x", info.GitVersion)
	}
	t.Logf("real kube-apiserver %s (etcd and kube-apiserver from %s)", info.GitVersion, env.BinaryAssetsDirectory)

	if err := etlv1.AddToScheme(env.Scheme); err != nil {
		t.Fatalf("add scheme: %v", err)
	}
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var nss corev1.NamespaceList
	if err := c.List(ctx, &nss); err != nil {
		t.Fatalf("list namespaces: %v", err)
	}
	found := false
	for _, ns := range nss.Items {
		found = found || ns.Name == "default"
	}
	if !found {
		t.Errorf("namespace default not listed among %d namespaces", len(nss.Items))
	}

	// The CRD was installed from config/crd/bases: its resource is served.
	resources, err := dc.ServerResourcesForGroupVersion(etlv1.GroupVersion.String())
	if err != nil {
		t.Fatalf("resources of %s: %v", etlv1.GroupVersion, err)
	}
	served := false
	for _, r := range resources.APIResources {
		served = served || r.Name == "etlpipelines"
	}
	if !served {
		t.Errorf("etlpipelines not served by %s", etlv1.GroupVersion)
	}
}
