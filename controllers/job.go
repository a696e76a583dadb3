package controllers

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

// Standard labels of every runner Job and pod.
const (
	labelName      = "app.kubernetes.io/name"
	labelComponent = "app.kubernetes.io/component"
	labelManagedBy = "app.kubernetes.io/managed-by"

	appName         = "sluice"
	componentRunner = "runner"
	managedBy       = "sluice"

	// runnerContainer is the name of the runner container; the pod failure policy matches it.
	runnerContainer = "runner"

	// jobTTL keeps a finished runner Job (and its pod logs) for a day, then lets the TTL
	// controller collect it: one Job per run would otherwise pile up forever. The manager only
	// judges the Job of a run in flight, so a collected old Job changes nothing.
	jobTTL = int32(24 * 60 * 60)
)

// RunnerMetricsPort is the port of a runner's /metrics (sluice runner --metrics-bind-address).
const RunnerMetricsPort = 8080

// runnerSelector selects the runner Jobs Sluice made; the manager's Job cache is limited to it.
var runnerSelector = map[string]string{
	labelName:      appName,
	labelComponent: componentRunner,
	labelManagedBy: managedBy,
}

var nonDNSLabel = regexp.MustCompile(`[^a-z0-9-]+`)

// shortHash is the first n hex digits of the SHA-256 of s: stable, and enough to keep distinct
// inputs apart once they are truncated.
func shortHash(s string, n int) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:n]
}

// labelValue returns v when it is a valid label value, else a truncated prefix with a hash of
// v: pipeline names may be 253 characters long, label values only 63.
func labelValue(v string) string {
	if len(validation.IsValidLabelValue(v)) == 0 {
		return v
	}
	prefix := strings.Trim(nonLabelChars.ReplaceAllString(v, "-"), "-._")
	if len(prefix) > 52 {
		prefix = strings.TrimRight(prefix[:52], "-._")
	}
	if prefix == "" {
		return shortHash(v, 10)
	}
	return prefix + "-" + shortHash(v, 10)
}

var nonLabelChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// JobName returns the name of the runner Job of run runID of pipeline namespace/name: a DNS-1123
// label of at most 63 characters (the Job controller puts it in a pod label), deterministic, so
// that a retried create finds the Job it made. It is `<namespace>-<name>-<run id>` when that
// fits and is valid, else a truncated, sanitized prefix, a hash of namespace/name and the run id.
func JobName(namespace, name, runID string) string {
	plain := namespace + "-" + name + "-" + runID
	if len(plain) <= validation.DNS1123LabelMaxLength && len(validation.IsDNS1123Label(plain)) == 0 {
		return plain
	}
	suffix := "-" + shortHash(namespace+"/"+name, 8) + "-" + runID
	prefix := strings.Trim(nonDNSLabel.ReplaceAllString(strings.ToLower(namespace+"-"+name), "-"), "-")
	if room := validation.DNS1123LabelMaxLength - len(suffix); len(prefix) > room {
		prefix = strings.TrimRight(prefix[:max(room, 0)], "-")
	}
	if prefix == "" {
		return strings.TrimPrefix(suffix, "-")
	}
	return prefix + suffix
}

// jobLabels are the labels of the runner Job of runID and of its pods.
func jobLabels(p *etlv1.ETLPipeline, runID string) map[string]string {
	l := pipelineSelector(p.Namespace, p.Name)
	l[etlv1.LabelRunID] = runID
	return l
}

// pipelineSelector selects every runner Job of pipeline namespace/name.
func pipelineSelector(namespace, name string) map[string]string {
	l := make(map[string]string, len(runnerSelector)+2)
	for k, v := range runnerSelector {
		l[k] = v
	}
	l[etlv1.LabelPipelineNamespace] = labelValue(namespace)
	l[etlv1.LabelPipelineName] = labelValue(name)
	return l
}

// isOurJob reports whether job is the runner Job of run runID of p, by its labels and
// annotation; a Job of that name made by anyone else is never adopted.
func isOurJob(job *batchv1.Job, p *etlv1.ETLPipeline, runID string) bool {
	for k, v := range jobLabels(p, runID) {
		if job.Labels[k] != v {
			return false
		}
	}
	return job.Annotations[etlv1.AnnotationPipeline] == p.Namespace+"/"+p.Name
}

