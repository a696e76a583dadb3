package v1alpha1

import (
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// MinBatchBytes is the least spec.maxBatchBytes.
const MinBatchBytes = 1 << 20

// DesiredState is what the user wants the pipeline to do.
// +kubebuilder:validation:Enum=Running;Paused
type DesiredState string

const (
	// DesiredRunning lets runs start (on creation, spec change, annotation, schedule, resume).
	DesiredRunning DesiredState = "Running"
	// DesiredPaused stops the pipeline between batches and starts no new run.
	DesiredPaused DesiredState = "Paused"
)

// Mode selects how much of the source a run reads.
// +kubebuilder:validation:Enum=Full;Incremental;CDC
type Mode string

const (
	// ModeFull re-reads the whole source (a backfill). Inside one run it resumes from its
	// checkpoint after a crash or a pause; a completed run resets the checkpoint.
	ModeFull Mode = "Full"
	// ModeIncremental reads only rows after the committed checkpoint, which is kept across runs.
	ModeIncremental Mode = "Incremental"
	// ModeCDC reads source.table's changes from the source's write-ahead log (logical
	// replication, pgoutput): the first run copies the table from the snapshot its
	// replication slot exported, later runs stream inserts, updates and deletes in commit
	// order from the slot. The checkpoint is a WAL position (LSN).
	ModeCDC Mode = "CDC"
)

// ElasticsearchAction is the bulk action used for an Elasticsearch target.
// +kubebuilder:validation:Enum=Update;Index
type ElasticsearchAction string

const (
	// ActionUpdate sends bulk `update` with `doc_as_upsert: true`: a document merges into the
	// existing one, fields absent from the row are kept.
	ActionUpdate ElasticsearchAction = "Update"
	// ActionIndex sends bulk `index`: the document replaces the existing one as a whole. It is
	// much cheaper for Elasticsearch and right when the row carries the whole document.
	ActionIndex ElasticsearchAction = "Index"
)

// ETLPipelineSpec is the desired state of an ETLPipeline. It belongs to the user (and Git):
// Sluice never writes it.
//
// +kubebuilder:validation:XValidation:rule="self.mode != 'Incremental' || has(self.source.cursor.column)",message="source.cursor.column is required when mode is Incremental",fieldPath=".source.cursor.column"
// +kubebuilder:validation:XValidation:rule="self.mode == 'CDC' || has(self.tasks) || has(self.source.query)",message="one of source.query (legacy mode) or tasks (tasks mode) is required",fieldPath=".source.query"
// +kubebuilder:validation:XValidation:rule="self.mode == 'CDC' || !has(self.tasks) || has(self.tasks[0].sql)",message="the first task must be an sql task",fieldPath=".tasks"
// +kubebuilder:validation:XValidation:rule="self.mode != 'CDC' || has(self.source.table)",message="source.table is required when mode is CDC",fieldPath=".source.table"
// +kubebuilder:validation:XValidation:rule="self.mode == 'CDC' || (!has(self.source.table) && !has(self.source.columns))",message="source.table and source.columns apply only to CDC mode",fieldPath=".source.table"
// +kubebuilder:validation:XValidation:rule="self.mode != 'CDC' || (!has(self.source.query) && (!has(self.tasks) || self.tasks.all(t, !has(t.sql))))",message="a CDC pipeline reads source.table: source.query and sql tasks do not apply (python tasks do)",fieldPath=".source.query"
// +kubebuilder:validation:XValidation:rule="self.mode != 'CDC' || !has(self.source.cursor.column)",message="source.cursor.column does not apply to CDC: the write-ahead log orders the changes; keyColumns name the table's primary key",fieldPath=".source.cursor.column"
// +kubebuilder:validation:XValidation:rule="self.mode != 'CDC' || !has(self.target.action) || self.target.action == 'Index'",message="target.action Update does not apply to CDC mode: a change carries the whole row, and a row deleted and inserted again would be merged into the deleted row's document; CDC indexes whole documents (Index, the default)",fieldPath=".target.action"
// +kubebuilder:validation:XValidation:rule="!has(self.target.action) || self.target.name.startsWith('es:')",message="target.action applies only to an Elasticsearch target (es:<index>)",fieldPath=".target.action"
// +kubebuilder:validation:XValidation:rule="self.mode == 'Incremental' || !has(self.source.cursor.lag)",message="source.cursor.lag applies only to Incremental mode: a Full run reads the whole source",fieldPath=".source.cursor.lag"
// +kubebuilder:validation:XValidation:rule="!has(self.target.deleteWhen) || (!(self.target.deleteWhen.column in self.source.cursor.keyColumns) && (!has(self.source.cursor.column) || self.target.deleteWhen.column != self.source.cursor.column) && (!has(self.target.key) || !(self.target.deleteWhen.column in self.target.key)))",message="target.deleteWhen.column must be a column of its own, not the cursor or a key column",fieldPath=".target.deleteWhen.column"
type ETLPipelineSpec struct {
	// DesiredState is Running (runs may start) or Paused (a run stops between batches, none
	// starts). Patch it to pause and resume.
	// +kubebuilder:default=Running
	// +optional
	DesiredState DesiredState `json:"desiredState,omitempty"`

	// Mode is Full (re-read everything) or Incremental (read after the checkpoint).
	// +required
	Mode Mode `json:"mode"`

	// Source is where rows are read from.
	// +required
	Source SourceSpec `json:"source"`

	// Tasks is the linear task plan (tasks mode): one `sql` reader, then `python` transforms.
	// When present it overrides source.query.
	// A CDC pipeline has python tasks only: its rows come from source.table.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:XValidation:rule="self.all(t, !has(t.sql) || t.name == self[0].name)",message="only the first task may be an sql task; later tasks must be python"
	// +listType=map
	// +listMapKey=name
	// +optional
	Tasks []Task `json:"tasks,omitempty"`

	// Target is where rows are written.
	// +required
	Target TargetSpec `json:"target"`

	// BatchSize is the number of reader rows per batch; the checkpoint is committed after each.
	// +kubebuilder:default=5000
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100000
	// +optional
	BatchSize int32 `json:"batchSize,omitempty"`

	// MaxBatchBytes bounds a batch in bytes as well as in rows: a batch ends at batchSize rows
	// or once its rows reach this size, whichever comes first, so that a table of wide rows
	// cannot take the runner out of memory. Defaults to the operator's runner.maxBatchBytes
	// (16Mi). At least 1Mi.
	// +optional
	MaxBatchBytes *resource.Quantity `json:"maxBatchBytes,omitempty"`

	// Schedule is an optional cron expression (five fields, or @hourly, @daily, @every 10m, ...).
	// A run starts at each tick while desiredState is Running and no run is active.
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:Pattern=`^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|@every [0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h)([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))*|[0-9A-Za-z*/,?-]+( +[0-9A-Za-z*/,?-]+){4})$`
	// +optional
	Schedule string `json:"schedule,omitempty"`

	// Retry is the policy for infrastructure errors (connection loss, overload): a batch is
	// retried from the last checkpoint with exponential backoff.
	// +kubebuilder:default={}
	// +optional
	Retry RetrySpec `json:"retry,omitempty"`

	// TransformTimeout bounds the time the Python transforms may spend on one batch.
	// +kubebuilder:default="60s"
	// +optional
	TransformTimeout *metav1.Duration `json:"transformTimeout,omitempty"`

	// Errors is the run's tolerance of rows refused for what they hold (a Python exception
	// for one row, an Elasticsearch mapping rejection of one document, a Postgres constraint
	// one row violates). A refused row goes to etl.etl_rejects in the state database with its
	// reason, and the run goes on while the tolerance holds. Without it no row is tolerated:
	// the first refused row fails the run, naming its key.
	// +optional
	Errors *ErrorsSpec `json:"errors,omitempty"`
}

// ErrorsSpec bounds the rows a run may reject. When both bounds are set, the run fails once
// either is passed, with the reject count in its message; what was rejected until then
// stays in etl.etl_rejects.
type ErrorsSpec struct {
	// MaxRejectedRows is how many rows one run may reject.
	// +kubebuilder:validation:Minimum=0
	// +optional
	MaxRejectedRows *int64 `json:"maxRejectedRows,omitempty"`

	// MaxRejectedRatio is the fraction of the rows a run reads that it may reject. It is
	// judged during the run once it has read enough rows for the ratio to allow one reject
	// (1/ratio rows), and when the run ends; one reject is always allowed, so that a short
	// run is not failed by its only bad row. 0 allows none.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1
	// +optional
	MaxRejectedRatio *float64 `json:"maxRejectedRatio,omitempty"`
}

// SourceSpec names the Postgres source and how to page through it.
type SourceSpec struct {
	// Connection is the name of a Postgres connection in the operator's configuration.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +required
	Connection string `json:"connection"`

	// Query is the legacy-mode reader: one SQL SELECT. Ignored when tasks are given.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=65536
	// +optional
	Query string `json:"query,omitempty"`

	// Table is the table a CDC pipeline replicates, `table` (schema public) or
	// `schema.table`. It must have a primary key (or a replica identity index) whose
	// columns are cursor.keyColumns. CDC mode only.
	// +kubebuilder:validation:MaxLength=127
	// +kubebuilder:validation:Pattern=`^([a-z_][a-z0-9_]{0,62}\.)?[a-z_][a-z0-9_]{0,62}$`
	// +optional
	Table string `json:"table,omitempty"`

	// Columns, when set, are the columns of source.table a CDC pipeline replicates (the
	// key columns are always among them); by default every column. CDC mode only.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=1600
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:Pattern=`^[A-Za-z_][A-Za-z0-9_]*$`
	// +listType=set
	// +optional
	Columns []string `json:"columns,omitempty"`

	// Cursor says how the reader's output is ordered and paged. A CDC pipeline gives only
	// keyColumns: the table's primary key.
	// +required
	Cursor CursorSpec `json:"cursor"`
}

// CursorSpec defines the keyset order of the reader's output: (column, keyColumns...).
type CursorSpec struct {
	// Column is the monotonic column (for example updated_at) an Incremental pipeline resumes
	// after. Required for Incremental.
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[A-Za-z_][A-Za-z0-9_]*$`
	// +optional
	Column string `json:"column,omitempty"`

	// KeyColumns uniquely identify a reader row. They break ties on the cursor column, order a
	// Full run, and are the default sink key.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:Pattern=`^[A-Za-z_][A-Za-z0-9_]*$`
	// +listType=set
	// +required
	KeyColumns []string `json:"keyColumns"`

	// Lag holds the read horizon of an Incremental run back by a fixed margin. By default a
	// run reads, for a time cursor (timestamptz, timestamp, date), only rows below the start
	// of the oldest transaction still open in the source, and for any other cursor (a
	// sequence) only up to the largest value committed when the run started, once every
	// transaction open then has ended. Set lag when the cursor is not stamped by the source's
	// own transactions (an application clock that may run ahead) or the source is a standby,
	// which cannot see the primary's open transactions: rows whose cursor is within lag of
	// the horizon wait for a later run. Time cursors only.
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s') && duration(self) <= duration('168h')",message="lag must be between 0s and 168h"
	// +optional
	Lag *metav1.Duration `json:"lag,omitempty"`
}

// Task is one step of the linear task plan: exactly one of sql or python.
// +kubebuilder:validation:XValidation:rule="has(self.sql) != has(self.python)",message="a task must have exactly one of sql or python"
type Task struct {
	// Name identifies the task in the plan and in error messages.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9_]*[a-z0-9])?$`
	// +required
	Name string `json:"name"`

	// SQL is the reader's SELECT (first task only).
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=65536
	// +optional
	SQL string `json:"sql,omitempty"`

	// Python is inline code defining `def transform(row: dict) -> dict | list[dict] | None`
	// and optionally `def setup()`. Returning `sluice.Delete(row)` (after `import sluice`)
	// deletes the row's sink key. Transforms must be deterministic and free of side effects:
	// a batch may be replayed after a crash.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=65536
	// +optional
	Python string `json:"python,omitempty"`
}

// TargetSpec names the sink.
type TargetSpec struct {
	// Name is `analytics.<table>` for a Postgres table or `es:<index>` for an Elasticsearch
	// index. It must be in the operator's whitelist.
	// +kubebuilder:validation:MaxLength=260
	// +kubebuilder:validation:Pattern=`^(analytics\.[a-z_][a-z0-9_]{0,62}|es:[a-z0-9][a-z0-9._-]{0,254})$`
	// +required
	Name string `json:"name"`

	// Connection is the sink's connection in the operator's configuration. For a Postgres
	// target it defaults to source.connection; for an Elasticsearch target, to the
	// configuration's only (or `default`) Elasticsearch connection.
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +optional
	Connection string `json:"connection,omitempty"`

	// Key lists the columns of the upsert key and of the Elasticsearch `_id`. Defaults to
	// source.cursor.keyColumns.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:Pattern=`^[A-Za-z_][A-Za-z0-9_]*$`
	// +listType=set
	// +optional
	Key []string `json:"key,omitempty"`

	// Action is the Elasticsearch bulk action: Update (default; `update` with doc_as_upsert,
	// merging into the existing document) or Index (replace the whole document; cheaper). A
	// CDC pipeline indexes whole documents: Index is its default and its only action.
	// +optional
	Action ElasticsearchAction `json:"action,omitempty"`

	// DeleteWhen turns soft-deleted source rows into deletes: a reader row whose marker column
	// is set deletes its key from the sink instead of being written.
	// +optional
	DeleteWhen *DeleteWhenSpec `json:"deleteWhen,omitempty"`

	// FullSync is what a Full run does with sink rows it did not read: Upsert (the default)
	// leaves them; Mirror makes the sink equal to the run's output. A Postgres table is swept
	// of the keys the run did not read; an Elasticsearch target is an alias, rebuilt into a
	// new index that replaces the old one in one atomic alias swap. Incremental runs ignore it.
	// +kubebuilder:default=Upsert
	// +optional
	FullSync FullSync `json:"fullSync,omitempty"`

	// MaxDeleteRatio bounds what a Mirror run may remove: a sweep that would delete more than
	// this fraction of a Postgres table's rows, or a rebuilt Elasticsearch index that holds
	// that fraction fewer documents than the one behind the alias, fails the run and changes
	// nothing, so that a source emptied by mistake never empties the sink. 1 allows any.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1
	// +kubebuilder:default=0.5
	// +optional
	MaxDeleteRatio *float64 `json:"maxDeleteRatio,omitempty"`
}

// DeleteWhenSpec names the soft-delete marker of the reader's rows.
type DeleteWhenSpec struct {
	// Column is a column of the reader's output (for example deleted_at): a row where it is
	// not NULL (or, for a boolean, true) deletes the row's key from the sink. The column is
	// never written to the sink.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[A-Za-z_][A-Za-z0-9_]*$`
	// +required
	Column string `json:"column"`
}

// FullSync selects what a Full run does with sink rows it did not read.
// +kubebuilder:validation:Enum=Upsert;Mirror
type FullSync string

const (
	// FullSyncUpsert writes every row read and removes nothing.
	FullSyncUpsert FullSync = "Upsert"
	// FullSyncMirror leaves the sink equal to the run's output.
	FullSyncMirror FullSync = "Mirror"
)

// DefaultMaxDeleteRatio is target.maxDeleteRatio's default.
const DefaultMaxDeleteRatio = 0.5

// RetrySpec is the retry policy for infrastructure errors.
type RetrySpec struct {
	// Attempts is how many times a failed batch is retried before the run fails.
	// +kubebuilder:default=3
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10
	// +optional
	Attempts int32 `json:"attempts,omitempty"`

	// InitialBackoff is the wait before the first retry; each later wait doubles it.
	// +kubebuilder:default="1s"
	// +optional
	InitialBackoff *metav1.Duration `json:"initialBackoff,omitempty"`
}

// Phase is the pipeline's place in its state machine.
// +kubebuilder:validation:Enum=Idle;RunRequested;Running;PauseRequested;Paused;Failed
type Phase string

const (
	// PhaseIdle means no run is active; the last one (if any) completed.
	PhaseIdle Phase = "Idle"
	// PhaseRunRequested means a run was requested and its Job created; no runner has claimed it yet.
	PhaseRunRequested Phase = "RunRequested"
	// PhaseRunning means a runner claimed the run and is moving batches.
	PhaseRunning Phase = "Running"
	// PhasePauseRequested means the user paused a running pipeline; the runner stops after its batch.
	PhasePauseRequested Phase = "PauseRequested"
	// PhasePaused means no run is active and none will start until desiredState is Running.
	PhasePaused Phase = "Paused"
	// PhaseFailed means the spec is invalid or the last run failed; see the conditions and status.run.
	PhaseFailed Phase = "Failed"
)

// ErrorClass tells a retryable failure from one that needs a change.
type ErrorClass string

const (
	// ErrorInfra is an infrastructure error (connection loss, overload) that outlived its retries.
	ErrorInfra ErrorClass = "Infra"
	// ErrorBusiness is an error in the data or the pipeline (bad SQL, mapping conflict, a Python
	// exception) that retrying cannot fix.
	ErrorBusiness ErrorClass = "Business"
)

// RunTrigger says why a run started.
type RunTrigger string

const (
	// TriggerCreated means the pipeline was created with desiredState Running.
	TriggerCreated RunTrigger = "Created"
	// TriggerSpecChanged means the spec's generation changed.
	TriggerSpecChanged RunTrigger = "SpecChanged"
	// TriggerAnnotation means the run-requested-at annotation got a new value.
	TriggerAnnotation RunTrigger = "Annotation"
	// TriggerReplayRejects means the replay-rejects-requested-at annotation got a new value:
	// the run first reads the pipeline's rejected rows again, then runs as usual.
	TriggerReplayRejects RunTrigger = "ReplayRejects"
	// TriggerSchedule means the cron schedule ticked.
	TriggerSchedule RunTrigger = "Schedule"
	// TriggerResume means desiredState went from Paused to Running.
	TriggerResume RunTrigger = "Resume"
	// TriggerConfigChanged means the operator configuration changed so that the spec problem
	// the pipeline failed for (a target not whitelisted, an unknown connection) went away.
	TriggerConfigChanged RunTrigger = "ConfigChanged"
)

// RunStatus describes the current or last run.
type RunStatus struct {
	// ID identifies the run; the Job is named after it.
	ID string `json:"id"`
	// JobName is the runner Job of the run, in the operator's namespace.
	// +optional
	JobName string `json:"jobName,omitempty"`
	// Trigger says why the run started.
	// +optional
	Trigger RunTrigger `json:"trigger,omitempty"`
	// Generation is the spec generation the run executes.
	// +optional
	Generation int64 `json:"generation,omitempty"`
	// StartTime is when the run was requested.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`
	// CompletionTime is when the run ended (Idle, Paused or Failed).
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`
	// RowsRead counts reader rows of committed batches.
	// +optional
	RowsRead int64 `json:"rowsRead,omitempty"`
	// RowsWritten counts sink rows (after transforms) of committed batches.
	// +optional
	RowsWritten int64 `json:"rowsWritten,omitempty"`
	// RowsDeleted counts the deletes (soft-deleted rows, explicit deletes of a transform) of
	// committed batches.
	// +optional
	RowsDeleted int64 `json:"rowsDeleted,omitempty"`
	// RowsSwept counts the sink rows a completed Mirror run removed because it did not read
	// them (Postgres), or the documents of the replaced index that the new one lacks
	// (Elasticsearch).
	// +optional
	RowsSwept int64 `json:"rowsSwept,omitempty"`
	// Batches counts committed batches.
	// +optional
	Batches int64 `json:"batches,omitempty"`
	// RowsRejected counts the reader rows of committed batches that the run put in
	// etl.etl_rejects instead of the sink (spec.errors).
	// +optional
	RowsRejected int64 `json:"rowsRejected,omitempty"`
	// RejectsReplayed counts the rejected rows a replay run read again and wrote (a replay
	// requested with the replay-rejects-requested-at annotation).
	// +optional
	RejectsReplayed int64 `json:"rejectsReplayed,omitempty"`
	// ErrorClass is Infra or Business when the run failed.
	// +optional
	ErrorClass ErrorClass `json:"errorClass,omitempty"`
	// Message is the cause of a failure (never a credential).
	// +kubebuilder:validation:MaxLength=4096
	// +optional
	Message string `json:"message,omitempty"`
}

// CheckpointStatus is the committed position of the reader.
type CheckpointStatus struct {
	// Values are the cursor column then the key columns of the last committed reader row,
	// rendered as strings.
	// +optional
	Values []string `json:"values,omitempty"`
	// Time is when the checkpoint was committed.
	// +optional
	Time *metav1.Time `json:"time,omitempty"`
}

// ETLPipelineStatus is the observed state of an ETLPipeline. It belongs to Sluice.
type ETLPipelineStatus struct {
	// ObservedGeneration is the spec generation of the last successful reconcile.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Phase is the pipeline's place in its state machine.
	// +optional
	Phase Phase `json:"phase,omitempty"`

	// Conditions: Ready (summary), Reconciling and Stalled (kstatus), TargetAllowed.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// Run is the current or last run.
	// +optional
	Run *RunStatus `json:"run,omitempty"`

	// Checkpoint is the last committed reader position.
	// +optional
	Checkpoint *CheckpointStatus `json:"checkpoint,omitempty"`

	// LastHandledRunRequest echoes the last value of the run-requested-at annotation acted on.
	// +optional
	LastHandledRunRequest string `json:"lastHandledRunRequest,omitempty"`

	// LastHandledReplayRequest echoes the last value of the replay-rejects-requested-at
	// annotation acted on.
	// +optional
	LastHandledReplayRequest string `json:"lastHandledReplayRequest,omitempty"`

	// UnresolvedRejects counts the pipeline's rows in etl.etl_rejects when its last run
	// ended: rows refused and not written since (RowsRejected condition).
	// +optional
	UnresolvedRejects int64 `json:"unresolvedRejects,omitempty"`

	// CheckpointRequest is the last checkpoint request (the checkpoint-request annotation)
	// and what became of it.
	// +optional
	CheckpointRequest *CheckpointRequestStatus `json:"checkpointRequest,omitempty"`

	// RecentRejects are the newest of those rows (at most MaxRecentRejects), for a person's
	// first look; etl.rejects in the state database lists them all.
	// +optional
	// +kubebuilder:validation:MaxItems=10
	RecentRejects []RejectSummary `json:"recentRejects,omitempty"`

	// NextScheduledRun is the next tick of spec.schedule. After a run that failed with an
	// infrastructure error it is a later tick: the next one after one failure, the second after
	// two, the fourth after three, ... at most the eighth.
	// +optional
	NextScheduledRun *metav1.Time `json:"nextScheduledRun,omitempty"`

	// ConsecutiveFailures counts the runs that failed in a row since the last one that
	// completed.
	// +optional
	ConsecutiveFailures int32 `json:"consecutiveFailures,omitempty"`

	// Totals are the pipeline's counters over all its runs, for its metrics: the manager adds
	// a run's counters once, when the run has ended, so they survive restarts and only grow.
	// +optional
	Totals *PipelineTotals `json:"totals,omitempty"`

	// History holds the last runs that ended, newest first (at most MaxRunHistory).
	// +optional
	// +kubebuilder:validation:MaxItems=10
	History []RunSummary `json:"history,omitempty"`

	// Replication is a CDC pipeline's replication slot, as its runner last saw it.
	// +optional
	Replication *ReplicationStatus `json:"replication,omitempty"`
}

// ReplicationPhase is where a CDC pipeline's stream is.
// +kubebuilder:validation:Enum=Snapshot;Streaming
type ReplicationPhase string

const (
	// ReplicationSnapshot means the first run copies the table from the slot's snapshot; the
	// checkpoint holds the key of the last copied row.
	ReplicationSnapshot ReplicationPhase = "Snapshot"
	// ReplicationStreaming means runs apply the slot's changes; the checkpoint is an LSN.
	ReplicationStreaming ReplicationPhase = "Streaming"
)

// ReplicationStatus describes a CDC pipeline's replication slot and publication in the
// source. Its figures are those of the runner's last report: a scheduled pipeline's slot
// keeps retaining WAL between runs, which the next run reports.
type ReplicationStatus struct {
	// Slot is the logical replication slot's name; Publication the publication's.
	Slot        string `json:"slot"`
	Publication string `json:"publication"`
	// Phase is Snapshot (the initial copy) or Streaming.
	Phase ReplicationPhase `json:"phase"`
	// ConfirmedLSN is the WAL position whose changes the sink has committed (the
	// checkpoint); the slot's confirmed position never passes it.
	// +optional
	ConfirmedLSN string `json:"confirmedLSN,omitempty"`
	// RetainedWALBytes is how much WAL the slot holds back in the source
	// (pg_current_wal_lsn() - restart_lsn): the disk the pipeline costs the source.
	// +optional
	RetainedWALBytes int64 `json:"retainedWALBytes,omitempty"`
	// WALStatus is pg_replication_slots.wal_status: reserved, extended, unreserved or lost.
	// +optional
	WALStatus string `json:"walStatus,omitempty"`
	// LastSourceCommitTime is the source commit time of the last transaction applied.
	// +optional
	LastSourceCommitTime *metav1.Time `json:"lastSourceCommitTime,omitempty"`
	// LagMilliseconds is how far the sink was behind the source at the last report: from
	// the source commit of the oldest change not yet applied (0 when caught up).
	// +optional
	LagMilliseconds int64 `json:"lagMilliseconds,omitempty"`
	// ObservedTime is when the runner measured these figures.
	// +optional
	ObservedTime *metav1.Time `json:"observedTime,omitempty"`
}

// MaxRunHistory is how many ended runs status.history keeps.
const MaxRunHistory = 5

// CheckpointAction is what a checkpoint request does.
// +kubebuilder:validation:Enum=Reset;Set
type CheckpointAction string

const (
	// CheckpointReset forgets the checkpoints: the next run reads the source from the start.
	CheckpointReset CheckpointAction = "Reset"
	// CheckpointSet moves an Incremental pipeline's checkpoint to the given values (the
	// cursor column then the key columns, in Postgres' text form): the next run reads the
	// rows after them.
	CheckpointSet CheckpointAction = "Set"
)

// CheckpointRequest is the value of the checkpoint-request annotation.
type CheckpointRequest struct {
	// ID tells one request from the next (any string; kubectl sluice uses a timestamp).
	ID     string           `json:"id"`
	Action CheckpointAction `json:"action"`
	// Values are Set's checkpoint: the cursor column's value, then the key columns'.
	// +optional
	Values []string `json:"values,omitempty"`
}

// CheckpointOutcome is what became of a checkpoint request.
type CheckpointOutcome string

const (
	// CheckpointPending means the manager started the Job that carries the request out.
	CheckpointPending CheckpointOutcome = "Pending"
	// CheckpointDone means the checkpoint is what the request asked for.
	CheckpointDone CheckpointOutcome = "Done"
	// CheckpointRefused means the request was not carried out (the pipeline was not Paused,
	// or the request is malformed); nothing changed.
	CheckpointRefused CheckpointOutcome = "Refused"
	// CheckpointFailed means the Job could not carry it out (values that are not of the
	// cursor's types, an unreachable state database); nothing changed.
	CheckpointFailed CheckpointOutcome = "Failed"
)

// CheckpointRequestStatus is the last checkpoint request and its outcome.
type CheckpointRequestStatus struct {
	ID     string           `json:"id"`
	Action CheckpointAction `json:"action"`
	// +optional
	Values []string `json:"values,omitempty"`
	// RequestedBy is the user the API server authenticated for the request.
	// +optional
	RequestedBy string            `json:"requestedBy,omitempty"`
	Outcome     CheckpointOutcome `json:"outcome"`
	// Message says why a request was refused or failed, or what it did.
	// +kubebuilder:validation:MaxLength=2048
	// +optional
	Message string `json:"message,omitempty"`
	// JobName is the Job that carries the request out, in the operator's namespace.
	// +optional
	JobName string `json:"jobName,omitempty"`
	// +optional
	Time *metav1.Time `json:"time,omitempty"`
}

// MaxRecentRejects is how many rejects status.recentRejects shows.
const MaxRecentRejects = 10

// RejectSummary is a row of etl.etl_rejects as the status shows it.
type RejectSummary struct {
	// Key names the reader row by its key columns (id=42), masked like the checkpoint when
	// the operator redacts it.
	Key string `json:"key"`
	// Stage is transform or sink; Class is the exception type, Elasticsearch error type or
	// SQLSTATE.
	Stage string `json:"stage"`
	Class string `json:"class"`
	// Message is why, without the row's values.
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message"`
	// RunID is the run that rejected the row last.
	RunID string `json:"runID"`
	// Time is when.
	// +optional
	Time *metav1.Time `json:"time,omitempty"`
	// Attempts counts the times the key was refused.
	// +optional
	Attempts int32 `json:"attempts,omitempty"`
}

// PipelineTotals are a pipeline's counters over all its runs.
type PipelineTotals struct {
	RowsRead    int64 `json:"rowsRead,omitempty"`
	RowsWritten int64 `json:"rowsWritten,omitempty"`
	RowsDeleted int64 `json:"rowsDeleted,omitempty"`
	Batches     int64 `json:"batches,omitempty"`
	// +optional
	RowsRejected int64 `json:"rowsRejected,omitempty"`
	// Runs that ended, by outcome.
	RunsSucceeded int64 `json:"runsSucceeded,omitempty"`
	RunsFailed    int64 `json:"runsFailed,omitempty"`
	RunsPaused    int64 `json:"runsPaused,omitempty"`
	// LastSuccessTime is the end of the last run that completed.
	// +optional
	LastSuccessTime *metav1.Time `json:"lastSuccessTime,omitempty"`
	// CountedRunID is the last run whose counters are in the totals.
	// +optional
	CountedRunID string `json:"countedRunID,omitempty"`
}

// RunSummary is one ended run.
type RunSummary struct {
	ID      string     `json:"id"`
	Trigger RunTrigger `json:"trigger,omitempty"`
	// Outcome is the phase the run ended in: Idle (completed), Paused or Failed.
	Outcome Phase `json:"outcome"`
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`
	// Duration is CompletionTime minus StartTime, rounded to the second.
	// +optional
	Duration    string `json:"duration,omitempty"`
	RowsRead    int64  `json:"rowsRead,omitempty"`
	RowsWritten int64  `json:"rowsWritten,omitempty"`
	RowsDeleted int64  `json:"rowsDeleted,omitempty"`
	// +optional
	RowsRejected int64 `json:"rowsRejected,omitempty"`
	// +optional
	ErrorClass ErrorClass `json:"errorClass,omitempty"`
}

// ETLPipeline is a fault-tolerant ETL pipeline from Postgres into an analytics table or an
// Elasticsearch index.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=etlp,categories=sluice
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Desired",type=string,JSONPath=`.spec.desiredState`
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.mode`
// +kubebuilder:printcolumn:name="Target",type=string,JSONPath=`.spec.target.name`
// +kubebuilder:printcolumn:name="Rows",type=integer,JSONPath=`.status.run.rowsWritten`
// +kubebuilder:printcolumn:name="Deleted",type=integer,JSONPath=`.status.run.rowsDeleted`
// +kubebuilder:printcolumn:name="Swept",type=integer,JSONPath=`.status.run.rowsSwept`
// +kubebuilder:printcolumn:name="Rejected",type=integer,JSONPath=`.status.unresolvedRejects`
// +kubebuilder:printcolumn:name="Last Run",type=date,JSONPath=`.status.run.completionTime`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ETLPipeline struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec ETLPipelineSpec `json:"spec"`
	// +optional
	Status ETLPipelineStatus `json:"status,omitempty"`
}

// ETLPipelineList is a list of ETLPipelines.
//
// +kubebuilder:object:root=true
type ETLPipelineList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ETLPipeline `json:"items"`
}
