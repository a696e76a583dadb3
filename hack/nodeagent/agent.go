package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
)

const (
	workers = 2
	// gcEvery is how often pod directories and processes of vanished pods are cleaned up.
	gcEvery = 30 * time.Second
	// tokenCheckEvery is how often a running pod's service account tokens are checked for renewal.
	tokenCheckEvery = 30 * time.Second
	// stopGrace is how long the processes get to exit when the agent stops.
	stopGrace = 5 * time.Second
	// quietRetries: a pod that cannot start yet is retried this many times before its status
	// and an event say why (the node authorizer learns of a new binding a moment after it).
	quietRetries = 2
)

// agent is the node agent: a node, its pods, and the processes that play them.
type agent struct {
	o          *options
	log        *slog.Logger
	node       kubernetes.Interface // the node's identity
	sched      kubernetes.Interface // the scheduler's identity
	server     string               // the API server URL
	images     imagePolicy
	port       int32
	readySince metav1.Time

	broadcaster record.EventBroadcaster
	recorder    record.EventRecorder
	pods        corelisters.PodLister
	queue       workqueue.TypedRateLimitingInterface[string]
	mat         materializer

	mu    sync.Mutex
	procs map[types.UID]*proc
	wg    sync.WaitGroup
}

func loadConfig(path string) (*rest.Config, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig %s: %w", path, err)
	}
	cfg.UserAgent = "sluice-nodeagent"
	cfg.QPS, cfg.Burst = 50, 100
	return cfg, nil
}

func newAgent(o *options, log *slog.Logger) (*agent, error) {
	nodeCfg, err := loadConfig(o.kubeconfig)
	if err != nil {
		return nil, err
	}
	schedCfg, err := loadConfig(o.schedKubeconfig)
	if err != nil {
		return nil, err
	}
	a := &agent{
		o: o, log: log, server: nodeCfg.Host, procs: map[types.UID]*proc{},
		images: newImagePolicy(o.image, o.binary, o.extraImages),
		port:   10250,
	}
	if o.listen != "" {
		_, port, err := net.SplitHostPort(o.listen)
		if err != nil {
			return nil, fmt.Errorf("--listen %q: %w", o.listen, err)
		}
		p, err := strconv.ParseInt(port, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("--listen %q: %w", o.listen, err)
		}
		a.port = int32(p)
	}
	if a.node, err = kubernetes.NewForConfig(nodeCfg); err != nil {
		return nil, fmt.Errorf("client for node %s: %w", o.nodeName, err)
	}
	if a.sched, err = kubernetes.NewForConfig(schedCfg); err != nil {
		return nil, fmt.Errorf("client for binding: %w", err)
	}
	a.mat = materializer{objs: a, tokens: a}
	return a, nil
}

