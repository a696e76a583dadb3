package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/sluice-dev/sluice/test/testenv"
)

const (
	// sluiceImage is the image the suite's node agent plays with the sluice binary; the Jobs
	// use another tag of its repository, which must run too.
	sluiceImage = "ghcr.io/sluice-dev/sluice:latest"
	// sluiceVersion is stamped into the binary the suite builds, so that a log proves which
	// binary ran.
	sluiceVersion = "e2e-build"
	// shImage and kubectlImage are test-only images: the suite's node agent maps them to
	// /bin/sh and to kubectl (--extra-image).
	shImage      = "test.sluice.dev/sh:1"
	kubectlImage = "test.sluice.dev/kubectl:1"
)

var (
	kubectlPath string
	kubeconfig  string
	// clusterEnv is the environment of hack/cluster.sh for the suite's own cluster.
	clusterEnv []string
	runDir     string
	// suiteReady is set once the cluster is up; anyFailed once a spec failed. The state
	// directory is kept when either says something went wrong.
	suiteReady bool
	anyFailed  bool
)

func TestE2E(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "e2e: the local cluster")
}

var _ = BeforeSuite(func() {
	assets := testenv.KubeAssets(GinkgoT())
	kubectlPath = testenv.Kubectl(GinkgoT())
	root := testenv.RepoRoot()

	var err error
	// Not under /tmp: the node agent rewrites any env value below a pod's mount paths, its own
	// KUBECONFIG and HOME included, and runner pods mount an emptyDir at /tmp.
	parent := filepath.Join(cacheDir(), "e2e")
	Expect(os.MkdirAll(parent, 0o700)).To(Succeed())
	runDir, err = os.MkdirTemp(parent, "sluice-e2e-")
	Expect(err).NotTo(HaveOccurred())
	binary := filepath.Join(runDir, "sluice")
	By("building the sluice binary the node agent runs")
	build := exec.Command("go", "build", "-o", binary, "-ldflags", "-X main.version="+sluiceVersion, ".")
	build.Dir = root
	out, err := build.CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), "go build: %s", out)

	port := freePorts()
	clusterEnv = append(os.Environ(),
		"SLUICE_RUN="+runDir,
		"SLUICE_CLUSTER_PORT="+strconv.Itoa(port),
		"SLUICE_K8S_BIN="+assets,
		"SLUICE_BINARY="+binary,
		"SLUICE_IMAGE="+sluiceImage,
		"SLUICE_NODE_NAME=sluice-e2e",
		"SLUICE_NODEAGENT_ARGS=--extra-image "+repo(shImage)+"=/bin/sh --extra-image "+repo(kubectlImage)+"="+kubectlPath,
	)
	By(fmt.Sprintf("bringing up the cluster in %s (API server on port %d)", runDir, port))
	start := time.Now()
	kubeconfig = strings.TrimSpace(cluster("up"))
	_, _ = fmt.Fprintf(GinkgoWriter, "cluster up in %s, kubeconfig %s\n", time.Since(start).Round(time.Millisecond), kubeconfig)
	installOperator()
	suiteReady = true
})

var _ = ReportAfterEach(func(r SpecReport) {
	if r.Failed() {
		anyFailed = true
	}
})

var _ = AfterSuite(func() {
	if runDir == "" {
		return
	}
	if clusterEnv != nil {
		cluster("down")
	}
	if anyFailed || !suiteReady || os.Getenv("SLUICE_E2E_KEEP") == "true" {
		_, _ = fmt.Fprintf(os.Stderr, "e2e: kept the cluster's state and logs in %s\n", runDir)
		return
	}
	Expect(os.RemoveAll(runDir)).To(Succeed())
})

// cacheDir is the test bed's cache root, as hack/cluster.sh computes it.
func cacheDir() string {
	if d := os.Getenv("SLUICE_CACHE"); d != "" {
		return d
	}
	d, err := os.UserCacheDir()
	Expect(err).NotTo(HaveOccurred())
	return filepath.Join(d, "sluice")
}

// cluster runs hack/cluster.sh with the suite's environment and returns its stdout.
func cluster(verb string) string {
	cmd := exec.Command(filepath.Join(testenv.RepoRoot(), "hack", "cluster.sh"), verb)
	cmd.Env = clusterEnv
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	_, _ = GinkgoWriter.Write(stderr.Bytes())
	Expect(err).NotTo(HaveOccurred(), "hack/cluster.sh %s: %s", verb, stderr.String())
	return stdout.String()
}

// freePorts returns a port P such that P..P+3 are free (the API server, etcd's two ports and
// the node agent's), or SLUICE_E2E_CLUSTER_PORT when set.
func freePorts() int {
	if p := os.Getenv("SLUICE_E2E_CLUSTER_PORT"); p != "" {
		n, err := strconv.Atoi(p)
		Expect(err).NotTo(HaveOccurred(), "SLUICE_E2E_CLUSTER_PORT")
		return n
	}
	for range 50 {
		base := 20000 + rand.IntN(10000) // #nosec G404 -- a port, not a secret
		free := true
		for p := base; p < base+4 && free; p++ {
			l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
			if err != nil {
				free = false
				continue
			}
			_ = l.Close()
		}
		if free {
			return base
		}
	}
	Fail("no four free consecutive ports found")
	return 0
}

// repo is an image reference without its tag.
func repo(image string) string {
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		return image[:i]
	}
	return image
}

// kubectl runs the real kubectl against the suite's cluster and returns its stdout.
func kubectl(args ...string) (string, error) {
	return kubectlIn("", args...)
}

// kubectlIn runs kubectl with stdin.
func kubectlIn(stdin string, args ...string) (string, error) {
	cmd := exec.Command(kubectlPath, append([]string{"--kubeconfig", kubeconfig}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// mustKubectl runs kubectl and fails the spec when it fails.
func mustKubectl(args ...string) string {
	GinkgoHelper()
	out, err := kubectl(args...)
	Expect(err).NotTo(HaveOccurred())
	return out
}

// apply applies a manifest in namespace ns.
func apply(ns, manifest string) {
	GinkgoHelper()
	_, err := kubectlIn(manifest, "apply", "-n", ns, "-f", "-")
	Expect(err).NotTo(HaveOccurred())
}

// newNamespace creates a namespace of the spec's own, deleted after it, and waits for its
// default service account (pods cannot be created before it exists).
func newNamespace() string {
	GinkgoHelper()
	ns := fmt.Sprintf("e2e-%d", rand.Uint32()) // #nosec G404 -- a name, not a secret
	mustKubectl("create", "namespace", ns)
	DeferCleanup(func() { _, _ = kubectl("delete", "namespace", ns, "--wait=false") })
	Eventually(func() error {
		_, err := kubectl("get", "serviceaccount", "default", "-n", ns)
		return err
	}).WithTimeout(30 * time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())
	return ns
}

// getJSON decodes `kubectl get -o json` into out.
func getJSON(out any, args ...string) error {
	s, err := kubectl(append([]string{"get", "-o", "json"}, args...)...)
	if err != nil {
		return err
	}
	return json.Unmarshal([]byte(s), out)
}
