// Package status carries a run's state to the ETLPipeline's status: the claim of the run,
// the pause signal between batches, progress, and the run's end. The executor sees only the
// Reporter interface, so it runs against the Kubernetes API (Kube), against nothing (Log, for
// tests, benchmarks and runs by hand) or against a fake.
package status

import (
	"context"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

// Signal is what the pipeline asks of a running run.
type Signal int

const (
	// Continue means the run is still the pipeline's active run.
	Continue Signal = iota
	// Pause means the manager set PauseRequested; stop after the committed batch, report Paused.
	Pause
	// Stop means the run is no longer the pipeline's (cancelled, replaced or deleted); stop
	// without writing anything more, the status included.
	Stop
)

// String names the signal in logs.
func (s Signal) String() string {
	switch s {
	case Continue:
		return "Continue"
	case Pause:
		return "Pause"
	case Stop:
		return "Stop"
	}
	return "Unknown"
}

// Claim is what the runner learns when it claims its run.
type Claim struct {
	// Trigger says why the run started; a Resume run of a Full pipeline continues the
	// checkpoint of the run it resumes.
	Trigger etlv1.RunTrigger
}

// Progress is the committed state of the run.
type Progress struct {
	RowsRead, RowsWritten, Batches int64
	// RowsDeleted counts the deletes of committed batches; RowsSwept what a Mirror run
	// removed at its end.
	RowsDeleted, RowsSwept int64
	// RowsRejected counts the rows of committed batches put in etl.etl_rejects;
	// RejectsReplayed the rejected rows a replay read again and wrote.
	RowsRejected, RejectsReplayed int64
	// Checkpoint is the last committed reader position (nil: none committed yet).
	Checkpoint []string
	// CheckpointTime is when it was committed.
	CheckpointTime time.Time
	// Conditions are the runner's own conditions (HorizonHeld, CheckpointReset), set as
	// given; the manager leaves them alone.
	Conditions []metav1.Condition
	// Cleared are condition types the runner removes: a CheckpointReset of an earlier run
	// is history once a run continued the checkpoint.
	Cleared []string
	// Replication is a CDC run's slot, as last inspected (nil: unchanged).
	Replication *etlv1.ReplicationStatus
}

// End is the end of a run.
type End struct {
	// Phase is Idle (completed), Paused or Failed.
	Phase etlv1.Phase
	Progress
	// ClearCheckpoint removes status.checkpoint: a completed full run leaves none.
	ClearCheckpoint bool
	// ErrorClass and Message describe a failure; Message must hold no credential.
	ErrorClass etlv1.ErrorClass
	Message    string
	// Time is the run's completion time.
	Time time.Time
	// UnresolvedRejects, when set, is the pipeline's count of rows in etl.etl_rejects as
	// the run ended (status.unresolvedRejects).
	UnresolvedRejects *int64
	// RecentRejects, when UnresolvedRejects is set, are the newest of them
	// (status.recentRejects).
	RecentRejects []etlv1.RejectSummary
}

// Reporter carries a run's state to the pipeline's status. Implementations must never
// write to a pipeline whose current run is another one.
type Reporter interface {
	// Claim makes this runner's run the running one: RunRequested becomes Running. A run
	// already Running or PauseRequested (a pod replacing a crashed one) is claimed again
	// without a write. Any other phase, or another run id, returns failure.ErrFenced (wrapped).
	Claim(ctx context.Context) (Claim, error)
	// Check reads what the pipeline asks of the run now. The executor calls it between
	// batches, at most about once a second.
	Check(ctx context.Context) (Signal, error)
	// Progress records committed counters and the checkpoint. The executor calls it every
	// few seconds; a reporter may skip one on a conflict, the next one catches up.
	Progress(ctx context.Context, p Progress) error
	// Finish records the run's end. It retries conflicts and writes nothing when the run is
	// no longer the pipeline's.
	Finish(ctx context.Context, e End) error
}

// Eventer is implemented by reporters that can record events on the pipeline, for what a
// person looks for in `kubectl describe` (a checkpoint reset). Recording is best effort.
type Eventer interface {
	Event(ctx context.Context, warning bool, reason, message string)
}