// run registers the node, then binds, runs and reports pods until ctx is done; then it kills
// the processes it started.
func (a *agent) run(ctx context.Context) error {
	if err := os.MkdirAll(filepath.Join(a.o.workDir, "pods"), 0o700); err != nil {
		return fmt.Errorf("work dir: %w", err)
	}
	// Processes a previous agent started cannot be waited for: kill them. Their pods are
	// reported Failed once they are seen (their pid files stay as the evidence).
	entries, _ := os.ReadDir(filepath.Join(a.o.workDir, "pods"))
	for _, e := range entries {
		killStale(podFiles{dir: filepath.Join(a.o.workDir, "pods", e.Name())})
	}

	for {
		err := a.registerNode(ctx)
		if err == nil {
			break
		}
		a.log.Warn("register node", "error", err.Error())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(2 * time.Second):
		}
	}
	a.log.Info("node registered", "node", a.o.nodeName, "image", a.images.sluiceRepo, "binary", a.o.binary)

	a.broadcaster = record.NewBroadcaster(record.WithContext(ctx))
	a.broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: a.node.CoreV1().Events("")})
	a.recorder = a.broadcaster.NewRecorder(clientgoscheme.Scheme, corev1.EventSource{Component: "sluice-nodeagent", Host: a.o.nodeName})

	a.queue = workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](200*time.Millisecond, 10*time.Second),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "pods"})
	nodePods := informers.NewSharedInformerFactoryWithOptions(a.node, 0, informers.WithTweakListOptions(func(lo *metav1.ListOptions) {
		lo.FieldSelector = "spec.nodeName=" + a.o.nodeName
	}))
	a.pods = nodePods.Core().V1().Pods().Lister()
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			a.queue.Add(key)
		}
	}
	if _, err := nodePods.Core().V1().Pods().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue, UpdateFunc: func(_, obj any) { enqueue(obj) }, DeleteFunc: enqueue,
	}); err != nil {
		return fmt.Errorf("watch pods of node %s: %w", a.o.nodeName, err)
	}
	unscheduled := informers.NewSharedInformerFactoryWithOptions(a.sched, 0, informers.WithTweakListOptions(func(lo *metav1.ListOptions) {
		lo.FieldSelector = "spec.nodeName=,status.phase!=Succeeded,status.phase!=Failed"
	}))
	b, err := a.newBinder(unscheduled)
	if err != nil {
		return err
	}
	nodePods.Start(ctx.Done())
	unscheduled.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), nodePods.Core().V1().Pods().Informer().HasSynced, unscheduled.Core().V1().Pods().Informer().HasSynced) {
		return nil // stopped before the caches filled
	}

	var bg sync.WaitGroup
	for range workers {
		bg.Go(func() { a.work(ctx) })
	}
	bg.Go(func() { b.run(ctx) })
	bg.Go(func() { a.heartbeat(ctx) })
	bg.Go(func() { a.gcLoop(ctx) })
	var serveErr error
	if a.o.listen != "" {
		bg.Go(func() { serveErr = a.serveLogs(ctx) })
	}
	a.log.Info("running", "node", a.o.nodeName, "logs", a.o.listen)

	<-ctx.Done()
	a.queue.ShutDown()
	b.queue.ShutDown()
	bg.Wait() // no worker starts a process any more
	a.stopAll()
	nodePods.Shutdown()
	unscheduled.Shutdown()
	return serveErr
}

// stopAll kills every process the agent runs: SIGTERM, then SIGKILL after stopGrace.
func (a *agent) stopAll() {
	a.mu.Lock()
	for _, p := range a.procs {
		p.terminate(stopGrace)
	}
	a.mu.Unlock()
	a.wg.Wait()
}

func (a *agent) work(ctx context.Context) {
	for {
		key, quit := a.queue.Get()
		if quit {
			return
		}
		err := a.sync(ctx, key)
		switch {
		case err == nil:
			a.queue.Forget(key)
		case ctx.Err() != nil:
		default:
			a.log.Warn("sync pod", "pod", key, "error", err.Error())
			a.queue.AddRateLimited(key)
		}
		a.queue.Done(key)
	}
}

// sync brings one pod of the node one step closer to the truth.
func (a *agent) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil //nolint:nilerr // a malformed key cannot be retried into shape
	}
	pod, err := a.pods.Pods(ns).Get(name)
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	// A process whose pod is gone, or was replaced by another of the same name, is killed.
	var uid types.UID
	if pod != nil {
		uid = pod.UID
	}
	a.mu.Lock()
	var p *proc
	for id, q := range a.procs {
		switch {
		case q.key == key && id != uid:
			q.terminate(a.o.maxGrace)
		case id == uid:
			p = q
		}
	}
	a.mu.Unlock()
	if pod == nil {
		return nil
	}

	switch {
	case pod.DeletionTimestamp != nil:
		return a.syncDeleted(ctx, pod, p)
	case isTerminal(pod):
		return nil
	case p != nil:
		if !p.isReported() {
			return a.reportRunning(ctx, p)
		}
		return nil
	case startedBefore(pod, filesOf(a.o.workDir, pod)):
		return a.fail(ctx, pod, reasonNodeAgentRestart,
			"the sluice node agent restarted while this pod ran; its process was killed")
	default:
		return a.start(ctx, pod)
	}
}

