package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/test/testenv"
)

// kubectlAPIServer is a real kube-apiserver with Sluice's CRD, an admin client, and a
// kubeconfig whose contexts team-a (the current one) and team-b default to those namespaces.
type kubectlAPIServer struct {
	admin      client.Client
	kubeconfig string
}

func startKubectlAPIServer(t *testing.T) *kubectlAPIServer {
	t.Helper()
	_, env := testenv.StartAPIServer(t)
	user, err := env.AddUser(envtest.User{Name: "plugin-user", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatalf("add user: %v", err)
	}
	cfg := user.Config()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := etlv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	admin, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	s := &kubectlAPIServer{admin: admin, kubeconfig: filepath.Join(t.TempDir(), "kubeconfig")}
	writeKubeconfig(t, s.kubeconfig, cfg)
	for _, ns := range []string{"team-a", "team-b", kubectlDefaultOperatorNamespace, "ops-elsewhere"} {
		s.create(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	}
	return s
}

// writeKubeconfig writes a kubeconfig for cfg with the contexts team-a (current) and team-b.
func writeKubeconfig(t *testing.T, path string, cfg *rest.Config) {
	t.Helper()
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["plugin-user"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	for _, ns := range []string{"team-a", "team-b"} {
		kc.Contexts[ns] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "plugin-user", Namespace: ns}
	}
	kc.CurrentContext = "team-a"
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatalf("write kubeconfig: %v", err)
	}
}

func (s *kubectlAPIServer) create(t *testing.T, obj client.Object) {
	t.Helper()
	if err := s.admin.Create(context.Background(), obj); err != nil {
		t.Fatalf("create %T %s: %v", obj, obj.GetName(), err)
	}
}

// pipeline creates a pipeline and then gives it status st, as the manager and runner would.
func (s *kubectlAPIServer) pipeline(t *testing.T, ns, name string, meta func(*etlv1.ETLPipeline), st etlv1.ETLPipelineStatus) *etlv1.ETLPipeline {
	t.Helper()
	p := pipelineFixture(ns, name)
	if meta != nil {
		meta(&p)
	}
	s.create(t, &p)
	if st.Phase != "" {
		p.Status = st
		if err := s.admin.Status().Update(context.Background(), &p); err != nil {
			t.Fatalf("status of %s/%s: %v", ns, name, err)
		}
	}
	return &p
}

func (s *kubectlAPIServer) get(t *testing.T, ns, name string) *etlv1.ETLPipeline {
	t.Helper()
	p := &etlv1.ETLPipeline{}
	if err := s.admin.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, p); err != nil {
		t.Fatalf("get %s/%s: %v", ns, name, err)
	}
	return p
}

// run runs the plugin in process with the server's kubeconfig.
func (s *kubectlAPIServer) run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	t.Setenv("KUBECONFIG", s.kubeconfig)
	return runKubectlTest(t, args...)
}

// runnerJob creates the runner Job of p's current run in ns, and a started pod of it.
func (s *kubectlAPIServer) runnerJob(t *testing.T, ns, name string, owner *etlv1.ETLPipeline) *corev1.Pod {
	t.Helper()
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name,
			Annotations: map[string]string{etlv1.AnnotationPipeline: owner.Namespace + "/" + owner.Name}},
		Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Containers:    []corev1.Container{{Name: "runner", Image: "ghcr.io/sluice-dev/sluice:test"}},
		}}},
	}
	s.create(t, job)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-x7k2p", Labels: job.Spec.Template.Labels},
		Spec:       job.Spec.Template.Spec,
	}
	s.create(t, pod)
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{{
		Name: "runner", Image: "ghcr.io/sluice-dev/sluice:test", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}},
	}}}
	if err := s.admin.Status().Update(context.Background(), pod); err != nil {
		t.Fatalf("pod status: %v", err)
	}
	return pod
}

