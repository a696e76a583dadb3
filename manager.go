package main

import (
	"errors"
	"flag"
	"fmt"
	"os"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/controllers"
)

// leaderElectionID names the Lease the manager replicas compete for.
const leaderElectionID = "sluice.etl.sluice.dev"

// managerFlags are the flags of `sluice manager`.
type managerFlags struct {
	configPath    string
	namespace     string
	metricsAddr   string
	metricsSecure bool
	probeAddr     string
	leaderElect   bool
	concurrency   int
	zap           zap.Options
}

func parseManagerFlags(args []string) (*managerFlags, error) {
	f := &managerFlags{zap: zap.Options{Development: false}}
	fs := flag.NewFlagSet("manager", flag.ContinueOnError)
	fs.StringVar(&f.configPath, "config", configv1.DefaultConfigPath, "operator configuration file (connections, whitelist, runner Jobs)")
	fs.StringVar(&f.namespace, "namespace", os.Getenv("POD_NAMESPACE"), "the operator's namespace, where runner Jobs run and connection Secrets live (default $POD_NAMESPACE)")
	fs.StringVar(&f.metricsAddr, "metrics-bind-address", ":8443", `address of the metrics endpoint; "0" disables it`)
	fs.BoolVar(&f.metricsSecure, "metrics-secure", true, "serve the metrics over HTTPS to callers whose token may get /metrics (RBAC); false serves plain HTTP to anyone")
	fs.StringVar(&f.probeAddr, "health-probe-bind-address", ":8081", "address of the /healthz and /readyz endpoints")
	fs.BoolVar(&f.leaderElect, "leader-elect", false, "elect a leader so that only one replica reconciles")
	fs.IntVar(&f.concurrency, "max-concurrent-reconciles", 4, "pipelines reconciled in parallel")
	f.zap.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if f.namespace == "" {
		return nil, errors.New("--namespace is required (or set POD_NAMESPACE)")
	}
	if f.concurrency < 1 {
		return nil, fmt.Errorf("--max-concurrent-reconciles must be at least 1, got %d", f.concurrency)
	}
	return f, nil
}

// newScheme returns the types the manager reads and writes.
func newScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, etlv1.AddToScheme, batchv1.AddToScheme, corev1.AddToScheme} {
		if err := add(s); err != nil {
			return nil, fmt.Errorf("build scheme: %w", err)
		}
	}
	return s, nil
}

// runManager runs the operator until SIGTERM or SIGINT. It returns the process exit code.
func runManager(args []string) int {
	f, err := parseManagerFlags(args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "sluice manager: %v\n", err)
		return 2
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&f.zap)))
	if err := startManager(f); err != nil {
		// Plain words on stderr: a bad configuration must be obvious in `kubectl logs`.
		fmt.Fprintf(os.Stderr, "sluice manager: %v\n", err)
		return 1
	}
	return 0
}

// startManager loads the configuration, wires the manager and runs it until a signal.
func startManager(f *managerFlags) error {
	logger := ctrl.Log.WithName("manager")
	cfg, err := configv1.Load(f.configPath)
	if err != nil {
		return fmt.Errorf("cannot start with this operator configuration: %w", err)
	}
	scheme, err := newScheme()
	if err != nil {
		return err
	}
	restCfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("no Kubernetes client configuration: %w", err)
	}
	mgr, err := ctrl.NewManager(restCfg, ctrl.Options{
		Scheme:                  scheme,
		Metrics:                 metricsOptions(f),
		HealthProbeBindAddress:  f.probeAddr,
		LeaderElection:          f.leaderElect,
		LeaderElectionID:        leaderElectionID,
		LeaderElectionNamespace: f.namespace,
		// Stepping down at once on SIGTERM lets a new replica take over without waiting for
		// the lease to expire; the manager holds no state that needs the grace.
		LeaderElectionReleaseOnCancel: true,
		Cache:                         controllers.CacheOptions(f.namespace),
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	store := controllers.NewConfigStore(cfg)
	changed := make(chan event.GenericEvent, 64)
	r := &controllers.ETLPipelineReconciler{
		Client:        mgr.GetClient(),
		APIReader:     mgr.GetAPIReader(),
		Recorder:      mgr.GetEventRecorder(controllers.ControllerName),
		Config:        cfg,
		Configs:       store,
		ConfigChanged: changed,
		Namespace:     f.namespace,
	}
	if err := r.SetupWithManager(mgr, controller.Options{MaxConcurrentReconciles: f.concurrency}); err != nil {
		return fmt.Errorf("set up the ETLPipeline controller: %w", err)
	}
	reloader := &controllers.ConfigReconciler{
		Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder(controllers.ControllerName), Store: store,
		Namespace: f.namespace, Name: cfg.Runner.ConfigMapName, Key: cfg.Runner.ConfigMapKey, Changed: changed,
		Policy: &controllers.GrantsPolicy{Client: mgr.GetClient(), Reader: mgr.GetAPIReader()},
	}
	if err := reloader.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up the configuration reloader: %w", err)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return fmt.Errorf("add health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return fmt.Errorf("add readiness check: %w", err)
	}
	// Connection names only: the configuration holds no credential, but say so by design.
	logger.Info("starting", "version", version, "namespace", f.namespace, "config", f.configPath,
		"postgresConnections", len(cfg.Postgres), "elasticsearchConnections", len(cfg.Elasticsearch),
		"defaultGrant", cfg.Tenancy.Default(), "admissionPolicy", cfg.Tenancy.Admission())
	if cfg.Runner.ServiceAccountName != "" {
		logger.Info("runner.serviceAccountName is ignored: each pipeline's runner gets a service account of its own",
			"serviceAccountName", cfg.Runner.ServiceAccountName)
	}
	if cfg.Tenancy.DefaultGrant == "" {
		logger.Info("tenancy.defaultGrant is not set: every namespace may use the connections and targets that name no namespaces (AllNamespaces); set NoNamespaces on an operator shared by several teams")
	}
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		return fmt.Errorf("manager stopped: %w", err)
	}
	return nil
}

// metricsOptions serve the manager's metrics the way kubebuilder scaffolds them: HTTPS (a
// self-signed certificate unless one is mounted), and only to a caller whose token the API
// server authenticates and whose RBAC allows get on the non-resource URL /metrics
// (config/rbac/metrics_reader_role.yaml).
func metricsOptions(f *managerFlags) metricsserver.Options {
	o := metricsserver.Options{BindAddress: f.metricsAddr, SecureServing: f.metricsSecure}
	if f.metricsSecure {
		o.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	return o
}
