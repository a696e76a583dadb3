package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

const (
	// kubectlPluginName is the executable name kubectl looks for on PATH to run `kubectl sluice`.
	kubectlPluginName = "kubectl-sluice"
	// kubectlCompletionName is the executable kubectl runs to complete `kubectl sluice ...`
	// (kubectl 1.26 and later): it gets the words to complete, without cobra's __complete.
	kubectlCompletionName = "kubectl_complete-sluice"
	// kubectlFieldManager owns the fields the plugin patches, so that `kubectl get
	// --show-managed-fields` tells a pause by the plugin from one by Git.
	kubectlFieldManager = "kubectl-sluice"
	// kubectlDefaultOperatorNamespace is where config/default installs the manager, and so
	// where the runner Jobs run.
	kubectlDefaultOperatorNamespace = "sluice-system"
)

// Exit codes of `kubectl sluice`, for scripts.
const (
	kubectlExitOK    = 0
	kubectlExitError = 1
	kubectlExitUsage = 2
)

// kubectlCommands build the plugin's verbs, one constructor each, in files of their own
// (kubectl_<verb>.go). A new verb is one more constructor here; it gets the shared flags,
// clients and helpers of kubectlOptions, and reports usage errors with kubectlUsageErrorf so
// that its exit codes follow the others'.
var kubectlCommands = []func(*kubectlOptions) *cobra.Command{
	newKubectlStatusCmd,
	newKubectlRunCmd,
	newKubectlPauseCmd,
	newKubectlResumeCmd,
	newKubectlLogsCmd,
	newKubectlRejectsCmd,
	newKubectlCheckpointCmd,
	newKubectlCompletionCmd,
}

const kubectlHelp = `Inspect and control ETLPipelines (etl.sluice.dev) with the same API a user has.

Install: put the kubectl-sluice executable (a link to the sluice binary; 'make build' writes
bin/kubectl-sluice) on PATH, then run 'kubectl sluice <command>'. 'sluice kubectl <command>'
is the same.

Exit codes:
  0  success
  1  a runtime error: the API refused or failed, a pipeline or Job was not found, a run
     waited for with 'run --wait' failed, was paused or timed out
  2  a usage error: an unknown command or flag, a missing or extra argument, a bad value`

// kubectlOptions are the flags every verb shares, the clients made from them, and the output.
type kubectlOptions struct {
	stdout, stderr io.Writer
	// now is the clock the ages are computed against.
	now func() time.Time
	// pollInterval is how often a waiting command reads the pipeline again.
	pollInterval time.Duration

	kubeconfig        string
	context           string
	namespace         string
	operatorNamespace string

	clientsMade *kubectlClients
}

// kubectlClients talk to the cluster of the selected kubeconfig context.
type kubectlClients struct {
	// client reads and patches pipelines and Jobs.
	client client.Client
	// kube reads pods and streams their logs (which the controller-runtime client cannot).
	kube kubernetes.Interface
	// namespace is -n, else the context's namespace, else "default".
	namespace string
}

// kubectlUsageError is a mistake in the command line: exit code 2.
type kubectlUsageError struct{ err error }

func (e *kubectlUsageError) Error() string { return e.err.Error() }
func (e *kubectlUsageError) Unwrap() error { return e.err }

// kubectlUsageErrorf returns a usage error (exit code 2).
func kubectlUsageErrorf(format string, args ...any) error {
	return &kubectlUsageError{err: fmt.Errorf(format, args...)}
}

// kubectlExitCode is the exit code for the error a command returned.
func kubectlExitCode(err error) int {
	var usage *kubectlUsageError
	switch {
	case err == nil:
		return kubectlExitOK
	case errors.As(err, &usage):
		return kubectlExitUsage
	default:
		return kubectlExitError
	}
}

// kubectlPluginArgs returns the arguments of `sluice kubectl` when the binary was started
// under one of the plugin's names (argv[0]), and false otherwise.
func kubectlPluginArgs(argv0 string, args []string) ([]string, bool) {
	switch strings.TrimSuffix(filepath.Base(argv0), ".exe") {
	case kubectlPluginName:
		return args, true
	case kubectlCompletionName:
		return append([]string{cobra.ShellCompRequestCmd}, args...), true
	}
	return nil, false
}

// runKubectl runs `sluice kubectl args...` (or `kubectl sluice args...`) until it is done or
// interrupted, and returns the process exit code.
func runKubectl(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runKubectlContext(ctx, args, stdout, stderr)
}

// runKubectlContext is runKubectl with the caller's context: the tests run the plugin in
// process through it.
func runKubectlContext(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o := &kubectlOptions{stdout: stdout, stderr: stderr, now: time.Now, pollInterval: time.Second}
	root := newKubectlRootCmd(o)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	code := kubectlExitCode(err)
	switch code {
	case kubectlExitUsage:
		fmt.Fprintf(stderr, "error: %v\nSee '%s --help' for usage.\n", err, cmd.CommandPath())
	case kubectlExitError:
		fmt.Fprintf(stderr, "error: %v\n", err)
	}
	return code
}