// startedBefore reports whether a previous agent started pod: it reported it running, or
// left its pid file.
func startedBefore(pod *corev1.Pod, files podFiles) bool {
	if pod.Status.Phase == corev1.PodRunning {
		return true
	}
	_, err := os.Stat(files.pid())
	return err == nil
}

// syncDeleted ends a deleted pod as the kubelet does: kill the process group (SIGTERM, then
// SIGKILL after the grace period), report the pod terminal, delete it with grace period 0.
func (a *agent) syncDeleted(ctx context.Context, pod *corev1.Pod, p *proc) error {
	if p != nil && !p.isSettled() {
		grace := a.o.maxGrace
		if g := pod.DeletionGracePeriodSeconds; g != nil && time.Duration(*g)*time.Second < grace {
			grace = time.Duration(*g) * time.Second
		}
		if p.terminate(grace) {
			a.recorder.Eventf(pod, corev1.EventTypeNormal, "Killing", "Stopping container %s (process group %d), grace period %s",
				pod.Spec.Containers[0].Name, p.pid, grace)
		}
		return nil // its exit is reported, then the pod requeued
	}
	if p == nil && !isTerminal(pod) {
		if err := a.fail(ctx, pod, reasonStatusUnknown, "the pod was deleted before its process ran"); err != nil {
			return err
		}
	}
	if g := pod.DeletionGracePeriodSeconds; g != nil && *g == 0 {
		return nil // deleted for good already; what remains is the Job controller's finalizer
	}
	err := a.node.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: ptr.To(int64(0)),
		Preconditions:      metav1.NewUIDPreconditions(string(pod.UID)),
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("delete pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return nil
}

// start admits pod, prepares its environment and volumes, and starts its process.
func (a *agent) start(ctx context.Context, pod *corev1.Pod) error {
	key := pod.Namespace + "/" + pod.Name
	bin, r := admit(pod, a.images)
	if r != nil {
		a.log.Info("refused pod", "pod", key, "reason", r.reason, "message", r.message)
		a.recorder.Event(pod, corev1.EventTypeWarning, r.reason, r.message)
		return a.patchStatus(ctx, pod, refusedStatus(pod, r, metav1.Now()))
	}
	files := filesOf(a.o.workDir, pod)
	argv, environ, dir, tokens, err := a.prepare(ctx, pod, files)
	if err != nil {
		if a.queue.NumRequeues(key) >= quietRetries {
			a.recorder.Event(pod, corev1.EventTypeWarning, "Failed", "Error: "+err.Error())
			if perr := a.patchStatus(ctx, pod, waitingStatus(pod, reasonConfigError, err.Error(), metav1.Now())); perr != nil {
				a.log.Warn("patch pod status", "pod", key, "error", perr.Error())
			}
		}
		return err
	}
	p, err := startProcess(ctx, pod, bin, argv, environ, dir, files)
	if err != nil {
		// The kubelet's StartError: the container never ran, exit code 128.
		now := metav1.Now()
		a.recorder.Event(pod, corev1.EventTypeWarning, "Failed", err.Error())
		return a.patchStatus(ctx, pod, terminatedStatus(pod, bin, 0, exit{code: 128, message: err.Error(), started: now, finished: now}))
	}
	p.tokens = tokens
	a.mu.Lock()
	a.procs[pod.UID] = p
	a.mu.Unlock()
	a.log.Info("started pod", "pod", key, "pid", p.pid, "binary", bin, "args", strings.Join(argv, " "))
	a.recorder.Eventf(pod, corev1.EventTypeNormal, "Started", "Started container %s: %s, process %d", pod.Spec.Containers[0].Name, bin, p.pid)
	err = a.reportRunning(ctx, p)
	a.wg.Add(1)
	go a.watch(ctx, p)
	return err
}

// prepare materializes the volumes and returns the process's arguments, environment and
// working directory.
func (a *agent) prepare(ctx context.Context, pod *corev1.Pod, files podFiles) ([]string, []string, string, []*tokenFile, error) {
	for _, d := range []string{files.dir, files.home()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, nil, "", nil, fmt.Errorf("pod directory: %w", err)
		}
	}
	tokens, err := a.mat.materialize(ctx, pod, files)
	if err != nil {
		return nil, nil, "", nil, err
	}
	c := &pod.Spec.Containers[0]
	paths := newPathMap(mountPaths(c, files))
	host, port := hostPort(a.server)
	base := newEnvList()
	base.set("PATH", os.Getenv("PATH"))
	base.set("HOSTNAME", pod.Name)
	base.set("HOME", files.home())
	base.set("KUBERNETES_SERVICE_HOST", host)
	base.set("KUBERNETES_SERVICE_PORT", port)
	base.set(envTerminationLog, files.termination())
	if tmp := paths.path("/tmp"); tmp != "/tmp" {
		base.set("TMPDIR", tmp)
	}
	if kc := podKubeconfig(a.server, paths, pod.Namespace); kc != nil {
		if err := writeKubeconfig(kc, files.kubeconfig()); err != nil {
			return nil, nil, "", nil, err
		}
		base.set("KUBECONFIG", files.kubeconfig())
	}
	env, err := resolveEnv(ctx, pod, c, a, base)
	if err != nil {
		return nil, nil, "", nil, err
	}
	for _, n := range env.names {
		// Only what the container declared names container paths; the agent's own values
		// (KUBECONFIG, HOME, TMPDIR, ...) are host paths already and must stay as they are,
		// even when the work directory lies under a mount path such as /tmp.
		if v, ok := base.lookup(n); ok && v == env.values[n] {
			continue
		}
		env.values[n] = paths.path(env.values[n])
	}
	argv := containerArgs(c, env.lookup, paths)
	dir := files.dir
	if c.WorkingDir != "" {
		// Only a mounted working directory exists here; any other stays the pod directory.
		if d := paths.path(c.WorkingDir); d != c.WorkingDir {
			dir = d
		}
	}
	return argv, env.environ(), dir, tokens, nil
}