// effectiveSpec returns the spec a run executes: p's validated spec with every default
// applied, so the runner needs neither the CRD's defaults nor the operator's connection
// defaults to read it.
func effectiveSpec(spec *etlv1.ETLPipelineSpec, cfg *configv1.OperatorConfig) etlv1.ETLPipelineSpec {
	s := *spec.DeepCopy()
	if s.DesiredState == "" {
		s.DesiredState = etlv1.DesiredRunning
	}
	if s.BatchSize == 0 {
		s.BatchSize = 5000
	}
	if s.TransformTimeout == nil {
		s.TransformTimeout = &metav1.Duration{Duration: 60 * time.Second}
	}
	if s.Retry.InitialBackoff == nil {
		s.Retry.InitialBackoff = &metav1.Duration{Duration: time.Second}
	}
	// Retry.Attempts keeps its value: the API server defaults it when absent, and 0 is valid.
	if target, err := etlv1.ParseTarget(s.Target.Name); err == nil {
		s.Target.Connection = targetConnection(&s, cfg, target.Kind)
		if target.Kind == etlv1.SinkElasticsearch && s.Target.Action == "" {
			// A CDC change carries the whole row: its document replaces the old one.
			s.Target.Action = etlv1.ActionUpdate
			if s.Mode == etlv1.ModeCDC {
				s.Target.Action = etlv1.ActionIndex
			}
		}
	}
	s.Target.Key = append([]string(nil), s.SinkKey()...)
	return s
}

// RunnerJobParams is everything BuildRunnerJob needs.
type RunnerJobParams struct {
	Pipeline *etlv1.ETLPipeline
	Run      *etlv1.RunStatus
	Config   *configv1.OperatorConfig
	// Namespace is the operator's namespace, where runner Jobs and connection Secrets live.
	Namespace string
	// NamespaceLabels are the labels of the pipeline's namespace the grants were judged on:
	// the runner judges them again, against the configuration it reads.
	NamespaceLabels map[string]string
}

