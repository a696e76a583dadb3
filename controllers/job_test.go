package controllers

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

func TestJobName(t *testing.T) {
	long := strings.Repeat("a", 200)
	cases := []struct {
		name, ns, pipeline, run string
		want                    string // "" when only the properties are checked
	}{
		{"short names are kept readable", "team-a", "orders", "x7k2m9qp", "team-a-orders-x7k2m9qp"},
		{"a long name is hashed", "team-a", long, "x7k2m9qp", ""},
		{"a long namespace is hashed", strings.Repeat("n", 63), "orders", "x7k2m9qp", ""},
		{"dots are not allowed in a DNS label", "team-a", "orders.v2", "x7k2m9qp", ""},
		{"uppercase never appears", "team-a", "Orders", "x7k2m9qp", ""},
	}
	seen := map[string]string{}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := JobName(tc.ns, tc.pipeline, tc.run)
			if tc.want != "" && got != tc.want {
				t.Fatalf("JobName = %q, want %q", got, tc.want)
			}
			if errs := validation.IsDNS1123Label(got); len(errs) > 0 {
				t.Fatalf("JobName = %q is not a DNS-1123 label: %v", got, errs)
			}
			if !strings.HasSuffix(got, "-"+tc.run) {
				t.Fatalf("JobName = %q does not end with the run id", got)
			}
			if again := JobName(tc.ns, tc.pipeline, tc.run); again != got {
				t.Fatalf("JobName is not deterministic: %q then %q", got, again)
			}
			if prev, dup := seen[got]; dup {
				t.Fatalf("JobName %q collides with %s", got, prev)
			}
			seen[got] = tc.ns + "/" + tc.pipeline
		})
	}
	// Names that truncate to the same prefix stay apart through the hash.
	a, b := JobName("team-a", long+"x", "r1"), JobName("team-a", long+"y", "r1")
	if a == b {
		t.Fatalf("two long names share the Job name %q", a)
	}
}

func TestLabelValue(t *testing.T) {
	for _, v := range []string{"orders", strings.Repeat("p", 63), strings.Repeat("p", 64), strings.Repeat("a.b-", 60), "-x-"} {
		got := labelValue(v)
		if errs := validation.IsValidLabelValue(got); len(errs) > 0 {
			t.Fatalf("labelValue(%q) = %q is not a label value: %v", v, got, errs)
		}
		if len(validation.IsValidLabelValue(v)) == 0 && got != v {
			t.Fatalf("labelValue(%q) = %q changed a valid value", v, got)
		}
	}
	if labelValue(strings.Repeat("p", 64)) == labelValue(strings.Repeat("p", 65)) {
		t.Fatal("two long values share a label value")
	}
}

func envMap(c corev1.Container) map[string]corev1.EnvVar {
	m := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		m[e.Name] = e
	}
	return m
}

func secretRef(t *testing.T, env map[string]corev1.EnvVar, name string) *corev1.SecretKeySelector {
	t.Helper()
	e, ok := env[name]
	if !ok || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
		t.Fatalf("env %s is not a secretKeyRef: %+v", name, e)
	}
	if e.Value != "" {
		t.Fatalf("env %s carries a literal value", name)
	}
	return e.ValueFrom.SecretKeyRef
}

