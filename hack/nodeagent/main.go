// Command nodeagent is a test harness for Jobs, not a kubelet. It lets the local cluster of
// hack/cluster.sh (a real etcd, kube-apiserver and kube-controller-manager, no container
// runtime) run Sluice's Jobs, so that the real Job controller sees real pods come and go.
//
// What it does:
//   - registers a Ready Node (default sluice-local) and renews its Lease in kube-node-lease;
//   - binds every unscheduled pod of the default scheduler to that node (the Binding
//     subresource, with the credentials of kube-scheduler: a node may not bind pods);
//   - runs each pod bound to the node whose image is the Sluice image (--image: that exact
//     reference, or any tag or digest of its repository) as a local process of the sluice
//     binary (--binary): command[0], when set, stands for the image's entrypoint and must name
//     that binary; command[1:] and args are its arguments, with $(VAR) expanded as the kubelet
//     does;
//   - resolves the container's env and envFrom (values, Secret and ConfigMap keys with their
//     optional flag, the usual fieldRefs) and materializes its volumes (configMap, secret,
//     emptyDir, downwardAPI, projected with a bound service account token) in a directory per
//     pod under --work-dir;
//   - writes the process's stdout and stderr to <pod dir>/<container>.log, serves them to
//     `kubectl logs` on the kubelet's /containerLogs path (HTTPS, client certificate of the
//     API server), and keeps the pod status truthful: Running, then Succeeded or Failed with
//     the exit code (128+signal when killed), reason Completed or Error, and the termination
//     message;
//   - kills the process group of a deleted pod (SIGTERM, SIGKILL after the grace period capped
//     by --max-grace), reports it Failed and deletes the pod with grace period 0, as the kubelet
//     does; it never touches the Job controller's finalizer;
//   - refuses every other pod (another image, more than one container, init containers, an
//     unsupported volume or env source) with a Warning event and the pod Failed with that reason
//     (ImageNotSupported, PodNotSupported, VolumeNotSupported, EnvNotSupported).
//
// What it does not do: no images (nothing is pulled; the Sluice image stands for the local
// binary), no isolation (no namespaces, cgroups, users, capabilities, seccomp or read-only root:
// the process runs as the agent's user and sees the host's file system), no resource requests
// or limits, no probes (a started container is Ready), no networking (no pod IP of its own:
// podIP is 127.0.0.1 and ports are the host's), no restarts (restartPolicy is treated as Never),
// no pod-level activeDeadlineSeconds (a Job's activeDeadlineSeconds works: the Job controller
// deletes the pods), no exec, attach or port-forward, no `kubectl logs --previous`, --timestamps
// or --since.
//
// Container paths do not exist for a local process, so the agent rewrites them:
//   - each volumeMount's mountPath (and the container's terminationMessagePath) maps to the
//     materialized host path; any arg, env value or workingDir equal to such a path or below it
//     is rewritten, and so is the value of an arg of the form --flag=<path> or -flag=<path>;
//     a path inside a longer string (a shell script) or computed by the program is not;
//   - SLUICE_TERMINATION_LOG is set to the host file that plays the container's
//     terminationMessagePath: a program that writes its termination message there is read as
//     the kubelet reads /dev/termination-log (FallbackToLogsOnError falls back to the last 80
//     lines, at most 2 KiB, of the log on failure);
//   - when the pod mounts a service account token at /var/run/secrets/kubernetes.io/serviceaccount,
//     KUBECONFIG is set to a kubeconfig of the API server with that token (tokenFile, refreshed
//     by the agent) and its CA: clients that honour KUBECONFIG (kubectl, controller-runtime's
//     ctrl.GetConfig, clientcmd's default loading rules) talk to the API server as the pod's
//     service account; rest.InClusterConfig alone cannot, its paths are fixed;
//   - KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT point at the API server, HOSTNAME is
//     the pod name, HOME is the pod directory, PATH is the agent's, and TMPDIR is the host
//     directory of a volume mounted at /tmp, if any.
//
// Test only: --extra-image repo=/path/to/binary accepts another image repository and runs
// that binary for it (the e2e suite maps a shell and kubectl this way). Never use it outside
// tests: it runs arbitrary programs on the host.
//
// When the agent restarts, the processes it had started are killed and their pods reported
// Failed with exit code 137, as after a node reboot. When it stops it kills them all.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// options are the command-line flags.
type options struct {
	kubeconfig      string
	schedKubeconfig string
	nodeName        string
	image           string
	binary          string
	extraImages     extraImages
	workDir         string
	listen          string
	tlsCert         string
	tlsKey          string
	clientCA        string
	maxGrace        time.Duration
	heartbeat       time.Duration
}

