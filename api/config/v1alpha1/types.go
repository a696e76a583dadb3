// Package v1alpha1 holds the operator's own configuration: named connections, the sink
// whitelist and how runner Jobs are made. The manager reads it from the file given to
// `sluice manager --config` (mounted from a ConfigMap); runner Jobs get the same file.
//
// Credentials are never in this file: each connection names a Secret in the operator's
// namespace, which the manager mounts into runner Jobs as environment variables (see EnvName).
package v1alpha1

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

// Kind and APIVersion of the configuration file.
const (
	APIVersion = "config.etl.sluice.dev/v1alpha1"
	Kind       = "OperatorConfig"
)

// OperatorConfig is the configuration file of `sluice manager` and `sluice runner`.
type OperatorConfig struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`

	// Runner says how runner Jobs are made.
	Runner RunnerConfig `json:"runner"`

	// StateConnection is the Postgres connection holding the `etl` schema (etl_state,
	// etl_runs). When a pipeline's sink uses the same connection, its rows and its checkpoint
	// commit in one transaction.
	StateConnection string `json:"stateConnection"`

	// Postgres lists the named Postgres connections (sources and `analytics.*` sinks).
	Postgres []PostgresConnection `json:"postgres,omitempty"`

	// Elasticsearch lists the named Elasticsearch connections.
	Elasticsearch []ElasticsearchConnection `json:"elasticsearch,omitempty"`

	// AllowedTargets is the sink whitelist: nothing else is ever written.
	AllowedTargets AllowedTargets `json:"allowedTargets"`

	// Redaction says what else the data plane keeps out of status, events and logs.
	Redaction Redaction `json:"redaction,omitempty"`

	// Tenancy: the default grant of connections and targets, and the admission policy.
	Tenancy Tenancy `json:"tenancy,omitempty"`
}

// Redaction says what else the data plane keeps out of status, events and logs. Row values
// never leave it; the checkpoint's cursor and key values do, unless redacted here.
type Redaction struct {
	// CheckpointTargets are the targets (`analytics.<table>`, `es:<index>`, or `*` for every
	// target) whose pipelines show their checkpoint values as `****` in status, events and
	// logs. The checkpoint itself, in the state database, is unchanged.
	CheckpointTargets []string `json:"checkpointTargets,omitempty"`
}

// RedactCheckpoint reports whether the checkpoint values of a pipeline writing target are
// redacted.
func (r Redaction) RedactCheckpoint(target string) bool {
	return slices.Contains(r.CheckpointTargets, "*") || slices.Contains(r.CheckpointTargets, target)
}

// RunnerConfig says how runner Jobs are made.
type RunnerConfig struct {
	// Image is the Sluice image the runner Jobs run.
	Image string `json:"image"`
	// ImagePullPolicy of the runner container (default IfNotPresent).
	ImagePullPolicy string `json:"imagePullPolicy,omitempty"`
	// ServiceAccountName is no longer used: each pipeline's runner acts as a service account
	// of its own, which the manager makes (sluice-run-<hash>). A configuration that sets it
	// still loads; the manager logs that it is ignored.
	ServiceAccountName string `json:"serviceAccountName,omitempty"`
	// BackoffLimit is how many crashed runner pods a run replaces (default 3). Each
	// replacement resumes from the checkpoint.
	BackoffLimit *int32 `json:"backoffLimit,omitempty"`
	// ConfigMapName is the ConfigMap holding this file, mounted into runner Jobs.
	ConfigMapName string `json:"configMapName"`
	// ConfigMapKey is the key of this file in that ConfigMap (default config.yaml).
	ConfigMapKey string `json:"configMapKey,omitempty"`
	// HorizonHeldAfter is how old the transaction holding an Incremental run's read horizon
	// back may be before the pipeline says so (condition HorizonHeld), and how long a run on a
	// sequence cursor waits for the transactions open at its start (default 1m).
	HorizonHeldAfter *metav1.Duration `json:"horizonHeldAfter,omitempty"`
	// Postgres sets the timeouts of the runner's Postgres sessions.
	Postgres RunnerPostgres `json:"postgres,omitempty"`
	// StartDeadline is how long a requested run may wait for its runner pod to start before
	// it fails with reason RunnerNotStarted (default 5m).
	StartDeadline *metav1.Duration `json:"startDeadline,omitempty"`
	// ProgressDeadline is how long a claimed run may commit no batch before the pipeline says
	// so (condition Progressing=False, reason ProgressDeadlineExceeded); the run goes on
	// (default 30m).
	ProgressDeadline *metav1.Duration `json:"progressDeadline,omitempty"`
	// MinScheduleInterval refuses a spec.schedule that starts runs more often (default 1m).
	MinScheduleInterval *metav1.Duration `json:"minScheduleInterval,omitempty"`
	// Resources of the runner container (default: requests 100m CPU and 128Mi, limit 1Gi,
	// which leaves room for a Python worker next to the runner's ~50Mi).
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`
	// TmpSizeLimit bounds the runner's /tmp scratch volume (default 1Gi).
	TmpSizeLimit *resource.Quantity `json:"tmpSizeLimit,omitempty"`
	// MaxBatchBytes bounds a batch in bytes when the pipeline does not (default 16Mi).
	MaxBatchBytes *resource.Quantity `json:"maxBatchBytes,omitempty"`
	// JobHistory is how many finished runner Jobs (and their pod logs) a pipeline keeps
	// (default 3 successful and 3 failed); older ones are deleted.
	JobHistory *JobHistory `json:"jobHistory,omitempty"`
	// RunHistory is how many etl_runs rows a pipeline keeps, newest first (default 100).
	RunHistory int `json:"runHistory,omitempty"`
	// AllowUnsandboxedPython lets a Python transform run when the node's kernel cannot confine
	// it (no Landlock, no seccomp). Off by default: such a run fails before it reads anything.
	// When on, the run goes on unconfined and the pipeline's status says so.
	AllowUnsandboxedPython bool `json:"allowUnsandboxedPython,omitempty"`
}