// BuildRunnerJob builds the runner Job of a run. It is pure: no client call, the same input
// always gives the same Job. The spec must be valid (validateSpec): it returns an error only
// when a connection it needs is missing from the configuration.
func BuildRunnerJob(in RunnerJobParams) (*batchv1.Job, error) {
	p, run, cfg := in.Pipeline, in.Run, in.Config
	spec := effectiveSpec(&p.Spec, cfg)
	specJSON, err := json.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("encode spec of pipeline %s/%s: %w", p.Namespace, p.Name, err)
	}
	env := []corev1.EnvVar{
		{Name: configv1.EnvPipelineNamespace, Value: p.Namespace},
		{Name: configv1.EnvPipelineName, Value: p.Name},
		{Name: configv1.EnvPipelineUID, Value: string(p.UID)},
		{Name: configv1.EnvRunID, Value: run.ID},
		{Name: configv1.EnvGeneration, Value: strconv.FormatInt(run.Generation, 10)},
	}
	if len(in.NamespaceLabels) > 0 {
		// A map of strings always marshals, in sorted key order: the Job stays deterministic.
		labels, _ := json.Marshal(in.NamespaceLabels)
		env = append(env, corev1.EnvVar{Name: configv1.EnvNamespaceLabels, Value: string(labels)})
	}
	for _, v := range configv1.SpecEnv(string(specJSON)) {
		env = append(env, corev1.EnvVar{Name: v.Name, Value: v.Value})
	}
	// The runner's Go heap gives memory back before the container's limit is reached.
	env = append(env, corev1.EnvVar{Name: configv1.EnvMemoryLimit, ValueFrom: &corev1.EnvVarSource{
		ResourceFieldRef: &corev1.ResourceFieldSelector{ContainerName: runnerContainer, Resource: "limits.memory"},
	}})
	volumes := []corev1.Volume{
		{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: cfg.Runner.ConfigMapName},
			Items:                []corev1.KeyToPath{{Key: cfg.Runner.ConfigMapKey, Path: path.Base(configv1.DefaultConfigPath)}},
		}}},
		// The root filesystem is read-only; Python and the runner may need scratch space.
		{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: ptr.To(cfg.Runner.TmpLimit())}}},
	}
	mounts := []corev1.VolumeMount{
		{Name: "config", MountPath: configv1.DefaultConfigPath, SubPath: path.Base(configv1.DefaultConfigPath), ReadOnly: true},
		{Name: "tmp", MountPath: "/tmp"},
	}

	// Postgres DSNs: the source, the state database, and a Postgres sink's connection.
	pgNames := []string{spec.Source.Connection, cfg.StateConnection}
	target, err := etlv1.ParseTarget(spec.Target.Name)
	if err != nil {
		return nil, fmt.Errorf("pipeline %s/%s: %w", p.Namespace, p.Name, err)
	}
	if target.Kind == etlv1.SinkPostgres {
		pgNames = append(pgNames, spec.Target.Connection)
	}
	seen := map[string]bool{}
	for _, name := range pgNames {
		if seen[name] {
			continue
		}
		seen[name] = true
		conn := cfg.PostgresConnection(name)
		if conn == nil {
			return nil, fmt.Errorf("pipeline %s/%s: postgres connection %q is not configured", p.Namespace, p.Name, name)
		}
		env = append(env, corev1.EnvVar{Name: configv1.PostgresDSNEnv(name), ValueFrom: &corev1.EnvVarSource{
			SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: conn.DSNSecret.Name},
				Key:                  conn.DSNSecret.Key,
			},
		}})
	}

	if target.Kind == etlv1.SinkElasticsearch {
		es := cfg.ElasticsearchConnection(spec.Target.Connection)
		if es == nil {
			return nil, fmt.Errorf("pipeline %s/%s: elasticsearch connection %q is not configured", p.Namespace, p.Name, spec.Target.Connection)
		}
		if es.CredentialsSecret != "" {
			// Every key is optional: a cluster may use a user and password, an API key, or a CA only.
			for _, key := range []string{configv1.ESUsernameKey, configv1.ESPasswordKey, configv1.ESAPIKeyKey} {
				env = append(env, corev1.EnvVar{Name: configv1.ElasticsearchEnv(es.Name, key), ValueFrom: &corev1.EnvVarSource{
					SecretKeyRef: &corev1.SecretKeySelector{
						LocalObjectReference: corev1.LocalObjectReference{Name: es.CredentialsSecret},
						Key:                  key,
						Optional:             ptr.To(true),
					},
				}})
			}
			vol := "es-ca-" + es.Name
			volumes = append(volumes, corev1.Volume{Name: vol, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
				SecretName: es.CredentialsSecret,
				Items:      []corev1.KeyToPath{{Key: configv1.ESCACertKey, Path: configv1.ESCACertKey}},
				Optional:   ptr.To(true),
			}}})
			mounts = append(mounts, corev1.VolumeMount{Name: vol, MountPath: path.Dir(configv1.ElasticsearchCAPath(es.Name)), ReadOnly: true})
			// The path is also passed by name, so a runner that sees the mount elsewhere (the
			// local node agent rewrites mount paths) still finds the bundle.
			env = append(env, corev1.EnvVar{Name: configv1.ElasticsearchCAFileEnv(es.Name), Value: configv1.ElasticsearchCAPath(es.Name)})
		}
	}

	labels := jobLabels(p, run.ID)
	job := &batchv1.Job{
		TypeMeta: metav1.TypeMeta{APIVersion: batchv1.SchemeGroupVersion.String(), Kind: "Job"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        JobName(p.Namespace, p.Name, run.ID),
			Namespace:   in.Namespace,
			Labels:      labels,
			Annotations: map[string]string{etlv1.AnnotationPipeline: p.Namespace + "/" + p.Name},
		},
		Spec: batchv1.JobSpec{
			// A crashed runner pod is replaced and resumes from the checkpoint.
			BackoffLimit: ptr.To(ptr.Deref(cfg.Runner.BackoffLimit, 3)),
			// Never two pods of a run at once: a replacement starts only once the old pod is gone.
			PodReplacementPolicy:    ptr.To(batchv1.Failed),
			TTLSecondsAfterFinished: ptr.To(jobTTL),
			PodFailurePolicy:        runnerFailurePolicy(),
			Template: runnerPod(cfg, RunnerServiceAccount(p), labels, []string{"runner", "--config", configv1.DefaultConfigPath},
				env, volumes, mounts),
		},
	}
	return job, nil
}