func TestKubectlPluginAgainstAPIServer(t *testing.T) {
	s := startKubectlAPIServer(t)
	now := metav1.Now()
	minutesAgo := func(m int) *metav1.Time { return &metav1.Time{Time: now.Add(-time.Duration(m) * time.Minute)} }

	orders := s.pipeline(t, "team-a", "orders", func(p *etlv1.ETLPipeline) { p.Spec.Schedule = "*/15 * * * *" }, etlv1.ETLPipelineStatus{
		Phase: etlv1.PhaseIdle,
		Conditions: []metav1.Condition{{Type: etlv1.ConditionReady, Status: metav1.ConditionTrue, Reason: etlv1.ReasonSucceeded,
			Message: "the last run completed", LastTransitionTime: *minutesAgo(5)}},
		Run: &etlv1.RunStatus{ID: "r2", JobName: "team-a-orders-r2", Trigger: etlv1.TriggerSchedule,
			StartTime: minutesAgo(6), CompletionTime: minutesAgo(5), RowsRead: 1200, RowsWritten: 1200, Batches: 1},
		Checkpoint:       &etlv1.CheckpointStatus{Values: []string{"2025-06-01T11:00:00Z", "1200"}, Time: minutesAgo(5)},
		History:          []etlv1.RunSummary{{ID: "r2", Trigger: etlv1.TriggerSchedule, Outcome: etlv1.PhaseIdle, StartTime: minutesAgo(6), CompletionTime: minutesAgo(5), Duration: "1m0s", RowsRead: 1200, RowsWritten: 1200}},
		Totals:           &etlv1.PipelineTotals{RowsRead: 1200, RowsWritten: 1200, Batches: 1, RunsSucceeded: 1, LastSuccessTime: minutesAgo(5)},
		NextScheduledRun: &metav1.Time{Time: now.Add(10 * time.Minute)},
	})
	s.pipeline(t, "team-a", "tracked", func(p *etlv1.ETLPipeline) {
		p.Annotations = map[string]string{"argocd.argoproj.io/tracking-id": "analytics:etl.sluice.dev/ETLPipeline:team-a/tracked"}
	}, etlv1.ETLPipelineStatus{Phase: etlv1.PhaseRunning, Run: &etlv1.RunStatus{ID: "r9", JobName: "team-a-tracked-r9", StartTime: minutesAgo(1)}})
	s.pipeline(t, "team-b", "customers", func(p *etlv1.ETLPipeline) { p.Spec.DesiredState = etlv1.DesiredPaused },
		etlv1.ETLPipelineStatus{Phase: etlv1.PhasePaused})

	t.Run("status lists the context's namespace, another with --context or -n, every one with -A", func(t *testing.T) {
		code, stdout, stderr := s.run(t, "status")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		wantTable(t, stdout, `NAME\s+PHASE\s+DESIRED\s+LAST RUN\s+ROWS\s+FRESHNESS\s+NEXT RUN`,
			`orders\s+Idle\s+Running\s+Succeeded \(5m\d*s? ago\)\s+1200\s+5m\d*s?\s+in (9m\d+s|10m)`,
			`tracked\s+Running\s+Running\s+<none>\s+0\s+<none>\s+<none>`)

		for _, args := range [][]string{{"--context", "team-b", "status"}, {"status", "-n", "team-b"}} {
			code, stdout, stderr = s.run(t, args...)
			if code != 0 {
				t.Fatalf("%q: exit %d: %s", args, code, stderr)
			}
			wantTable(t, stdout, `NAME\s+PHASE`, `customers\s+Paused\s+Paused\s+<none>\s+<none>\s+<none>\s+<none>`)
		}

		code, stdout, stderr = s.run(t, "status", "-A")
		if code != 0 {
			t.Fatalf("-A: exit %d: %s", code, stderr)
		}
		wantTable(t, stdout, `NAMESPACE\s+NAME\s+PHASE`, `team-a\s+orders\s+Idle`, `team-a\s+tracked\s+Running`, `team-b\s+customers\s+Paused`)

		code, stdout, stderr = s.run(t, "status", "-n", "ops-elsewhere")
		if code != 0 || stdout != "" || !strings.Contains(stderr, "No ETLPipelines found in namespace ops-elsewhere.") {
			t.Errorf("an empty namespace: exit %d, stdout %q, stderr %q", code, stdout, stderr)
		}
	})

	t.Run("status -o json and -o yaml print what the API holds", func(t *testing.T) {
		code, stdout, stderr := s.run(t, "status", "-A", "-o", "json")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		var list etlv1.ETLPipelineList
		if err := json.Unmarshal([]byte(stdout), &list); err != nil {
			t.Fatalf("-A -o json does not parse: %v\n%s", err, stdout)
		}
		var names []string
		for _, p := range list.Items {
			names = append(names, p.Namespace+"/"+p.Name)
		}
		if list.Kind != "ETLPipelineList" || !slices.Equal(names, []string{"team-a/orders", "team-a/tracked", "team-b/customers"}) {
			t.Errorf("-A -o json: kind %q, items %q", list.Kind, names)
		}

		code, stdout, stderr = s.run(t, "status", "orders", "-o", "yaml")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		var p etlv1.ETLPipeline
		if err := yaml.UnmarshalStrict([]byte(stdout), &p); err != nil {
			t.Fatalf("-o yaml does not parse: %v\n%s", err, stdout)
		}
		if p.Kind != "ETLPipeline" || p.APIVersion != "etl.sluice.dev/v1alpha1" || p.Status.Run == nil || p.Status.Run.RowsWritten != 1200 || len(p.ManagedFields) != 0 {
			t.Errorf("-o yaml: %s %s, run %+v, %d managed fields", p.APIVersion, p.Kind, p.Status.Run, len(p.ManagedFields))
		}
		code, stdout, _ = s.run(t, "status", "orders", "-o", "json")
		if code != 0 || json.Unmarshal([]byte(stdout), &p) != nil || p.Name != "orders" {
			t.Errorf("status NAME -o json: exit %d, %s", code, stdout)
		}
	})

	t.Run("status NAME reports the run and finds its runner pod through the Job", func(t *testing.T) {
		pod := s.runnerJob(t, kubectlDefaultOperatorNamespace, orders.Status.Run.JobName, orders)
		code, stdout, stderr := s.run(t, "status", "orders")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		for _, want := range []string{
			"Name:           orders", "Phase:          Idle", "Mode:         Incremental", "Schedule:     */15 * * * * (next run in",
			"Ready ", "Succeeded", "the last run completed",
			"Last run:", "ID:           r2", "Trigger:      Schedule", "Rows:         read 1200, written 1200, deleted 0 in 1 batches",
			"Values:       2025-06-01T11:00:00Z, 1200", "History:", "Totals:", "Runs:         succeeded 1, failed 0, paused 0",
			// envtest has no kubelet: the pod is found, its log is empty.
			"Runner log (pod " + pod.Namespace + "/" + pod.Name + ", last 0 lines):\n  (the log is empty)",
		} {
			if !strings.Contains(stdout, want) {
				t.Errorf("the report lacks %q:\n%s", want, stdout)
			}
		}
	})

	t.Run("pause of a pipeline tracked by Argo CD warns about self-heal and patches anyway; resume too", func(t *testing.T) {
		code, stdout, stderr := s.run(t, "pause", "tracked")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		for _, want := range []string{`Warning: ETLPipeline team-a/tracked is tracked by Application "analytics"`, "self-heal", "commit it to Git", "ignoreDifferences"} {
			if !strings.Contains(strings.Join(strings.Fields(stderr), " "), want) {
				t.Errorf("stderr lacks %q:\n%s", want, stderr)
			}
		}
		if !strings.Contains(stdout, "ETLPipeline team-a/tracked: spec.desiredState Running -> Paused; the run stops after its current batch") {
			t.Errorf("stdout: %q", stdout)
		}
		p := s.get(t, "team-a", "tracked")
		if p.Spec.DesiredState != etlv1.DesiredPaused {
			t.Fatalf("desiredState %q after pause, want Paused", p.Spec.DesiredState)
		}
		if !slices.ContainsFunc(p.ManagedFields, func(m metav1.ManagedFieldsEntry) bool { return m.Manager == kubectlFieldManager }) {
			t.Errorf("no field manager %s among %+v", kubectlFieldManager, p.ManagedFields)
		}

		code, stdout, stderr = s.run(t, "pause", "tracked")
		if code != 0 || !strings.Contains(stdout, "already Paused") || stderr != "" {
			t.Errorf("a second pause: exit %d, stdout %q, stderr %q; want nothing to do, no warning", code, stdout, stderr)
		}

		code, _, stderr = s.run(t, "resume", "tracked")
		if code != 0 || !strings.Contains(stderr, "the pipeline pauses again") {
			t.Errorf("resume: exit %d, stderr %q", code, stderr)
		}
		if p := s.get(t, "team-a", "tracked"); p.Spec.DesiredState != etlv1.DesiredRunning {
			t.Errorf("desiredState %q after resume, want Running", p.Spec.DesiredState)
		}
	})

	t.Run("resume of an untracked pipeline patches without a warning", func(t *testing.T) {
		code, stdout, stderr := s.run(t, "-n", "team-b", "resume", "customers")
		if code != 0 || stderr != "" || !strings.Contains(stdout, "Paused -> Running; a run starts from the checkpoint") {
			t.Errorf("resume: exit %d, stdout %q, stderr %q", code, stdout, stderr)
		}
		if p := s.get(t, "team-b", "customers"); p.Spec.DesiredState != etlv1.DesiredRunning {
			t.Errorf("desiredState %q, want Running", p.Spec.DesiredState)
		}
	})

	t.Run("run sets the run-requested-at annotation to the current time", func(t *testing.T) {
		before := time.Now().Truncate(time.Second)
		code, stdout, stderr := s.run(t, "run", "orders")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		v := s.get(t, "team-a", "orders").Annotations[etlv1.AnnotationRunRequestedAt]
		at, err := time.Parse(time.RFC3339, v)
		if err != nil || at.Before(before) || at.After(time.Now()) {
			t.Errorf("annotation %q (%v), want an RFC 3339 time of now", v, err)
		}
		if !strings.Contains(stdout, "ETLPipeline team-a/orders: "+etlv1.AnnotationRunRequestedAt+"="+v+"; the manager starts the run.") {
			t.Errorf("stdout %q", stdout)
		}
		// A second request in the same second is a new value all the same.
		if code, _, _ := s.run(t, "run", "orders"); code != 0 || s.get(t, "team-a", "orders").Annotations[etlv1.AnnotationRunRequestedAt] == v {
			t.Errorf("a second run request: exit %d, annotation unchanged %q", code, v)
		}
	})

	t.Run("run --wait exits 1 when the requested run fails", func(t *testing.T) {
		type result struct {
			code           int
			stdout, stderr string
		}
		done := make(chan result, 1)
		t.Setenv("KUBECONFIG", s.kubeconfig)
		previous := s.get(t, "team-a", "orders").Annotations[etlv1.AnnotationRunRequestedAt]
		go func() {
			var stdout, stderr bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			code := runKubectlContext(ctx, []string{"run", "orders", "--wait", "--timeout", "50s"}, &stdout, &stderr)
			done <- result{code, stdout.String(), stderr.String()}
		}()
		// The manager's part, by hand: it handles the request with run r3, which fails.
		var value string
		deadline := time.Now().Add(30 * time.Second)
		for value == "" || value == previous {
			if time.Now().After(deadline) {
				t.Fatal("run --wait set no annotation")
			}
			time.Sleep(100 * time.Millisecond)
			value = s.get(t, "team-a", "orders").Annotations[etlv1.AnnotationRunRequestedAt]
		}
		p := s.get(t, "team-a", "orders")
		p.Status.Phase, p.Status.LastHandledRunRequest = etlv1.PhaseRunning, value
		p.Status.Run = &etlv1.RunStatus{ID: "r3", JobName: "team-a-orders-r3", Trigger: etlv1.TriggerAnnotation, StartTime: &now}
		if err := s.admin.Status().Update(context.Background(), p); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1500 * time.Millisecond)
		p.Status.Phase = etlv1.PhaseFailed
		p.Status.Run.CompletionTime, p.Status.Run.ErrorClass, p.Status.Run.Message = &metav1.Time{Time: now.Add(time.Second)}, etlv1.ErrorBusiness, `relation "public.orders" does not exist`
		if err := s.admin.Status().Update(context.Background(), p); err != nil {
			t.Fatal(err)
		}
		r := <-done
		if r.code != 1 || !strings.Contains(r.stderr, "run r3 started") ||
			!strings.Contains(r.stderr, `error: run r3 failed: read 0, written 0, deleted 0 rows in 1s; Business: relation "public.orders" does not exist`) {
			t.Errorf("run --wait: exit %d, stdout %q, stderr %q; want exit 1 naming the failure", r.code, r.stdout, r.stderr)
		}
	})

	t.Run("logs finds a Job outside the operator namespace it was told, never another pipeline's", func(t *testing.T) {
		tracked := s.get(t, "team-a", "tracked")
		// A Job of the same name in sluice-system that belongs to someone else.
		other := pipelineFixture("team-b", "customers")
		s.runnerJob(t, kubectlDefaultOperatorNamespace, tracked.Status.Run.JobName, &other)
		s.runnerJob(t, "ops-elsewhere", tracked.Status.Run.JobName, tracked)
		// And its replacement pod, created a second later.
		time.Sleep(1100 * time.Millisecond)
		job := &batchv1.Job{}
		if err := s.admin.Get(context.Background(), client.ObjectKey{Namespace: "ops-elsewhere", Name: tracked.Status.Run.JobName}, job); err != nil {
			t.Fatal(err)
		}
		s.create(t, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ops-elsewhere", Name: job.Name + "-second", Labels: job.Spec.Template.Labels}, Spec: job.Spec.Template.Spec})
		code, stdout, stderr := s.run(t, "logs", "tracked", "--tail", "5")
		if code != 1 || stdout != "" || stderr != "error: pod ops-elsewhere/"+job.Name+"-second is Pending: not started yet\n" {
			t.Errorf("logs: exit %d, stdout %q, stderr %q; want the newest pod of the Job in ops-elsewhere", code, stdout, stderr)
		}
	})

	t.Run("a pipeline or run that does not exist exits 1 and says so", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"status", "nope"}, `error: ETLPipeline "nope" not found in namespace "team-a"`},
			{[]string{"pause", "nope", "-n", "team-b"}, `error: ETLPipeline "nope" not found in namespace "team-b"`},
			{[]string{"run", "nope"}, `error: ETLPipeline "nope" not found in namespace "team-a"`},
			{[]string{"logs", "nope"}, `error: ETLPipeline "nope" not found in namespace "team-a"`},
			{[]string{"logs", "orders", "--run", "r0"}, `has no run "r0"`},
			{[]string{"logs", "customers", "-n", "team-b"}, "error: ETLPipeline team-b/customers has not run yet"},
			{[]string{"--context", "nowhere", "status"}, `context "nowhere" does not exist`},
		} {
			code, stdout, stderr := s.run(t, tc.args...)
			if code != 1 || !strings.Contains(stderr, tc.want) || stdout != "" {
				t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit 1 and %q", tc.args, code, stdout, stderr, tc.want)
			}
		}
	})

	t.Run("a bad flag exits 2 before any API call", func(t *testing.T) {
		code, _, stderr := s.run(t, "status", "--no-such-flag")
		if code != 2 || !strings.Contains(stderr, "unknown flag: --no-such-flag") {
			t.Errorf("exit %d, stderr %q; want exit 2", code, stderr)
		}
	})

	t.Run("completion offers the namespace's pipeline names", func(t *testing.T) {
		code, stdout, _ := s.run(t, "__complete", "pause", "")
		if code != 0 || !strings.Contains(stdout, "orders\ntracked\n") {
			t.Errorf("__complete pause: exit %d, %q", code, stdout)
		}
		t.Setenv("KUBECONFIG", s.kubeconfig)
		args, _ := kubectlPluginArgs("/usr/bin/kubectl_complete-sluice", []string{"-n", "team-b", "status", "cu"})
		code, stdout, _ = runKubectlTest(t, args...)
		if code != 0 || !strings.HasPrefix(stdout, "customers\n") {
			t.Errorf("kubectl_complete-sluice -n team-b status cu: exit %d, %q", code, stdout)
		}
	})
}