func TestBuildRunnerJob(t *testing.T) {
	cfg := testConfig()
	run := &etlv1.RunStatus{ID: "abc123xy", Generation: 7, Trigger: etlv1.TriggerAnnotation}

	type check func(t *testing.T, job *batchv1.Job)
	common := func(t *testing.T, job *batchv1.Job, p *etlv1.ETLPipeline) {
		t.Helper()
		if job.Namespace != "sluice-system" {
			t.Errorf("namespace = %q, want the operator's", job.Namespace)
		}
		if job.Name != JobName(p.Namespace, p.Name, run.ID) {
			t.Errorf("name = %q", job.Name)
		}
		if len(job.OwnerReferences) != 0 {
			t.Errorf("a Job in another namespace cannot have an owner reference: %v", job.OwnerReferences)
		}
		wantLabels := map[string]string{
			"app.kubernetes.io/name": "sluice", "app.kubernetes.io/component": "runner", "app.kubernetes.io/managed-by": "sluice",
			etlv1.LabelPipelineNamespace: p.Namespace, etlv1.LabelPipelineName: p.Name, etlv1.LabelRunID: run.ID,
		}
		if !equality.Semantic.DeepEqual(job.Labels, wantLabels) || !equality.Semantic.DeepEqual(job.Spec.Template.Labels, wantLabels) {
			t.Errorf("labels = %v / pod %v, want %v", job.Labels, job.Spec.Template.Labels, wantLabels)
		}
		if job.Annotations[etlv1.AnnotationPipeline] != p.Namespace+"/"+p.Name {
			t.Errorf("pipeline annotation = %q", job.Annotations[etlv1.AnnotationPipeline])
		}
		if !isOurJob(job, p, run.ID) {
			t.Error("the built Job is not recognised as ours")
		}
		if isOurJob(job, p, "other") {
			t.Error("the Job is taken for another run's")
		}
		spec := job.Spec
		if *spec.BackoffLimit != 3 {
			t.Errorf("backoffLimit = %d, want the config's 3", *spec.BackoffLimit)
		}
		if spec.PodReplacementPolicy == nil || *spec.PodReplacementPolicy != batchv1.Failed {
			t.Error("a replacement pod must wait for the old one to be gone")
		}
		rules := spec.PodFailurePolicy.Rules
		if len(rules) != 2 || rules[0].Action != batchv1.PodFailurePolicyActionFailJob ||
			!equality.Semantic.DeepEqual(rules[0].OnExitCodes.Values, []int32{configv1.ExitBusiness, configv1.ExitFenced}) ||
			rules[0].OnExitCodes.Operator != batchv1.PodFailurePolicyOnExitCodesOpIn ||
			rules[1].Action != batchv1.PodFailurePolicyActionIgnore || rules[1].OnPodConditions[0].Type != corev1.DisruptionTarget {
			t.Errorf("podFailurePolicy = %+v", spec.PodFailurePolicy)
		}
		pod := spec.Template.Spec
		if pod.RestartPolicy != corev1.RestartPolicyNever {
			t.Errorf("restartPolicy = %s", pod.RestartPolicy)
		}
		if pod.ServiceAccountName != RunnerServiceAccount(p) || pod.AutomountServiceAccountToken == nil || !*pod.AutomountServiceAccountToken {
			t.Errorf("service account = %q automount=%v", pod.ServiceAccountName, pod.AutomountServiceAccountToken)
		}
		if len(pod.Containers) != 1 {
			t.Fatalf("containers = %d", len(pod.Containers))
		}
		c := pod.Containers[0]
		if c.Image != cfg.Runner.Image || c.ImagePullPolicy != corev1.PullIfNotPresent {
			t.Errorf("image = %s (%s)", c.Image, c.ImagePullPolicy)
		}
		if !equality.Semantic.DeepEqual(c.Args, []string{"runner", "--config", configv1.DefaultConfigPath}) {
			t.Errorf("args = %v", c.Args)
		}
		if c.TerminationMessagePolicy != corev1.TerminationMessageFallbackToLogsOnError {
			t.Errorf("terminationMessagePolicy = %s", c.TerminationMessagePolicy)
		}
		sc := c.SecurityContext
		if !*sc.RunAsNonRoot || !*sc.ReadOnlyRootFilesystem || *sc.AllowPrivilegeEscalation ||
			!equality.Semantic.DeepEqual(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("container securityContext = %+v", sc)
		}
		if !*pod.SecurityContext.RunAsNonRoot || pod.SecurityContext.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("pod securityContext = %+v", pod.SecurityContext)
		}
		// Bounded: requests for scheduling, a memory limit, a size limit on the scratch space.
		if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().Cmp(resource.MustParse("1Gi")) != 0 {
			t.Errorf("resources = %+v", c.Resources)
		}
		for _, v := range pod.Volumes {
			if v.Name == "tmp" && (v.EmptyDir == nil || v.EmptyDir.SizeLimit == nil || v.EmptyDir.SizeLimit.Cmp(resource.MustParse("1Gi")) != 0) {
				t.Errorf("tmp volume = %+v, want an emptyDir with a size limit", v)
			}
		}
		var configMount *corev1.VolumeMount
		for i := range c.VolumeMounts {
			if c.VolumeMounts[i].MountPath == configv1.DefaultConfigPath {
				configMount = &c.VolumeMounts[i]
			}
		}
		if configMount == nil || !configMount.ReadOnly {
			t.Fatalf("config not mounted read-only at %s: %+v", configv1.DefaultConfigPath, c.VolumeMounts)
		}
		for _, v := range pod.Volumes {
			if v.Name == configMount.Name {
				if v.ConfigMap == nil || v.ConfigMap.Name != "sluice-config" || v.ConfigMap.Items[0].Key != "config.yaml" || v.ConfigMap.Items[0].Path != configMount.SubPath {
					t.Errorf("config volume = %+v", v)
				}
			}
		}
		env := envMap(c)
		for name, want := range map[string]string{
			configv1.EnvPipelineNamespace: p.Namespace, configv1.EnvPipelineName: p.Name,
			configv1.EnvRunID: run.ID, configv1.EnvGeneration: "7", configv1.EnvPipelineUID: string(p.UID),
		} {
			if env[name].Value != want {
				t.Errorf("env %s = %q, want %q", name, env[name].Value, want)
			}
		}
		// Credentials only ever come from Secrets.
		for _, e := range c.Env {
			if strings.Contains(strings.ToLower(e.Value), "password") || strings.Contains(e.Value, "postgres://") {
				t.Errorf("env %s looks like a credential", e.Name)
			}
		}
	}
	decodeSpec := func(t *testing.T, job *batchv1.Job) etlv1.ETLPipelineSpec {
		t.Helper()
		var s etlv1.ETLPipelineSpec
		if err := json.Unmarshal([]byte(envMap(job.Spec.Template.Spec.Containers[0])[configv1.EnvSpec].Value), &s); err != nil {
			t.Fatalf("SLUICE_SPEC is not a spec: %v", err)
		}
		return s
	}

	cases := []struct {
		name  string
		spec  func() etlv1.ETLPipelineSpec
		check check
	}{
		{"postgres target on the source connection", legacySpec, func(t *testing.T, job *batchv1.Job) {
			env := envMap(job.Spec.Template.Spec.Containers[0])
			if r := secretRef(t, env, configv1.PostgresDSNEnv("warehouse")); r.Name != "warehouse-dsn" || r.Key != "dsn" {
				t.Errorf("source DSN from %s/%s", r.Name, r.Key)
			}
			if r := secretRef(t, env, configv1.PostgresDSNEnv("state")); r.Name != "state-dsn" || r.Key != "url" {
				t.Errorf("state DSN from %s/%s", r.Name, r.Key)
			}
			if len(env) != 9 {
				t.Errorf("env has %d variables, want 6 run variables, the memory limit and 2 DSNs: %v", len(env), env)
			}
			s := decodeSpec(t, job)
			if s.Target.Connection != "warehouse" || !equality.Semantic.DeepEqual(s.Target.Key, []string{"id"}) || s.Target.Action != "" {
				t.Errorf("defaults not applied to the target: %+v", s.Target)
			}
			if s.Source.Query == "" || s.BatchSize != 5000 || s.Retry.Attempts != 3 {
				t.Errorf("snapshot lost fields: %+v", s)
			}
		}},
		{"postgres target on another connection", func() etlv1.ETLPipelineSpec {
			s := legacySpec()
			s.Target.Connection = "mart"
			s.Target.Key = []string{"order_id"}
			return s
		}, func(t *testing.T, job *batchv1.Job) {
			env := envMap(job.Spec.Template.Spec.Containers[0])
			secretRef(t, env, configv1.PostgresDSNEnv("mart"))
			if len(env) != 10 {
				t.Errorf("env has %d variables, want 10", len(env))
			}
			if s := decodeSpec(t, job); !equality.Semantic.DeepEqual(s.Target.Key, []string{"order_id"}) {
				t.Errorf("target.key = %v", s.Target.Key)
			}
		}},
		{"elasticsearch target with credentials and CA", tasksSpec, func(t *testing.T, job *batchv1.Job) {
			c := job.Spec.Template.Spec.Containers[0]
			env := envMap(c)
			for _, key := range []string{configv1.ESUsernameKey, configv1.ESPasswordKey, configv1.ESAPIKeyKey} {
				r := secretRef(t, env, configv1.ElasticsearchEnv("default", key))
				if r.Name != "es-creds" || r.Key != key || r.Optional == nil || !*r.Optional {
					t.Errorf("ES %s from %+v", key, r)
				}
			}
			if _, ok := env[configv1.PostgresDSNEnv("warehouse")]; !ok {
				t.Error("the source DSN is missing")
			}
			found := false
			for _, m := range c.VolumeMounts {
				if m.MountPath+"/"+configv1.ESCACertKey == configv1.ElasticsearchCAPath("default") {
					found = true
				}
			}
			if !found {
				t.Errorf("CA not mounted for %s: %+v", configv1.ElasticsearchCAPath("default"), c.VolumeMounts)
			}
			s := decodeSpec(t, job)
			if s.Target.Connection != "default" || s.Target.Action != etlv1.ActionUpdate || len(s.Tasks) != 2 {
				t.Errorf("snapshot = %+v", s)
			}
		}},
		{"elasticsearch target without credentials", func() etlv1.ETLPipelineSpec {
			s := tasksSpec()
			s.Target.Connection = "plain"
			s.Target.Action = etlv1.ActionIndex
			return s
		}, func(t *testing.T, job *batchv1.Job) {
			c := job.Spec.Template.Spec.Containers[0]
			for name := range envMap(c) {
				if strings.HasPrefix(name, "SLUICE_ES_") {
					t.Errorf("unexpected ES credential %s", name)
				}
			}
			if len(job.Spec.Template.Spec.Volumes) != 2 {
				t.Errorf("volumes = %+v, want config and tmp only", job.Spec.Template.Spec.Volumes)
			}
			if s := decodeSpec(t, job); s.Target.Action != etlv1.ActionIndex {
				t.Errorf("action = %s", s.Target.Action)
			}
		}},
		{"cdc into elasticsearch indexes whole documents", func() etlv1.ETLPipelineSpec {
			s := cdcSpec()
			s.Target = etlv1.TargetSpec{Name: "es:orders"}
			return s
		}, func(t *testing.T, job *batchv1.Job) {
			if s := decodeSpec(t, job); s.Target.Action != etlv1.ActionIndex {
				t.Errorf("a CDC pipeline into Elasticsearch runs with action %q, want Index", s.Target.Action)
			}
		}},
		{"missing CRD defaults are filled", func() etlv1.ETLPipelineSpec {
			s := legacySpec()
			s.DesiredState, s.BatchSize, s.TransformTimeout, s.Retry = "", 0, nil, etlv1.RetrySpec{}
			return s
		}, func(t *testing.T, job *batchv1.Job) {
			s := decodeSpec(t, job)
			if s.DesiredState != etlv1.DesiredRunning || s.BatchSize != 5000 || s.TransformTimeout.Seconds() != 60 || s.Retry.InitialBackoff.Seconds() != 1 {
				t.Errorf("defaults = %+v", s)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newPipeline("team-a", "orders", tc.spec())
			in := RunnerJobParams{Pipeline: p, Run: run, Config: cfg, Namespace: "sluice-system"}
			job, err := BuildRunnerJob(in)
			if err != nil {
				t.Fatalf("BuildRunnerJob: %v", err)
			}
			again, _ := BuildRunnerJob(in)
			if !equality.Semantic.DeepEqual(job, again) {
				t.Fatal("BuildRunnerJob is not deterministic")
			}
			common(t, job, p)
			tc.check(t, job)
		})
	}

	t.Run("unknown connection is an error", func(t *testing.T) {
		s := legacySpec()
		s.Source.Connection = "nope"
		if _, err := BuildRunnerJob(RunnerJobParams{Pipeline: newPipeline("a", "b", s), Run: run, Config: cfg, Namespace: "x"}); err == nil {
			t.Fatal("want an error")
		}
	})
}