// containerArgs returns the arguments of the image's program: command[1:] (command[0] stands
// for the program) and args, with $(VAR) expanded and container paths rewritten.
func containerArgs(c *corev1.Container, lookup func(string) (string, bool), paths pathMap) []string {
	var raw []string
	if len(c.Command) > 1 {
		raw = append(raw, c.Command[1:]...)
	}
	raw = append(raw, c.Args...)
	argv := make([]string, 0, len(raw))
	for _, s := range raw {
		argv = append(argv, paths.arg(expand(s, lookup)))
	}
	return argv
}

// watch waits for the process to end, reports it, and renews its tokens meanwhile.
func (a *agent) watch(ctx context.Context, p *proc) {
	defer a.wg.Done()
	go a.renewTokens(ctx, p)
	p.wait()
	key := p.key
	// The kubelet unmounts a finished pod's volumes (Secrets included).
	_ = os.RemoveAll(filepath.Join(p.files.dir, "volumes")) // #nosec G703 -- the pod directory the agent made
	if ctx.Err() != nil {
		return // the agent stops: the next one reports the pod
	}
	a.log.Info("pod process ended", "pod", key, "pid", p.pid, "exitCode", p.exit.code)
	st := terminatedStatus(p.pod, p.binary, p.pid, p.exit)
	for attempt := 0; ; attempt++ {
		err := a.patchStatus(ctx, p.pod, st)
		if err == nil || apierrors.IsNotFound(err) || apierrors.IsConflict(err) || ctx.Err() != nil {
			break
		}
		a.log.Warn("report pod exit", "pod", key, "error", err.Error())
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Duration(min(attempt+1, 10)) * time.Second):
		}
	}
	if p.exit.code == 0 {
		a.recorder.Event(p.pod, corev1.EventTypeNormal, reasonCompleted, "Container "+p.pod.Spec.Containers[0].Name+" exited with code 0")
	} else {
		a.recorder.Eventf(p.pod, corev1.EventTypeWarning, reasonError, "Container %s exited with code %d", p.pod.Spec.Containers[0].Name, p.exit.code)
	}
	p.mu.Lock()
	p.settled = true
	p.mu.Unlock()
	a.queue.Add(key) // a deleted pod is deleted for good now
}