// newKubectlRootCmd returns `kubectl sluice` with its verbs.
func newKubectlRootCmd(o *kubectlOptions) *cobra.Command {
	root := &cobra.Command{
		Use:   kubectlPluginName,
		Short: "Inspect and control Sluice ETLPipelines",
		Long:  kubectlHelp,
		// The shell sees `kubectl sluice`, the name kubectl runs it under.
		Annotations:   map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl sluice"},
		Args:          cobra.ArbitraryArgs,
		SilenceErrors: true,
		SilenceUsage:  true,
		// Unknown verbs come here rather than to cobra's own error, so that they exit 2.
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				cmd.SetOut(o.stderr)
				_ = cmd.Help()
				return kubectlUsageErrorf("a command is required")
			}
			msg := fmt.Sprintf("unknown command %q", args[0])
			if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
				msg += fmt.Sprintf(" (did you mean %q?)", s[0])
			}
			return kubectlUsageErrorf("%s", msg)
		},
		ValidArgsFunction: cobra.NoFileCompletions,
	}
	root.DisableFlagsInUseLine = true
	root.SuggestionsMinimumDistance = 2
	root.SetOut(o.stdout)
	root.SetErr(o.stderr)
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &kubectlUsageError{err: err} })

	f := root.PersistentFlags()
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "path to the kubeconfig file (default $KUBECONFIG, then ~/.kube/config)")
	f.StringVar(&o.context, "context", "", "the kubeconfig context to use (default its current context)")
	f.StringVarP(&o.namespace, "namespace", "n", "", "the pipelines' namespace (default the context's namespace)")
	f.StringVar(&o.operatorNamespace, "operator-namespace", kubectlDefaultOperatorNamespace,
		"the operator's namespace, where the runner Jobs are")
	_ = root.RegisterFlagCompletionFunc("namespace", o.completeNamespaces)

	for _, newCmd := range kubectlCommands {
		root.AddCommand(newCmd(o))
	}
	return root
}

// clients returns the clients of the selected context, made on first use so that `--help`
// and completion scripts need no cluster.
func (o *kubectlOptions) clients() (*kubectlClients, error) {
	if o.clientsMade != nil {
		return o.clientsMade, nil
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = o.kubeconfig
	overrides := &clientcmd.ConfigOverrides{CurrentContext: o.context}
	overrides.Context.Namespace = o.namespace
	loader := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides)
	cfg, err := loader.ClientConfig()
	if err != nil {
		if clientcmd.IsEmptyConfig(err) {
			return nil, errors.New("no Kubernetes configuration: set --kubeconfig or KUBECONFIG")
		}
		return nil, fmt.Errorf("load kubeconfig: %w", err)
	}
	ns, _, err := loader.Namespace()
	if err != nil {
		return nil, fmt.Errorf("namespace of the kubeconfig context: %w", err)
	}
	cfg.UserAgent = kubectlPluginName + "/" + version
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, etlv1.AddToScheme} {
		if err := add(scheme); err != nil {
			return nil, fmt.Errorf("build scheme: %w", err)
		}
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("create client for %s: %w", cfg.Host, err)
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("create client for %s: %w", cfg.Host, err)
	}
	o.clientsMade = &kubectlClients{client: c, kube: kube, namespace: ns}
	return o.clientsMade, nil
}

// kubectlAPIError says what an API error means for a pipeline, in words a user acts on.
func kubectlAPIError(err error, namespace, name string) error {
	switch {
	case apierrors.IsNotFound(err) && name != "":
		return fmt.Errorf("ETLPipeline %q not found in namespace %q", name, namespace)
	case meta.IsNoMatchError(err) || apierrors.IsNotFound(err):
		return fmt.Errorf("the cluster does not serve %s ETLPipelines: is Sluice installed? (%w)", etlv1.GroupVersion, err)
	case apierrors.IsForbidden(err):
		return fmt.Errorf("not allowed: %w", err)
	}
	return err
}

// getPipeline reads pipeline name of the selected namespace.
func (o *kubectlOptions) getPipeline(ctx context.Context, name string) (*kubectlClients, *etlv1.ETLPipeline, error) {
	c, err := o.clients()
	if err != nil {
		return nil, nil, err
	}
	p := &etlv1.ETLPipeline{}
	if err := c.client.Get(ctx, types.NamespacedName{Namespace: c.namespace, Name: name}, p); err != nil {
		return nil, nil, kubectlAPIError(err, c.namespace, name)
	}
	return c, p, nil
}

// mergePatch sends a JSON merge patch of p as the plugin's field manager.
func (o *kubectlOptions) mergePatch(ctx context.Context, c *kubectlClients, p *etlv1.ETLPipeline, patch []byte) error {
	if err := c.client.Patch(ctx, p, client.RawPatch(types.MergePatchType, patch), client.FieldOwner(kubectlFieldManager)); err != nil {
		return fmt.Errorf("patch ETLPipeline %s/%s: %w", p.Namespace, p.Name, kubectlAPIError(err, p.Namespace, p.Name))
	}
	return nil
}

