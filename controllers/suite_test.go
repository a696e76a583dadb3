package controllers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/test/testenv"
)

// operatorNamespace is where the manager under test puts runner Jobs.
const operatorNamespace = "sluice-system"

var (
	// k8sClient talks to the API server directly, as a cluster admin.
	k8sClient client.Client
	// adminConfig is the suite's API server, as a cluster admin.
	adminConfig *rest.Config
	// suiteScheme knows the pipelines and the built-in kinds.
	suiteScheme *runtime.Scheme
	// writes counts the reconciler's own writes, per pipeline.
	writes *countingClient
	// operatorConfig is the example configuration of config/manager, which the manager runs.
	operatorConfig *configv1.OperatorConfig
)

func TestControllers(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Controllers Suite")
}

var _ = BeforeSuite(func() {
	ctrl.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))

	restCfg, _ := testenv.StartAPIServer(GinkgoT())
	adminConfig = restCfg

	scheme := runtime.NewScheme()
	suiteScheme = scheme
	Expect(clientgoscheme.AddToScheme(scheme)).To(Succeed())
	Expect(etlv1.AddToScheme(scheme)).To(Succeed())

	var err error
	k8sClient, err = client.New(restCfg, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())
	Expect(k8sClient.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: operatorNamespace}})).To(Succeed())

	operatorConfig = exampleConfig(GinkgoT())
	// Short enough for a spec to see a runner that never starts, long enough for every other
	// spec to claim its runs.
	operatorConfig.Runner.StartDeadline = &metav1.Duration{Duration: 8 * time.Second}
	operatorConfig.Runner.ProgressDeadline = &metav1.Duration{Duration: 4 * time.Second}
	// The schedule specs tick every two seconds.
	operatorConfig.Runner.MinScheduleInterval = &metav1.Duration{Duration: time.Second}

	// The manager and the runner act as their service accounts, with the RBAC of config/rbac:
	// every spec also proves that the roles suffice.
	for _, f := range []string{"service_account.yaml", "role.yaml", "role_binding.yaml", "runner_policy.yaml", "leader_election_role.yaml", "leader_election_role_binding.yaml"} {
		applyManifest(context.Background(), repoFile("config/rbac/"+f))
	}

	// The real manager, wired as `sluice manager` wires it.
	mgr, err := ctrl.NewManager(impersonate(restCfg, "sluice-manager"), ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  CacheOptions(operatorNamespace),
		// As deployed: the manager reconciles only once it holds the Lease.
		LeaderElection:                true,
		LeaderElectionID:              "sluice.etl.sluice.dev",
		LeaderElectionNamespace:       operatorNamespace,
		LeaderElectionReleaseOnCancel: true,
	})
	Expect(err).NotTo(HaveOccurred())
	writes = &countingClient{Client: mgr.GetClient(), counts: map[string]int{}}
	// The operator's ConfigMap holds the suite's configuration; the reloader watches it.
	writeConfigMap(context.Background(), operatorConfig)
	configs = NewConfigStore(operatorConfig)
	changed := make(chan event.GenericEvent, 64)
	r := &ETLPipelineReconciler{
		Client:        writes,
		APIReader:     mgr.GetAPIReader(),
		Recorder:      mgr.GetEventRecorder(ControllerName),
		Config:        operatorConfig,
		Configs:       configs,
		ConfigChanged: changed,
		Namespace:     operatorNamespace,
		// No jitter: the schedule specs wait for exact ticks.
		Jitter: func(d time.Duration) time.Duration { return d },
	}
	Expect(r.SetupWithManager(mgr, controller.Options{MaxConcurrentReconciles: 4, SkipNameValidation: ptr.To(true)})).To(Succeed())
	reloader := &ConfigReconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder(ControllerName), Store: configs,
		Namespace: operatorNamespace, Name: operatorConfig.Runner.ConfigMapName, Key: operatorConfig.Runner.ConfigMapKey, Changed: changed,
		Policy: &GrantsPolicy{Client: mgr.GetClient(), Reader: mgr.GetAPIReader()}}
	Expect(reloader.SetupWithManager(mgr)).To(Succeed())

	ctx, cancel := context.WithCancel(context.Background())
	DeferCleanup(cancel)
	go func() {
		defer GinkgoRecover()
		Expect(mgr.Start(ctx)).To(Succeed())
	}()
})

// configs is the configuration store the suite's manager reads.
var configs *ConfigStore