func (a *agent) renewTokens(ctx context.Context, p *proc) {
	if len(p.tokens) == 0 {
		return
	}
	t := time.NewTicker(tokenCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.exited:
			return
		case now := <-t.C:
			for _, tok := range p.tokens {
				if tok.due(now) {
					if err := a.mat.refresh(ctx, p.pod, tok); err != nil {
						a.log.Warn("renew service account token", "pod", p.key, "error", err.Error())
					}
				}
			}
		}
	}
}

func (a *agent) reportRunning(ctx context.Context, p *proc) error {
	if err := a.patchStatus(ctx, p.pod, runningStatus(p.pod, p.binary, p.pid, p.start)); err != nil {
		return err
	}
	p.mu.Lock()
	p.reported = true
	p.mu.Unlock()
	return nil
}

// fail reports pod Failed with exit code 137: its process is lost or never ran.
func (a *agent) fail(ctx context.Context, pod *corev1.Pod, reason, message string) error {
	a.recorder.Event(pod, corev1.EventTypeWarning, reason, message)
	return a.patchStatus(ctx, pod, lostStatus(pod, reason, message, metav1.Now()))
}

// patchStatus writes the pod's status with a strategic merge patch (conditions merge by
// type), guarded by the pod's UID as the kubelet's are.
func (a *agent) patchStatus(ctx context.Context, pod *corev1.Pod, st corev1.PodStatus) error {
	body, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"uid": pod.UID},
		"status":   st,
	})
	if err != nil {
		return fmt.Errorf("encode status of pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	_, err = a.node.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.StrategicMergePatchType, body, metav1.PatchOptions{}, "status")
	if err != nil {
		return fmt.Errorf("patch status of pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return nil
}

// gcLoop removes what vanished pods left: their processes from the table and their
// directories (logs included: `kubectl logs` needs the pod).
func (a *agent) gcLoop(ctx context.Context) {
	t := time.NewTicker(gcEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			a.gc()
		}
	}
}

func (a *agent) gc() {
	pods, err := a.pods.List(labels.Everything())
	if err != nil {
		return
	}
	live := map[types.UID]bool{}
	for _, p := range pods {
		live[p.UID] = true
	}
	a.mu.Lock()
	for uid, p := range a.procs {
		if !live[uid] && p.done() {
			delete(a.procs, uid)
		}
	}
	running := map[types.UID]bool{}
	for uid := range a.procs {
		running[uid] = true
	}
	a.mu.Unlock()
	root := filepath.Join(a.o.workDir, "pods")
	entries, _ := os.ReadDir(root)
	for _, e := range entries {
		i := strings.LastIndex(e.Name(), "_")
		if i < 0 {
			continue
		}
		uid := types.UID(e.Name()[i+1:])
		if !live[uid] && !running[uid] {
			_ = os.RemoveAll(filepath.Join(root, e.Name())) // #nosec G703 -- an entry of the agent's own work dir
		}
	}
}

// configMap implements objects with the node's credentials (the node authorizer lets a node
// read what its pods refer to).
func (a *agent) configMap(ctx context.Context, namespace, name string) (*corev1.ConfigMap, error) {
	return a.node.CoreV1().ConfigMaps(namespace).Get(ctx, name, metav1.GetOptions{})
}

func (a *agent) secret(ctx context.Context, namespace, name string) (*corev1.Secret, error) {
	return a.node.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
}

// token implements tokenSource: a token of the pod's service account, bound to the pod.
func (a *agent) token(ctx context.Context, pod *corev1.Pod, p *corev1.ServiceAccountTokenProjection) (string, time.Time, error) {
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: p.ExpirationSeconds,
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}
	if p.Audience != "" {
		tr.Spec.Audiences = []string{p.Audience}
	}
	out, err := a.node.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, tr, metav1.CreateOptions{})
	if err != nil {
		return "", time.Time{}, err
	}
	if out.Status.Token == "" {
		return "", time.Time{}, errors.New("the API server returned an empty token")
	}
	return out.Status.Token, out.Status.ExpirationTimestamp.Time, nil
}