func TestJobOutcome(t *testing.T) {
	cond := func(typ batchv1.JobConditionType, s corev1.ConditionStatus) *batchv1.Job {
		return &batchv1.Job{Status: batchv1.JobStatus{Conditions: []batchv1.JobCondition{{Type: typ, Status: s}}}}
	}
	cases := []struct {
		name string
		job  *batchv1.Job
		want JobOutcome
	}{
		{"no job", nil, JobAbsent},
		{"no conditions", &batchv1.Job{Status: batchv1.JobStatus{Failed: 2, Succeeded: 1}}, JobActive},
		{"complete", cond(batchv1.JobComplete, corev1.ConditionTrue), JobSucceeded},
		{"failed", cond(batchv1.JobFailed, corev1.ConditionTrue), JobFailed},
		{"failure target only", cond(batchv1.JobFailureTarget, corev1.ConditionTrue), JobActive},
		{"failed false", cond(batchv1.JobFailed, corev1.ConditionFalse), JobActive},
	}
	for _, tc := range cases {
		if got := jobOutcome(tc.job); got != tc.want {
			t.Errorf("%s: jobOutcome = %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestBuildForgetJob(t *testing.T) {
	cfg := testConfig()
	p := newPipeline("team-a", "orders", legacySpec())
	job, err := BuildForgetJob(p, cfg, "sluice-system", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := BuildForgetJob(p, cfg, "sluice-system", time.Minute)
	if !equality.Semantic.DeepEqual(job, again) {
		t.Fatal("BuildForgetJob is not deterministic")
	}
	if !isForgetJob(job) || job.Namespace != "sluice-system" || job.Annotations[etlv1.AnnotationPipeline] != "team-a/orders" {
		t.Fatalf("job %s/%s labels %v annotations %v", job.Namespace, job.Name, job.Labels, job.Annotations)
	}
	other := newPipeline("team-a", "orders", legacySpec())
	other.UID = "another-uid"
	if o, _ := BuildForgetJob(other, cfg, "sluice-system", time.Minute); o.Name == job.Name {
		t.Fatalf("a re-created pipeline's forget job reuses the name %s", job.Name)
	}
	if job.Spec.Template.Spec.Containers[0].Resources.Limits.Memory().IsZero() {
		t.Fatal("the forget Job's runner has no memory limit")
	}
	if ptr.Deref(job.Spec.ActiveDeadlineSeconds, 0) != 60 || ptr.Deref(job.Spec.TTLSecondsAfterFinished, 0) == 0 {
		t.Fatalf("deadline %v, ttl %v: the Job must stop by itself and be collected", job.Spec.ActiveDeadlineSeconds, job.Spec.TTLSecondsAfterFinished)
	}
	c := job.Spec.Template.Spec.Containers[0]
	if !slices.Contains(c.Args, "--forget") {
		t.Fatalf("args %v", c.Args)
	}
	env := envMap(c)
	if env[configv1.EnvPipelineUID].Value != string(p.UID) || env[configv1.EnvPipelineName].Value != "orders" {
		t.Fatalf("env %v", env)
	}
	// Only the state database's credentials: not the source's, not a sink's.
	if r := secretRef(t, env, configv1.PostgresDSNEnv("state")); r.Name != "state-dsn" {
		t.Fatalf("state DSN from %s", r.Name)
	}
	if _, ok := env[configv1.PostgresDSNEnv("warehouse")]; ok || len(env) != 4 {
		t.Fatalf("env %v, want the pipeline's identity and the state DSN only", env)
	}
}

// A CDC pipeline's forget Job also drops its slot and publication in the source: it gets the
// source connection's name and DSN, and only those besides the state database's.
func TestBuildForgetJobCDC(t *testing.T) {
	onState := func() etlv1.ETLPipelineSpec { s := cdcSpec(); s.Source.Connection = "state"; return s }
	for _, tc := range []struct {
		name      string
		spec      func() etlv1.ETLPipelineSpec
		wantDSNs  map[string]string // variable -> Secret
		wantError string
	}{
		{name: "incremental: the state database only", spec: legacySpec,
			wantDSNs: map[string]string{configv1.PostgresDSNEnv("state"): "state-dsn"}},
		{name: "full with an es target: the state database only", spec: tasksSpec,
			wantDSNs: map[string]string{configv1.PostgresDSNEnv("state"): "state-dsn"}},
		{name: "cdc: the state database and the source", spec: cdcSpec,
			wantDSNs: map[string]string{configv1.PostgresDSNEnv("state"): "state-dsn", configv1.PostgresDSNEnv("warehouse"): "warehouse-dsn"}},
		{name: "cdc into another postgres connection: not the sink's", spec: func() etlv1.ETLPipelineSpec { s := cdcSpec(); s.Target.Connection = "mart"; return s },
			wantDSNs: map[string]string{configv1.PostgresDSNEnv("state"): "state-dsn", configv1.PostgresDSNEnv("warehouse"): "warehouse-dsn"}},
		{name: "cdc from the state database: one DSN", spec: onState,
			wantDSNs: map[string]string{configv1.PostgresDSNEnv("state"): "state-dsn"}},
		{name: "cdc from a connection no longer configured", spec: func() etlv1.ETLPipelineSpec { s := cdcSpec(); s.Source.Connection = "gone"; return s },
			wantError: `source connection "gone" is not configured`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := tc.spec()
			job, err := BuildForgetJob(newPipeline("team-a", "orders", spec), testConfig(), "sluice-system", time.Minute)
			if tc.wantError != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantError) {
					t.Fatalf("err = %v, want %q", err, tc.wantError)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c := job.Spec.Template.Spec.Containers[0]
			env := envMap(c)
			if len(env) != len(c.Env) {
				t.Fatalf("a variable is given twice: %v", c.Env)
			}
			dsns := map[string]string{}
			for name := range env {
				if strings.HasPrefix(name, "SLUICE_PG_") || strings.HasPrefix(name, "SLUICE_ES_") {
					dsns[name] = secretRef(t, env, name).Name
				}
			}
			if !maps.Equal(dsns, tc.wantDSNs) {
				t.Fatalf("credentials %v, want %v", dsns, tc.wantDSNs)
			}
			src, ok := env[configv1.EnvSourceConnection]
			switch {
			case spec.Mode != etlv1.ModeCDC && ok:
				t.Fatalf("%s given to a %s pipeline's forget Job", configv1.EnvSourceConnection, spec.Mode)
			case spec.Mode == etlv1.ModeCDC && src.Value != spec.Source.Connection:
				t.Fatalf("%s = %q, want %q", configv1.EnvSourceConnection, src.Value, spec.Source.Connection)
			}
		})
	}
}

func TestBuildRunnerJobCutsALargeSpec(t *testing.T) {
	spec := tasksSpec()
	for i := range 15 {
		spec.Tasks = append(spec.Tasks, etlv1.Task{Name: fmt.Sprintf("pad%d", i), Python: "def transform(r):\n    return r\n#" + strings.Repeat("x", 60000)})
	}
	p := newPipeline("team-a", "big", spec)
	job, err := BuildRunnerJob(RunnerJobParams{Pipeline: p, Run: &etlv1.RunStatus{ID: "r1", Generation: 1}, Config: testConfig(), Namespace: "x"})
	if err != nil {
		t.Fatal(err)
	}
	env := envMap(job.Spec.Template.Spec.Containers[0])
	if env[configv1.EnvSpecParts].Value == "" {
		t.Fatalf("a spec of about 900 KiB travels in one variable")
	}
	got, err := configv1.ReadSpec(func(k string) (string, bool) { v, ok := env[k]; return v.Value, ok })
	if err != nil {
		t.Fatal(err)
	}
	var s etlv1.ETLPipelineSpec
	if err := json.Unmarshal([]byte(got), &s); err != nil || len(s.Tasks) != len(spec.Tasks) {
		t.Fatalf("the spec read back has %d tasks (%v), want %d", len(s.Tasks), err, len(spec.Tasks))
	}
	for _, e := range job.Spec.Template.Spec.Containers[0].Env {
		if len(e.Value) > configv1.SpecPartSize {
			t.Fatalf("%s holds %d bytes", e.Name, len(e.Value))
		}
	}
}