// extraImages is the repeatable --extra-image repo=path flag.
type extraImages map[string]string

func (e extraImages) String() string {
	parts := make([]string, 0, len(e))
	for k, v := range e {
		parts = append(parts, k+"="+v)
	}
	return strings.Join(parts, ",")
}

func (e extraImages) Set(v string) error {
	repo, bin, ok := strings.Cut(v, "=")
	if !ok || repo == "" || bin == "" {
		return fmt.Errorf("want repository=/path/to/binary, got %q", v)
	}
	if !filepath.IsAbs(bin) {
		return fmt.Errorf("binary of %s must be an absolute path, got %q", repo, bin)
	}
	e[repository(repo)] = bin
	return nil
}

func parseFlags(args []string) (*options, error) {
	o := &options{extraImages: extraImages{}}
	fs := flag.NewFlagSet("nodeagent", flag.ContinueOnError)
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig of the node's identity (system:node:<name> in system:nodes)")
	fs.StringVar(&o.schedKubeconfig, "scheduler-kubeconfig", "", "kubeconfig allowed to bind pods (default: --kubeconfig)")
	fs.StringVar(&o.nodeName, "node-name", "sluice-local", "name of the Node to register")
	fs.StringVar(&o.image, "image", "ghcr.io/sluice-dev/sluice:latest", "the Sluice image: this reference or any tag or digest of its repository runs --binary")
	fs.StringVar(&o.binary, "binary", "", "the sluice binary run for the Sluice image")
	fs.Var(o.extraImages, "extra-image", "TEST ONLY: repository=/path/to/binary, another accepted image and the program it runs (repeatable)")
	fs.StringVar(&o.workDir, "work-dir", "", "directory of the per-pod directories (volumes, logs, pid files)")
	fs.StringVar(&o.listen, "listen", "127.0.0.1:10250", `address of the HTTPS /containerLogs endpoint for kubectl logs; "" disables it`)
	fs.StringVar(&o.tlsCert, "tls-cert-file", "", "serving certificate of the log endpoint")
	fs.StringVar(&o.tlsKey, "tls-private-key-file", "", "key of the serving certificate")
	fs.StringVar(&o.clientCA, "client-ca-file", "", "CA of the client certificates the log endpoint accepts (the API server's kubelet client)")
	fs.DurationVar(&o.maxGrace, "max-grace", 30*time.Second, "cap on a deleted pod's termination grace period")
	fs.DurationVar(&o.heartbeat, "heartbeat", 10*time.Second, "period of the node Lease renewal")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	var errs []string
	if o.kubeconfig == "" {
		errs = append(errs, "--kubeconfig is required")
	}
	if o.binary == "" || !filepath.IsAbs(o.binary) {
		errs = append(errs, "--binary must be an absolute path")
	}
	if o.workDir == "" {
		errs = append(errs, "--work-dir is required")
	}
	if o.listen != "" && (o.tlsCert == "" || o.tlsKey == "" || o.clientCA == "") {
		errs = append(errs, "--listen needs --tls-cert-file, --tls-private-key-file and --client-ca-file")
	}
	if len(errs) > 0 {
		return nil, errors.New(strings.Join(errs, "; "))
	}
	if o.schedKubeconfig == "" {
		o.schedKubeconfig = o.kubeconfig
	}
	return o, nil
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	o, err := parseFlags(args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "nodeagent: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	a, err := newAgent(o, log)
	if err != nil {
		log.Error("cannot start", "error", err.Error())
		return 1
	}
	if err := a.run(ctx); err != nil {
		log.Error("stopped", "error", err.Error())
		return 1
	}
	return 0
}