// runnerFailurePolicy fails a runner Job at once on a business error or a fenced runner, and
// does not count an eviction.
func runnerFailurePolicy() *batchv1.PodFailurePolicy {
	return &batchv1.PodFailurePolicy{Rules: []batchv1.PodFailurePolicyRule{
		{
			// A business error or a fenced runner will fail the same way again: no retry.
			Action: batchv1.PodFailurePolicyActionFailJob,
			OnExitCodes: &batchv1.PodFailurePolicyOnExitCodesRequirement{
				ContainerName: ptr.To(runnerContainer),
				Operator:      batchv1.PodFailurePolicyOnExitCodesOpIn,
				Values:        []int32{configv1.ExitBusiness, configv1.ExitFenced},
			},
		},
		{
			// An eviction or preemption is not the runner's fault: it does not count.
			Action:          batchv1.PodFailurePolicyActionIgnore,
			OnPodConditions: []batchv1.PodFailurePolicyOnPodConditionsPattern{{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue}},
		},
	}}
}

// runnerPod is the pod template of a runner Job: the runner container, hardened, with the
// given arguments, environment and volumes. account is the pipeline's runner service account,
// whose token the runner patches the status with; "" runs the pod with no token at all.
func runnerPod(cfg *configv1.OperatorConfig, account string, labels map[string]string, args []string, env []corev1.EnvVar,
	volumes []corev1.Volume, mounts []corev1.VolumeMount) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: labels},
		Spec: corev1.PodSpec{
			RestartPolicy:                corev1.RestartPolicyNever,
			ServiceAccountName:           account,
			AutomountServiceAccountToken: ptr.To(account != ""),
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot:   ptr.To(true),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name:            runnerContainer,
				Image:           cfg.Runner.Image,
				ImagePullPolicy: corev1.PullPolicy(cfg.Runner.ImagePullPolicy),
				Args:            args,
				Env:             env,
				// The runner serves /metrics here while it runs (config/prometheus' PodMonitor).
				Ports:        []corev1.ContainerPort{{Name: "metrics", ContainerPort: RunnerMetricsPort, Protocol: corev1.ProtocolTCP}},
				VolumeMounts: mounts,
				Resources:    cfg.Runner.RunnerResources(),
				// The runner's last words (or its last log lines) explain a failed Job.
				TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
				SecurityContext: &corev1.SecurityContext{
					RunAsNonRoot:             ptr.To(true),
					ReadOnlyRootFilesystem:   ptr.To(true),
					AllowPrivilegeEscalation: ptr.To(false),
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
					SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
				},
			}},
			Volumes: volumes,
		},
	}
}

// forgetTTL keeps a finished forget Job (and its pod's log) for ten minutes.
const forgetTTL = int32(10 * 60)

// forgetRunPrefix starts the run-id label of a pipeline's forget Job, which removes the state
// of the deleted pipeline from the state database.
const forgetRunPrefix = "forget-"

// forgetRunID is the run id of the forget Job of the pipeline with uid: a pipeline of the same
// name created and deleted again gets a Job of its own.
func forgetRunID(uid string) string { return forgetRunPrefix + shortHash(uid, 8) }

// isForgetJob tells a forget Job from the Jobs of runs.
func isForgetJob(job *batchv1.Job) bool {
	return strings.HasPrefix(job.Labels[etlv1.LabelRunID], forgetRunPrefix)
}