// DefaultProgressDeadline is runner.progressDeadline when the configuration leaves it out.
const DefaultProgressDeadline = 30 * time.Minute

// ProgressLimit returns runner.progressDeadline, defaulted.
func (r RunnerConfig) ProgressLimit() time.Duration {
	if r.ProgressDeadline == nil || r.ProgressDeadline.Duration <= 0 {
		return DefaultProgressDeadline
	}
	return r.ProgressDeadline.Duration
}

// DefaultMinScheduleInterval is runner.minScheduleInterval when the configuration leaves it out.
const DefaultMinScheduleInterval = time.Minute

// MinInterval returns runner.minScheduleInterval, defaulted.
func (r RunnerConfig) MinInterval() time.Duration {
	if r.MinScheduleInterval == nil || r.MinScheduleInterval.Duration <= 0 {
		return DefaultMinScheduleInterval
	}
	return r.MinScheduleInterval.Duration
}

// RunnerResources returns runner.resources, defaulted.
func (r RunnerConfig) RunnerResources() corev1.ResourceRequirements {
	if r.Resources != nil {
		return *r.Resources.DeepCopy()
	}
	return corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")},
	}
}

// TmpLimit returns runner.tmpSizeLimit, defaulted.
func (r RunnerConfig) TmpLimit() resource.Quantity {
	if r.TmpSizeLimit != nil {
		return r.TmpSizeLimit.DeepCopy()
	}
	return resource.MustParse("1Gi")
}

// JobHistory are the history limits of a pipeline's runner Jobs.
type JobHistory struct {
	Successful *int `json:"successful,omitempty"`
	Failed     *int `json:"failed,omitempty"`
}

// JobHistoryLimits returns runner.jobHistory, defaulted.
func (r RunnerConfig) JobHistoryLimits() (successful, failed int) {
	successful, failed = 3, 3
	if h := r.JobHistory; h != nil {
		if h.Successful != nil && *h.Successful >= 0 {
			successful = *h.Successful
		}
		if h.Failed != nil && *h.Failed >= 0 {
			failed = *h.Failed
		}
	}
	return successful, failed
}