// writeConfigMap writes cfg into the operator's ConfigMap, creating it if need be.
func writeConfigMap(ctx context.Context, cfg *configv1.OperatorConfig) {
	data, err := json.Marshal(cfg)
	Expect(err).NotTo(HaveOccurred())
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: operatorNamespace, Name: cfg.Runner.ConfigMapName}}
	_, err = controllerutil.CreateOrUpdate(ctx, k8sClient, cm, func() error {
		cm.Data = map[string]string{cfg.Runner.ConfigMapKey: string(data)}
		return nil
	})
	Expect(err).NotTo(HaveOccurred())
}

// copyConfig returns a deep copy of cfg.
func copyConfig(cfg *configv1.OperatorConfig) *configv1.OperatorConfig {
	data, err := json.Marshal(cfg)
	Expect(err).NotTo(HaveOccurred())
	out := &configv1.OperatorConfig{}
	Expect(json.Unmarshal(data, out)).To(Succeed())
	return out
}

// countingClient counts the writes a reconciler makes, per pipeline (a Job's writes count for
// its pipeline), so that a spec can assert that a pipeline at rest costs nothing.
type countingClient struct {
	client.Client
	mu     sync.Mutex
	counts map[string]int
}

func (c *countingClient) record(obj client.Object) {
	key := obj.GetNamespace() + "/" + obj.GetName()
	if _, isJob := obj.(*batchv1.Job); isJob {
		key = obj.GetAnnotations()[etlv1.AnnotationPipeline]
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.counts[key]++
}

// Writes returns how many writes the reconciler made for pipeline namespace/name.
func (c *countingClient) Writes(namespace, name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counts[namespace+"/"+name]
}

func (c *countingClient) Create(ctx context.Context, obj client.Object, opts ...client.CreateOption) error {
	c.record(obj)
	return c.Client.Create(ctx, obj, opts...)
}

func (c *countingClient) Update(ctx context.Context, obj client.Object, opts ...client.UpdateOption) error {
	c.record(obj)
	return c.Client.Update(ctx, obj, opts...)
}

func (c *countingClient) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
	c.record(obj)
	return c.Client.Patch(ctx, obj, patch, opts...)
}

func (c *countingClient) Delete(ctx context.Context, obj client.Object, opts ...client.DeleteOption) error {
	c.record(obj)
	return c.Client.Delete(ctx, obj, opts...)
}

func (c *countingClient) Status() client.SubResourceWriter {
	return &countingStatus{SubResourceWriter: c.Client.Status(), c: c}
}

type countingStatus struct {
	client.SubResourceWriter
	c *countingClient
}

func (s *countingStatus) Update(ctx context.Context, obj client.Object, opts ...client.SubResourceUpdateOption) error {
	s.c.record(obj)
	return s.SubResourceWriter.Update(ctx, obj, opts...)
}

func (s *countingStatus) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
	s.c.record(obj)
	return s.SubResourceWriter.Patch(ctx, obj, patch, opts...)
}

// impersonate returns cfg acting as service account name of the operator's namespace.
func impersonate(cfg *rest.Config, name string) *rest.Config {
	c := rest.CopyConfig(cfg)
	c.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + operatorNamespace + ":" + name}
	return c
}

// podNameExtra is the user-info key under which a pod-bound token names its pod.
const podNameExtra = "authentication.kubernetes.io/pod-name"

// runnerClientFor returns a client acting as p's runner service account, as a token bound to
// pod (a name of "" acts as an unbound token) would.
func runnerClientFor(p *etlv1.ETLPipeline, pod string) client.Client {
	GinkgoHelper()
	c := impersonate(adminConfig, RunnerServiceAccount(p))
	if pod != "" {
		c.Impersonate.Extra = map[string][]string{podNameExtra: {pod}}
	}
	out, err := client.New(c, client.Options{Scheme: suiteScheme})
	Expect(err).NotTo(HaveOccurred())
	return out
}

// applyManifest creates every object of a multi-document YAML file.
func applyManifest(ctx context.Context, path string) {
	data, err := os.ReadFile(path)
	Expect(err).NotTo(HaveOccurred())
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		u := &unstructured.Unstructured{}
		err := dec.Decode(&u.Object)
		if errors.Is(err, io.EOF) {
			return
		}
		Expect(err).NotTo(HaveOccurred(), path)
		if len(u.Object) == 0 {
			continue
		}
		Expect(k8sClient.Create(ctx, u)).To(Succeed(), "%s: %s %s", path, u.GetKind(), u.GetName())
	}
}
