package v1alpha1

// Condition types. Ready is the summary; Reconciling and Stalled follow kstatus so that
// `kubectl wait`, Argo CD and Flux understand the pipeline.
const (
	ConditionReady         = "Ready"
	ConditionReconciling   = "Reconciling"
	ConditionStalled       = "Stalled"
	ConditionTargetAllowed = "TargetAllowed"
	// ConditionHorizonHeld is written by the runner of an Incremental run: True while an open
	// transaction in the source holds the run's read horizon back, naming it.
	ConditionHorizonHeld = "HorizonHeld"
	// ConditionCheckpointReset is written by the runner when it started a stream from an
	// empty checkpoint because the pipeline's identity changed (see the reasons below).
	ConditionCheckpointReset = "CheckpointReset"
	// ConditionSandboxed is written by the runner of a pipeline with Python tasks: True
	// (reason Confined) naming the kernel mechanisms that confine the transforms, False
	// (reason Unconfined) when they run without a sandbox, which only the operator's
	// runner.allowUnsandboxedPython permits.
	ConditionSandboxed = "Sandboxed"
	// ConditionRunnerStarted is False, with the pod's reason (CreateContainerConfigError,
	// ImagePullBackOff, Unschedulable, ...), while a requested run's runner pod cannot start.
	ConditionRunnerStarted = "RunnerStarted"
	// ConditionProgressing is False while a claimed run has committed no batch for the
	// operator's runner.progressDeadline.
	ConditionProgressing = "Progressing"
	// ConditionRowsRejected is written by the runner at the end of a run of a pipeline that
	// tolerates rejects (spec.errors) or has some: True (reason RowsRejected) with the count
	// while rows of the pipeline are in etl.etl_rejects, False (reason NoRejects) when none are.
	ConditionRowsRejected = "RowsRejected"
	// ConditionReplicationSlotHealthy is written by the runner of a CDC pipeline: True
	// (reason WALReserved) while the slot's WAL is within max_wal_size, False when it
	// retains more (WALExtended), is past max_slot_wal_keep_size and about to be
	// invalidated (WALUnreserved), or was invalidated by the server (SlotLost).
	ConditionReplicationSlotHealthy = "ReplicationSlotHealthy"
)

// Condition reasons (PascalCase, stable: tools match on them).
const (
	ReasonInvalidSpec       = "InvalidSpec"
	ReasonTargetNotAllowed  = "TargetNotAllowed"
	ReasonTargetAllowed     = "TargetAllowed"
	ReasonUnknownConnection = "UnknownConnection"
	ReasonRunRequested      = "RunRequested"
	ReasonRunning           = "Running"
	ReasonPauseRequested    = "PauseRequested"
	ReasonPaused            = "Paused"
	ReasonSucceeded         = "Succeeded"
	ReasonRunFailed         = "RunFailed"
	ReasonJobFailed         = "JobFailed"
	// ReasonRowsRejected and ReasonNoRejects are the reasons of the RowsRejected condition;
	// ReasonRejectsExceeded fails a run whose rejects passed spec.errors.
	ReasonRowsRejected    = "RowsRejected"
	ReasonNoRejects       = "NoRejects"
	ReasonRejectsExceeded = "RejectsExceeded"
	// ReasonConfined and ReasonUnconfined are the reasons of the Sandboxed condition.
	ReasonConfined   = "Confined"
	ReasonUnconfined = "Unconfined"
	// ReasonConnectionNotGranted: the pipeline's namespace may not use a connection it names
	// (the operator configuration's grants).
	ReasonConnectionNotGranted = "ConnectionNotGranted"
	// ReasonTargetNotGranted: the pipeline's namespace may not write its target.
	ReasonTargetNotGranted = "TargetNotGranted"
	// ReasonTableNotReplicable: a CDC pipeline's source connection may not replicate its
	// source.table (the connection's replicationTables).
	ReasonTableNotReplicable = "TableNotReplicable"
	// ReasonRunUnreported means the run's Job ended (or vanished) without the runner reporting the
	// end of the run, so the manager closed the run on its behalf.
	ReasonRunUnreported = "RunUnreported"

	// ReasonRunnerNotStarted: the runner pod of a requested run did not start within the
	// operator's runner.startDeadline.
	ReasonRunnerNotStarted = "RunnerNotStarted"
	// ReasonProgressDeadlineExceeded: a claimed run committed no batch for
	// runner.progressDeadline.
	ReasonProgressDeadlineExceeded = "ProgressDeadlineExceeded"

	// ReasonTransactionOpen: a transaction open in the source (idle in transaction, long,
	// or prepared) holds the read horizon back.
	ReasonTransactionOpen = "TransactionOpen"
	// ReasonHorizonCurrent: no transaction holds the read horizon back.
	ReasonHorizonCurrent = "HorizonCurrent"
	// ReasonPipelineRecreated: the state in etl_state belonged to an earlier pipeline of the
	// same name (another UID); the stream started from an empty checkpoint.
	ReasonPipelineRecreated = "PipelineRecreated"
	// ReasonStreamChanged: the source connection, cursor, keys, target or target connection
	// changed; the stream started from an empty checkpoint.
	ReasonStreamChanged = "StreamChanged"

	// Reasons of the ReplicationSlotHealthy condition and of a CDC run's failure.
	ReasonWALReserved   = "WALReserved"
	ReasonWALExtended   = "WALExtended"
	ReasonWALUnreserved = "WALUnreserved"
	ReasonSlotLost      = "SlotLost"
)

// Well-known annotations and labels.
const (
	// AnnotationRunRequestedAt requests a run when it gets a new value (any string; a
	// timestamp by convention). The value handled last is echoed in status.lastHandledRunRequest.
	AnnotationRunRequestedAt = "etl.sluice.dev/run-requested-at"
	// AnnotationReplayRejectsRequestedAt requests a run that first replays the pipeline's
	// rejected rows (etl.etl_rejects) when it gets a new value; the value handled last is
	// echoed in status.lastHandledReplayRequest.
	AnnotationReplayRejectsRequestedAt = "etl.sluice.dev/replay-rejects-requested-at"

	// AnnotationCheckpointRequest asks the manager to reset or set the checkpoint of a
	// paused pipeline: a CheckpointRequest as JSON, acted on once per id and echoed in
	// status.checkpointRequest. AnnotationCheckpointRequestedBy names who asks; the
	// sluice-checkpoint-requests admission policy lets it be only the user the API server
	// authenticated for the change.
	AnnotationCheckpointRequest     = "etl.sluice.dev/checkpoint-request"
	AnnotationCheckpointRequestedBy = "etl.sluice.dev/checkpoint-requested-by"

	// LabelPipelineNamespace and LabelPipelineName tie a runner Job to its pipeline.
	LabelPipelineNamespace = "etl.sluice.dev/pipeline-namespace"
	LabelPipelineName      = "etl.sluice.dev/pipeline-name"
	// LabelRunID carries the run id on the runner Job.
	LabelRunID = "etl.sluice.dev/run-id"
	// AnnotationPipeline carries `<namespace>/<name>` of the pipeline on its runner Jobs: label
	// values are limited to 63 characters, a pipeline name is not, so the label may be hashed.
	AnnotationPipeline = "etl.sluice.dev/pipeline"

	// Finalizer lets the manager delete a pipeline's Jobs, which live in another namespace.
	Finalizer = "etl.sluice.dev/jobs"
)