// BatchBytes returns runner.maxBatchBytes, defaulted.
func (r RunnerConfig) BatchBytes() int64 {
	if r.MaxBatchBytes != nil && r.MaxBatchBytes.Value() > 0 {
		return r.MaxBatchBytes.Value()
	}
	return 16 << 20
}

// Runs returns runner.runHistory, defaulted.
func (r RunnerConfig) Runs() int {
	if r.RunHistory <= 0 {
		return 100
	}
	return r.RunHistory
}

// DefaultStartDeadline is runner.startDeadline when the configuration leaves it out.
const DefaultStartDeadline = 5 * time.Minute

// StartupDeadline returns runner.startDeadline, defaulted.
func (r RunnerConfig) StartupDeadline() time.Duration {
	if r.StartDeadline == nil || r.StartDeadline.Duration <= 0 {
		return DefaultStartDeadline
	}
	return r.StartDeadline.Duration
}

// RunnerPostgres sets the timeouts of a runner's Postgres sessions, so that a run waiting on a
// lock or on a stalled server ends in an error that is retried instead of hanging.
type RunnerPostgres struct {
	// StatementTimeout bounds one statement: a page read, a batch write (default 1h).
	StatementTimeout *metav1.Duration `json:"statementTimeout,omitempty"`
	// LockTimeout bounds a wait for a lock, an infrastructure error that is retried (default 1m).
	LockTimeout *metav1.Duration `json:"lockTimeout,omitempty"`
	// IdleInTransactionTimeout ends a session left idle inside a transaction (default 10m).
	IdleInTransactionTimeout *metav1.Duration `json:"idleInTransactionTimeout,omitempty"`
}

// Defaults of runner.postgres.
const (
	DefaultStatementTimeout         = time.Hour
	DefaultLockTimeout              = time.Minute
	DefaultIdleInTransactionTimeout = 10 * time.Minute
)

// SessionParams returns the session settings of runner.postgres, defaulted, in the form of
// Postgres run-time parameters (milliseconds). The server also probes an idle client with TCP
// keepalives, so that the backend of a runner whose node died ends (and releases the
// pipeline's lock) within about a minute instead of the kernel's two hours.
func (r RunnerPostgres) SessionParams() map[string]string {
	ms := func(d *metav1.Duration, def time.Duration) string {
		v := def
		if d != nil && d.Duration > 0 {
			v = d.Duration
		}
		return strconv.FormatInt(v.Milliseconds(), 10)
	}
	return map[string]string{
		"statement_timeout":                   ms(r.StatementTimeout, DefaultStatementTimeout),
		"lock_timeout":                        ms(r.LockTimeout, DefaultLockTimeout),
		"idle_in_transaction_session_timeout": ms(r.IdleInTransactionTimeout, DefaultIdleInTransactionTimeout),
		"tcp_keepalives_idle":                 "15",
		"tcp_keepalives_interval":             "5",
		"tcp_keepalives_count":                "6",
	}
}

// SecretKeyRef points at one key of a Secret in the operator's namespace.
type SecretKeyRef struct {
	Name string `json:"name"`
	Key  string `json:"key"`
}

// PostgresConnection is a named Postgres database.
type PostgresConnection struct {
	Name string `json:"name"`
	// DSNSecret holds the connection string (a postgres:// URL or key=value DSN).
	DSNSecret SecretKeyRef `json:"dsnSecret"`
	// Grant: the namespaces whose pipelines may use the connection (tenancy.defaultGrant
	// when it names none).
	Grant `json:",inline"`
	// ReplicationTables are the tables (`schema.table`) CDC pipelines may replicate through
	// the connection: a CDC pipeline creates a replication slot and a publication in the
	// database, which retain WAL there. When the connection has a grant (an operator shared
	// by several teams) and lists none, no CDC pipeline may use it; a connection without a
	// grant and without the list allows any table.
	ReplicationTables []string `json:"replicationTables,omitempty"`
}