// kubectlPipelineArg accepts exactly one argument, a pipeline name.
func kubectlPipelineArg(_ *cobra.Command, args []string) error {
	switch len(args) {
	case 1:
		return nil
	case 0:
		return kubectlUsageErrorf("a pipeline NAME is required")
	}
	return kubectlUsageErrorf("one pipeline NAME expected, got %d arguments: %s", len(args), strings.Join(args, " "))
}

// kubectlOptionalPipelineArg accepts at most one argument, a pipeline name.
func kubectlOptionalPipelineArg(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	return kubectlPipelineArg(cmd, args)
}

// completePipelineNames completes the first argument with the names of the namespace's pipelines.
func (o *kubectlOptions) completePipelineNames(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	c, err := o.clients()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var list etlv1.ETLPipelineList
	if err := c.client.List(cmd.Context(), &list, client.InNamespace(c.namespace)); err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return kubectlPrefixed(list.Items, toComplete), cobra.ShellCompDirectiveNoFileComp
}

// kubectlPrefixed returns the names of the objects that start with prefix.
func kubectlPrefixed[T any, P interface {
	*T
	GetName() string
}](items []T, prefix string) []string {
	var names []string
	for i := range items {
		if name := P(&items[i]).GetName(); strings.HasPrefix(name, prefix) {
			names = append(names, name)
		}
	}
	return names
}

// completeNamespaces completes -n with the cluster's namespaces.
func (o *kubectlOptions) completeNamespaces(cmd *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	c, err := o.clients()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var list corev1.NamespaceList
	if err := c.client.List(cmd.Context(), &list); err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return kubectlPrefixed(list.Items, toComplete), cobra.ShellCompDirectiveNoFileComp
}

// newKubectlCompletionCmd returns `completion bash|zsh|fish`.
func newKubectlCompletionCmd(_ *kubectlOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "completion bash|zsh|fish",
		Short: "Print a shell completion script for kubectl-sluice",
		Long: `Print a shell completion script for kubectl-sluice.

  source <(kubectl-sluice completion bash)      # bash
  kubectl-sluice completion zsh > "${fpath[1]}/_kubectl-sluice"
  kubectl-sluice completion fish | source

For 'kubectl sluice <TAB>' (kubectl 1.26 and later), put kubectl_complete-sluice, another
link to the sluice binary, on PATH beside kubectl-sluice: kubectl asks it for completions.`,
		ValidArgs: []string{"bash", "zsh", "fish"},
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return kubectlUsageErrorf("one shell expected: bash, zsh or fish")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			root, w := cmd.Root(), cmd.OutOrStdout()
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(w, true)
			case "zsh":
				return root.GenZshCompletion(w)
			case "fish":
				return root.GenFishCompletion(w, true)
			}
			return kubectlUsageErrorf("unsupported shell %q: bash, zsh or fish", args[0])
		},
	}
}

// runnerJob finds the runner Job jobName of pipeline p: in the operator's namespace first,
// then, for an operator installed elsewhere, by name across namespaces when that is allowed.
// A Job of that name that belongs to another pipeline is never taken.
func (o *kubectlOptions) runnerJob(ctx context.Context, c *kubectlClients, p *etlv1.ETLPipeline, jobName string) (*batchv1.Job, error) {
	job := &batchv1.Job{}
	err := c.client.Get(ctx, types.NamespacedName{Namespace: o.operatorNamespace, Name: jobName}, job)
	if err == nil && kubectlJobOf(job, p) {
		return job, nil
	}
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsForbidden(err) {
		return nil, fmt.Errorf("get Job %s/%s: %w", o.operatorNamespace, jobName, err)
	}
	var jobs batchv1.JobList
	if lerr := c.client.List(ctx, &jobs, client.MatchingFields{"metadata.name": jobName}); lerr != nil {
		if err == nil {
			err = fmt.Errorf("it belongs to another pipeline")
		}
		return nil, fmt.Errorf("runner Job %s not found in namespace %s (%v; set --operator-namespace), and Jobs cannot be searched across namespaces: %w",
			jobName, o.operatorNamespace, err, lerr)
	}
	for i := range jobs.Items {
		if kubectlJobOf(&jobs.Items[i], p) {
			return &jobs.Items[i], nil
		}
	}
	return nil, fmt.Errorf("runner Job %s not found in any namespace: it is created once the run is requested, and removed a day after it ended or when newer runs replace it",
		jobName)
}

// kubectlJobOf reports whether job is a runner Job of p, by the annotation the manager puts
// on each (label values may be hashed, the annotation is not).
func kubectlJobOf(job *batchv1.Job, p *etlv1.ETLPipeline) bool {
	return job.Annotations[etlv1.AnnotationPipeline] == p.Namespace+"/"+p.Name
}