// wantTable asserts that each pattern matches a line of the table, in order.
func wantTable(t *testing.T, table string, patterns ...string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(table, "\n"), "\n")
	if len(lines) != len(patterns) {
		t.Errorf("%d lines, want %d:\n%s", len(lines), len(patterns), table)
		return
	}
	for i, p := range patterns {
		if !regexp.MustCompile(`^` + p + `(\s|$)`).MatchString(lines[i]) {
			t.Errorf("line %d %q does not match %q:\n%s", i, lines[i], p, table)
		}
	}
}

func TestKubectlRejectsAgainstAPIServer(t *testing.T) {
	s := startKubectlAPIServer(t)
	now := metav1.Now()
	minutesAgo := func(m int) *metav1.Time { return &metav1.Time{Time: now.Add(-time.Duration(m) * time.Minute)} }
	s.pipeline(t, "team-b", "customers", nil, etlv1.ETLPipelineStatus{Phase: etlv1.PhaseIdle})
	t.Run("rejects lists the newest rejects of the status and --replay requests their replay", func(t *testing.T) {
		s.pipeline(t, "team-b", "rejecting", nil, etlv1.ETLPipelineStatus{Phase: etlv1.PhaseIdle, UnresolvedRejects: 7,
			RecentRejects: []etlv1.RejectSummary{{Key: "id=42", Stage: "sink", Class: "23514", RunID: "r3", Time: minutesAgo(2), Attempts: 1,
				Message: "ERROR: new row for relation \"items\" violates check constraint \"amount_positive\" (SQLSTATE 23514)"}}})
		code, stdout, stderr := s.run(t, "rejects", "-n", "team-b", "rejecting")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		for _, want := range []string{`(?m)^ETLPipeline team-b/rejecting: 7 rows in etl.etl_rejects`, `(?m)^KEY\s+STAGE\s+CLASS\s+RUN\s+AGE\s+ATTEMPTS\s+MESSAGE$`,
			`(?m)^id=42\s+sink\s+23514\s+r3\s+2m\d*s?\s+1\s+ERROR: new row for relation "items" violates check constraint`,
			`SELECT \* FROM etl.rejects WHERE namespace = 'team-b' AND name = 'rejecting'`} {
			if !regexp.MustCompile(want).MatchString(stdout) {
				t.Errorf("rejects output lacks %q:\n%s", want, stdout)
			}
		}
		code, stdout, _ = s.run(t, "rejects", "-n", "team-b", "rejecting", "-o", "json")
		var out kubectlRejects
		if code != 0 || json.Unmarshal([]byte(stdout), &out) != nil || out.Unresolved != 7 || len(out.Recent) != 1 || out.Recent[0].Key != "id=42" {
			t.Errorf("rejects -o json: exit %d, %s", code, stdout)
		}
		code, stdout, stderr = s.run(t, "rejects", "-n", "team-b", "rejecting", "--replay")
		if code != 0 || !strings.Contains(stdout, etlv1.AnnotationReplayRejectsRequestedAt+"=") {
			t.Fatalf("--replay: exit %d, %s %s", code, stdout, stderr)
		}
		if v := s.get(t, "team-b", "rejecting").Annotations[etlv1.AnnotationReplayRejectsRequestedAt]; v == "" {
			t.Fatalf("--replay set no annotation")
		}
		if code, _, _ = s.run(t, "rejects", "-n", "team-b", "rejecting", "--replay", "-o", "json"); code != 2 {
			t.Errorf("--replay with -o: exit %d, want 2", code)
		}
		code, stdout, _ = s.run(t, "rejects", "-n", "team-b", "customers")
		if code != 0 || !strings.Contains(stdout, "has no rejected rows") {
			t.Errorf("a pipeline without rejects: exit %d, %s", code, stdout)
		}
	})
}