// ElasticsearchConnection is a named Elasticsearch cluster.
type ElasticsearchConnection struct {
	Name string `json:"name"`
	// URLs of the cluster's HTTP endpoints.
	URLs []string `json:"urls"`
	// CredentialsSecret optionally names a Secret with keys `username` and `password`, or
	// `apiKey`, and optionally `ca.crt` (a PEM bundle).
	CredentialsSecret string `json:"credentialsSecret,omitempty"`
	// Grant: the namespaces whose pipelines may use the connection (tenancy.defaultGrant
	// when it names none).
	Grant `json:",inline"`
}

// AllowedTargets is the sink whitelist.
type AllowedTargets struct {
	// PostgresTables are the allowed `analytics.<table>` targets, written in full.
	PostgresTables []string `json:"postgresTables,omitempty"`
	// ElasticsearchIndexes are the allowed index names (without the `es:` prefix).
	ElasticsearchIndexes []string `json:"elasticsearchIndexes,omitempty"`
	// Grants say which namespaces may write which targets; a target no grant names gets
	// tenancy.defaultGrant.
	Grants []TargetGrant `json:"grants,omitempty"`
}

// Credential keys of an Elasticsearch credentials Secret.
const (
	ESUsernameKey = "username"
	ESPasswordKey = "password"
	ESAPIKeyKey   = "apiKey"
	ESCACertKey   = "ca.crt"
)

// Load reads and validates a configuration file.
func Load(path string) (*OperatorConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config %s: %w", path, err)
	}
	cfg, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// Parse decodes and validates a configuration document, rejecting unknown fields.
