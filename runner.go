package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner"
	"github.com/sluice-dev/sluice/runner/metrics"
	"github.com/sluice-dev/sluice/runner/state"
	"github.com/sluice-dev/sluice/runner/status"
)

// manualPipeline is the state key of a run without a pipeline name (by hand, benchmarks).
const manualPipeline = "manual"

// runRunner executes one run of a pipeline. It returns the process exit code (see the Exit*
// constants of api/config/v1alpha1).
func runRunner(args []string) int {
	fs := flag.NewFlagSet("runner", flag.ContinueOnError)
	configPath := fs.String("config", configv1.DefaultConfigPath, "operator configuration file")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig of the API server holding the pipeline (default: in-cluster)")
	noStatus := fs.Bool("no-status", false, "do not talk to Kubernetes: claim unconditionally, log progress and the end "+
		"(also the case when "+configv1.EnvPipelineName+" is empty)")
	trigger := fs.String("trigger", "", "with --no-status: the run's trigger (Resume continues a paused Full run)")
	terminationLog := fs.String("termination-log", envOr("SLUICE_TERMINATION_LOG", "/dev/termination-log"), "file for a short failure message (ignored if not writable; default $SLUICE_TERMINATION_LOG)")
	lockWait := fs.Duration("lock-wait", 90*time.Second, "how long to wait for another live runner of the pipeline before giving up")
	checkInterval := fs.Duration("check-interval", time.Second, "least time between two looks at the pipeline for a pause")
	progressInterval := fs.Duration("progress-interval", 2*time.Second, "least time between two progress reports")
	checkpointAtEnd := fs.Bool("checkpoint-at-end", false, "benchmarks only: commit the checkpoint at the end of the run, not per batch")
	sequential := fs.Bool("sequential", false, "benchmarks only: neither read the next page nor send the next batch before the current one is written")
	decode := fs.Bool("decode", false, "benchmarks only: decode every value even when it could travel undecoded to the sink")
	python := fs.String("python", "python3", "interpreter of python tasks: a path, or a name looked up in PATH")
	pythonMemory := fs.String("python-memory-limit", "1Gi", "address space limit of the python worker (a quantity: 512Mi, 2Gi), or none")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	metricsAddr := fs.String("metrics-bind-address", ":8080", `address of the /metrics endpoint while the run runs; "0" disables it`)
	checkpoint := fs.Bool("checkpoint", false, "carry out the checkpoint request of a paused pipeline ("+configv1.EnvCheckpointRequest+"), then exit")
	forget := fs.Bool("forget", false, "remove the state of a deleted pipeline ("+configv1.EnvPipelineUID+") from the state database, then exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "sluice runner: --log-level: %v\n", err)
		return 2
	}
	memoryLimit := int64(-1)
	if *pythonMemory != "none" {
		q, err := resource.ParseQuantity(*pythonMemory)
		if err != nil || q.Value() <= 0 {
			fmt.Fprintf(os.Stderr, "sluice runner: --python-memory-limit %q: want a positive quantity (512Mi, 2Gi) or none\n", *pythonMemory)
			return 2
		}
		memoryLimit = q.Value()
	}
	handler := slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level})
	log := slog.New(handler)
	if limit, err := strconv.ParseInt(os.Getenv(configv1.EnvMemoryLimit), 10, 64); err == nil && limit > 0 {
		// Without a limit of its own the Go heap may grow to twice what is live before a
		// collection, past the container's limit on wide rows.
		debug.SetMemoryLimit(limit / 10 * 8)
	}
	ctrllog.SetLogger(logr.FromSlogHandler(handler))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	p := runner.Params{
		Pipeline: state.Pipeline{
			Namespace: os.Getenv(configv1.EnvPipelineNamespace),
			Name:      os.Getenv(configv1.EnvPipelineName),
			UID:       os.Getenv(configv1.EnvPipelineUID),
		},
		RunID:          os.Getenv(configv1.EnvRunID),
		Generation:     os.Getenv(configv1.EnvGeneration),
		LookupEnv:      os.LookupEnv,
		Log:            log,
		TerminationLog: *terminationLog,
		Options: runner.Options{
			CheckInterval:     *checkInterval,
			ProgressInterval:  *progressInterval,
			LockWait:          *lockWait,
			CheckpointAtEnd:   *checkpointAtEnd,
			Sequential:        *sequential,
			Decode:            *decode,
			Python:            *python,
			PythonMemoryLimit: memoryLimit,
		},
	}
	p.Config, p.ConfigErr = configv1.Load(*configPath)
	if spec, err := configv1.ReadSpec(os.LookupEnv); err != nil {
		p.SpecJSON = "" // the run fails on the empty snapshot and says so
		log.Error("cannot read the spec snapshot", "error", err.Error())
	} else {
		p.SpecJSON = spec
	}
	if *checkpoint {
		if p.ConfigErr != nil {
			log.Error("cannot load the operator configuration", "error", p.ConfigErr.Error())
			return configv1.ExitBusiness
		}
		var req etlv1.CheckpointRequest
		if err := json.Unmarshal([]byte(os.Getenv(configv1.EnvCheckpointRequest)), &req); err != nil {
			log.Error("cannot read the checkpoint request", "variable", configv1.EnvCheckpointRequest, "error", err.Error())
			return configv1.ExitBusiness
		}
		return runner.ChangeCheckpoint(ctx, runner.CheckpointParams{Config: p.Config, Pipeline: p.Pipeline, SpecJSON: p.SpecJSON,
			Generation: p.Generation, Request: req, RequestedBy: os.Getenv(configv1.EnvCheckpointRequestedBy),
			LookupEnv: os.LookupEnv, Log: log, LockWait: *lockWait, TerminationLog: p.TerminationLog})
	}
	if *forget {
		if p.ConfigErr != nil {
			log.Error("cannot load the operator configuration", "error", p.ConfigErr.Error())
			return configv1.ExitBusiness
		}
		return runner.Forget(ctx, runner.ForgetParams{Config: p.Config, Pipeline: p.Pipeline, LookupEnv: os.LookupEnv,
			Log: log, LockWait: *lockWait})
	}

	// A target whose checkpoint values are redacted: its reporter and logger mask them.
	redact := runner.CheckpointRedacted(p.Config, p.SpecJSON)
	if redact {
		p.Log = runner.RedactLog(p.Log)
	}
	if *noStatus || p.Pipeline.Name == "" {
		if p.Pipeline.Name == "" {
			p.Pipeline.Name = manualPipeline
		}
		if p.RunID == "" {
			p.RunID = "manual-" + strconv.FormatInt(time.Now().Unix(), 10)
		}
		p.Reporter = status.NewLog(p.Log, etlv1.RunTrigger(*trigger), status.RedactCheckpoint(redact))
	} else {
		if p.RunID == "" {
			log.Error("cannot claim a run without a run id", "env", configv1.EnvRunID)
			return configv1.ExitBusiness
		}
		c, err := kubeClient(*kubeconfig)
		if err != nil {
			log.Error("cannot reach Kubernetes", "error", err.Error())
			return configv1.ExitInfra
		}
		key := types.NamespacedName{Namespace: p.Pipeline.Namespace, Name: p.Pipeline.Name}
		p.Reporter = status.NewKube(c, key, p.RunID, status.RedactCheckpoint(redact))
	}

	p.Options.Metrics, p.Options.MetricsListener = serveMetrics(ctx, p.Log, *metricsAddr, p.Pipeline)
	res := runner.Run(ctx, p)
	return res.ExitCode
}

// serveMetrics binds the metrics endpoint of a run of pipeline (runner.Run serves it and
// closes the listener). Metrics are not worth a failed run: when the address cannot be bound
// the run goes on without them.
func serveMetrics(ctx context.Context, log *slog.Logger, addr string, pipeline state.Pipeline) (*metrics.Metrics, net.Listener) {
	if addr == "0" || addr == "" {
		return nil, nil
	}
	l, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
	if err != nil {
		log.Warn("cannot serve metrics: the run goes on without them", "address", addr, "error", err.Error())
		return nil, nil
	}
	return metrics.New(pipeline.Namespace, pipeline.Name), l
}

// kubeClient returns a client for ETLPipelines: from the --kubeconfig file, else from
// $KUBECONFIG or in-cluster, the usual client-go loading rules.
func kubeClient(kubeconfig string) (client.Client, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig: %w", err)
	}
	cfg.UserAgent = "sluice-runner/" + version
	scheme := runtime.NewScheme()
	if err := etlv1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("register ETLPipeline types: %w", err)
	}
	if err := eventsv1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("register Event types: %w", err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("create Kubernetes client: %w", err)
	}
	return c, nil
}

// envOr returns the environment variable's value, or def when it is unset or empty.
func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