// BuildForgetJob builds the Job that removes a deleted pipeline's rows from etl_state and
// etl_runs (`sluice runner --forget`). It gets the state database's DSN and, for a CDC
// pipeline, the source connection's name and DSN, with which it drops the pipeline's
// replication slot and publication; nothing else. Pure, like BuildRunnerJob.
//
// The Job stops by itself after deadline (the deletion goes on without it then) and is
// collected forgetTTL after it finished.
func BuildForgetJob(p *etlv1.ETLPipeline, cfg *configv1.OperatorConfig, namespace string, deadline time.Duration) (*batchv1.Job, error) {
	conn := cfg.PostgresConnection(cfg.StateConnection)
	if conn == nil {
		return nil, fmt.Errorf("pipeline %s/%s: state connection %q is not configured", p.Namespace, p.Name, cfg.StateConnection)
	}
	runID := forgetRunID(string(p.UID))
	env := []corev1.EnvVar{
		{Name: configv1.EnvPipelineNamespace, Value: p.Namespace},
		{Name: configv1.EnvPipelineName, Value: p.Name},
		{Name: configv1.EnvPipelineUID, Value: string(p.UID)},
		dsnEnv(conn),
	}
	if p.Spec.Mode == etlv1.ModeCDC {
		// A slot left in the source retains its WAL for ever: without the connection the Job
		// could not drop it, so it forgets nothing (etl.etl_slots keeps the slot's name).
		src := cfg.PostgresConnection(p.Spec.Source.Connection)
		if src == nil {
			return nil, fmt.Errorf("pipeline %s/%s: source connection %q is not configured: its replication slot and publication cannot be dropped",
				p.Namespace, p.Name, p.Spec.Source.Connection)
		}
		env = append(env, corev1.EnvVar{Name: configv1.EnvSourceConnection, Value: src.Name})
		if src.Name != conn.Name {
			env = append(env, dsnEnv(src))
		}
	}
	volumes := []corev1.Volume{{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: cfg.Runner.ConfigMapName},
		Items:                []corev1.KeyToPath{{Key: cfg.Runner.ConfigMapKey, Path: path.Base(configv1.DefaultConfigPath)}},
	}}}}
	mounts := []corev1.VolumeMount{
		{Name: "config", MountPath: configv1.DefaultConfigPath, SubPath: path.Base(configv1.DefaultConfigPath), ReadOnly: true},
	}
	labels := jobLabels(p, runID)
	return &batchv1.Job{
		TypeMeta: metav1.TypeMeta{APIVersion: batchv1.SchemeGroupVersion.String(), Kind: "Job"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        JobName(p.Namespace, p.Name, runID),
			Namespace:   namespace,
			Labels:      labels,
			Annotations: map[string]string{etlv1.AnnotationPipeline: p.Namespace + "/" + p.Name},
		},
		Spec: batchv1.JobSpec{
			BackoffLimit:            ptr.To(int32(2)),
			PodReplacementPolicy:    ptr.To(batchv1.Failed),
			ActiveDeadlineSeconds:   ptr.To(int64(deadline.Seconds())),
			TTLSecondsAfterFinished: ptr.To(forgetTTL),
			PodFailurePolicy:        runnerFailurePolicy(),
			// It talks to the state database (and a CDC pipeline's source) only: no token.
			Template: runnerPod(cfg, "", labels, []string{"runner", "--config", configv1.DefaultConfigPath, "--forget"},
				env, volumes, mounts),
		},
	}, nil
}

// dsnEnv is the variable of a runner holding conn's DSN, from its Secret.
func dsnEnv(conn *configv1.PostgresConnection) corev1.EnvVar {
	return corev1.EnvVar{Name: configv1.PostgresDSNEnv(conn.Name), ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: conn.DSNSecret.Name}, Key: conn.DSNSecret.Key,
	}}}
}

// jobOutcome judges a Job by its Complete and Failed conditions, never by its counters.
func jobOutcome(job *batchv1.Job) JobOutcome {
	if job == nil {
		return JobAbsent
	}
	for _, c := range job.Status.Conditions {
		if c.Status != corev1.ConditionTrue {
			continue
		}
		switch c.Type {
		case batchv1.JobFailed:
			return JobFailed
		case batchv1.JobComplete:
			return JobSucceeded
		}
	}
	return JobActive
}

// jobFailureMessage returns the message of the Job's Failed condition.
func jobFailureMessage(job *batchv1.Job) string {
	for _, c := range job.Status.Conditions {
		if c.Type == batchv1.JobFailed && c.Status == corev1.ConditionTrue {
			if c.Message != "" {
				return c.Reason + ": " + c.Message
			}
			return c.Reason
		}
	}
	return ""
}