func Parse(data []byte) (*OperatorConfig, error) {
	cfg := &OperatorConfig{}
	// Strict: a misspelt field (a grant's "namespace" for "namespaces") must not pass for
	// an absent one, which may mean "every namespace".
	if err := yaml.UnmarshalStrict(data, cfg); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	cfg.Default()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// Default fills optional fields.
func (c *OperatorConfig) Default() {
	if c.Runner.ImagePullPolicy == "" {
		c.Runner.ImagePullPolicy = "IfNotPresent"
	}
	if c.Runner.ConfigMapKey == "" {
		c.Runner.ConfigMapKey = "config.yaml"
	}
	if c.Runner.BackoffLimit == nil {
		limit := int32(3)
		c.Runner.BackoffLimit = &limit
	}
	if c.Runner.HorizonHeldAfter == nil {
		c.Runner.HorizonHeldAfter = &metav1.Duration{Duration: DefaultHorizonHeldAfter}
	}
}

// DefaultHorizonHeldAfter is runner.horizonHeldAfter when the configuration leaves it out.
const DefaultHorizonHeldAfter = time.Minute

// HeldAfter returns runner.horizonHeldAfter, defaulted.
func (r RunnerConfig) HeldAfter() time.Duration {
	if r.HorizonHeldAfter == nil || r.HorizonHeldAfter.Duration <= 0 {
		return DefaultHorizonHeldAfter
	}
	return r.HorizonHeldAfter.Duration
}

var tableRe = regexp.MustCompile(`^analytics\.[a-z_][a-z0-9_]{0,62}$`)

// Validate checks the configuration as a whole.
func (c *OperatorConfig) Validate() error {
	var errs []string
	if c.APIVersion != APIVersion || c.Kind != Kind {
		errs = append(errs, fmt.Sprintf("apiVersion/kind must be %s/%s", APIVersion, Kind))
	}
	if c.Runner.Image == "" {
		errs = append(errs, "runner.image is required")
	}
	seen := map[string]bool{}
	for i, p := range c.Postgres {
		if msgs := validation.IsDNS1123Label(p.Name); len(msgs) > 0 {
			errs = append(errs, fmt.Sprintf("postgres[%d].name %q: %s", i, p.Name, strings.Join(msgs, "; ")))
		}
		if seen["pg/"+p.Name] {
			errs = append(errs, fmt.Sprintf("postgres[%d].name %q is duplicated", i, p.Name))
		}
		seen["pg/"+p.Name] = true
		if p.DSNSecret.Name == "" || p.DSNSecret.Key == "" {
			errs = append(errs, fmt.Sprintf("postgres[%d] (%s): dsnSecret.name and dsnSecret.key are required", i, p.Name))
		}
	}
	for i, e := range c.Elasticsearch {
		if msgs := validation.IsDNS1123Label(e.Name); len(msgs) > 0 {
			errs = append(errs, fmt.Sprintf("elasticsearch[%d].name %q: %s", i, e.Name, strings.Join(msgs, "; ")))
		}
		if seen["es/"+e.Name] {
			errs = append(errs, fmt.Sprintf("elasticsearch[%d].name %q is duplicated", i, e.Name))
		}
		seen["es/"+e.Name] = true
		if len(e.URLs) == 0 {
			errs = append(errs, fmt.Sprintf("elasticsearch[%d] (%s): urls is required", i, e.Name))
		}
	}
	if c.StateConnection == "" {
		errs = append(errs, "stateConnection is required")
	} else if c.PostgresConnection(c.StateConnection) == nil {
		errs = append(errs, fmt.Sprintf("stateConnection %q is not a postgres connection", c.StateConnection))
	}
	for _, t := range c.AllowedTargets.PostgresTables {
		if !tableRe.MatchString(t) {
			errs = append(errs, fmt.Sprintf("allowedTargets.postgresTables: %q is not analytics.<table>", t))
		}
	}
	errs = append(errs, c.validateTenancy()...)
	if len(errs) > 0 {
		return fmt.Errorf("invalid configuration: %s", strings.Join(errs, "; "))
	}
	return nil
}

// PostgresConnection returns the named Postgres connection, or nil.
func (c *OperatorConfig) PostgresConnection(name string) *PostgresConnection {
	for i := range c.Postgres {
		if c.Postgres[i].Name == name {
			return &c.Postgres[i]
		}
	}
	return nil
}

// ElasticsearchConnection returns the named Elasticsearch connection, or nil. An empty name
// selects the only connection, or the one named `default`.
func (c *OperatorConfig) ElasticsearchConnection(name string) *ElasticsearchConnection {
	if name == "" {
		if len(c.Elasticsearch) == 1 {
			return &c.Elasticsearch[0]
		}
		name = "default"
	}
	for i := range c.Elasticsearch {
		if c.Elasticsearch[i].Name == name {
			return &c.Elasticsearch[i]
		}
	}
	return nil
}

// PostgresTableAllowed reports whether `analytics.<table>` is whitelisted.
func (c *OperatorConfig) PostgresTableAllowed(target string) bool {
	return slices.Contains(c.AllowedTargets.PostgresTables, target)
}

// ElasticsearchIndexAllowed reports whether an index is whitelisted.
func (c *OperatorConfig) ElasticsearchIndexAllowed(index string) bool {
	return slices.Contains(c.AllowedTargets.ElasticsearchIndexes, index)
}

// Environment variable names under which a runner finds connection credentials. The manager
// fills them from the connections' Secrets; a runner started by hand (tests, debugging) can set
// them directly.
func envConn(kind, name, key string) string {
	n := strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
	return "SLUICE_" + kind + "_" + n + "_" + key
}

// PostgresDSNEnv is the variable holding the DSN of a Postgres connection.
func PostgresDSNEnv(name string) string { return envConn("PG", name, "DSN") }

// ElasticsearchEnv is the variable holding one credential key (ESUsernameKey, ESPasswordKey,
// ESAPIKeyKey) of an Elasticsearch connection.
func ElasticsearchEnv(name, key string) string {
	k := map[string]string{ESUsernameKey: "USERNAME", ESPasswordKey: "PASSWORD", ESAPIKeyKey: "API_KEY"}[key]
	return envConn("ES", name, k)
}

// ElasticsearchCAFileEnv is the variable naming the file of an Elasticsearch connection's CA
// bundle. A runner reads it before falling back to ElasticsearchCAPath.
func ElasticsearchCAFileEnv(name string) string { return envConn("ES", name, "CA_FILE") }

// ElasticsearchCAPath is where an Elasticsearch connection's CA bundle is mounted in a runner.
func ElasticsearchCAPath(name string) string { return "/etc/sluice/es/" + name + "/" + ESCACertKey }

// Runner environment variables that describe the run (set by the manager on the Job).
const (
	EnvPipelineNamespace = "SLUICE_PIPELINE_NAMESPACE"
	EnvPipelineName      = "SLUICE_PIPELINE_NAME"
	EnvRunID             = "SLUICE_RUN_ID"
	// EnvSpec holds the JSON of the validated, defaulted ETLPipelineSpec the run executes.
	EnvSpec = "SLUICE_SPEC"
	// EnvNamespaceLabels is the JSON object of the labels of the pipeline's namespace, as the
	// manager saw them when it judged the grants; the runner judges them again.
	EnvNamespaceLabels = "SLUICE_NAMESPACE_LABELS"
	// EnvGeneration is the spec generation the run executes.
	EnvGeneration = "SLUICE_GENERATION"
	// EnvPipelineUID is the pipeline's metadata.uid: the runner keys the pipeline's state by it,
	// so a pipeline deleted and created again under the same name starts from an empty checkpoint.
	EnvPipelineUID = "SLUICE_PIPELINE_UID"
	// EnvMemoryLimit is the runner container's memory limit in bytes (the downward API): the
	// runner keeps its Go heap under 80% of it.
	EnvMemoryLimit = "SLUICE_MEMORY_LIMIT"
	// EnvCheckpointRequest is the JSON of the CheckpointRequest a `sluice runner
	// --checkpoint` Job carries out; EnvCheckpointRequestedBy is the user who asked.
	EnvCheckpointRequest     = "SLUICE_CHECKPOINT_REQUEST"
	EnvCheckpointRequestedBy = "SLUICE_CHECKPOINT_REQUESTED_BY"
	// EnvSourceConnection names the source connection of a deleted CDC pipeline to its
	// `sluice runner --forget` Job, which drops the pipeline's replication slot and
	// publication there (its DSN is in PostgresDSNEnv of that name).
	EnvSourceConnection = "SLUICE_SOURCE_CONNECTION"
	// DefaultConfigPath is where the configuration file is mounted in a runner.
	DefaultConfigPath = "/etc/sluice/config.yaml"
)

// CheckpointEnd is the termination message of a `sluice runner --checkpoint` Job: what it did
// (Outcome Done, with the checkpoint it left: none after a reset) or why it did not (Failed).
type CheckpointEnd struct {
	ID      string   `json:"id"`
	Outcome string   `json:"outcome"`
	Values  []string `json:"values,omitempty"`
	Message string   `json:"message,omitempty"`
}

// RunEnd is the termination message a runner leaves when its run ended well (Idle or Paused):
// should the runner fail to report the end to the status (the API server down for longer than
// its retries), the manager reads it from the pod and records the end instead of a failure.
type RunEnd struct {
	RunID       string `json:"runID"`
	Phase       string `json:"phase"`
	RowsRead    int64  `json:"rowsRead"`
	RowsWritten int64  `json:"rowsWritten"`
	RowsDeleted int64  `json:"rowsDeleted,omitempty"`
	RowsSwept   int64  `json:"rowsSwept,omitempty"`
	Batches     int64  `json:"batches"`
	// RowsRejected counts the rows the run put in etl.etl_rejects.
	RowsRejected int64 `json:"rowsRejected,omitempty"`
}

// Runner exit codes. The runner Job's podFailurePolicy fails the Job at once on ExitBusiness.
const (
	ExitOK       = 0
	ExitInfra    = 1
	ExitBusiness = 42
	// ExitFenced: another runner owns the pipeline; this one stopped without writing.
	ExitFenced = 43
)
