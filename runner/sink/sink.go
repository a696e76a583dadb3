// Package sink defines what the executor needs from a destination. Each kind of sink is a
// sub-package (postgres here; elasticsearch next) that implements Sink; the executor picks one
// from the target's kind in a single table.
package sink

import (
	"context"

	"github.com/sluice-dev/sluice/runner/batch"
)

// Sink writes batches into one target, idempotently on the key: writing the same batch twice
// leaves the target as writing it once, because a batch is replayed when a runner crashes
// between the write and the checkpoint.
//
// A sink is used by one goroutine. After any error the executor discards it (and its
// connection) and opens a new one, so a sink need not recover from a half-done write.
type Sink interface {
	// Prepare checks the target before anything is written: it exists and can be upserted on
	// the key. A missing target is a business error (failure.Business) naming it.
	Prepare(ctx context.Context) error
	// Write makes the batch durable in the target before it returns: the executor commits the
	// checkpoint right after. Rows whose key repeats within the batch collapse to the last one.
	// It returns the number of rows written.
	Write(ctx context.Context, b *batch.Batch) (int64, error)
	// Close releases what the sink holds (not a connection it was given).
	Close(ctx context.Context) error
}

// TxSink is a sink that lives in the state database. The executor hands it the checkpoint
// write with each batch, and the sink runs both in one transaction: the rows and the
// checkpoint commit together, or neither does (an error of the statement, such as a stale
// fencing epoch, rolls the rows back).
//
// Sends are pipelined: the executor sends the next batch before it receives the result of the
// previous one, so the database never waits for the runner between batches. Each checkpoint
// statement checks that the checkpoint is still the one the batch was read after, so a batch
// sent after a failed one fails too instead of committing past a gap.
type TxSink interface {
	Sink
	// Send queues the batch and stmts (the checkpoint, the batch's rejects) as one
	// transaction and returns without waiting.
	Send(ctx context.Context, b *batch.Batch, stmts ...Statement) error
	// Receive waits for the oldest sent batch and returns the rows it wrote, or the error of
	// the batch or of its statement. Results come back in the order of the sends.
	Receive(ctx context.Context) (int64, error)
}

// Statement is a statement of the state database with its parameters in text format.
type Statement struct {
	SQL    string
	Params [][]byte
}

// RawWriter is a sink that writes batches in the source's wire encoding (batch.Raw) as they
// came. When every transform stage is the identity, the executor reads raw batches for such a
// sink and no value is decoded or re-encoded on the way.
type RawWriter interface {
	Sink
	// WritesRaw reports whether Write and Send accept batches whose Raw is set.
	WritesRaw() bool
}

// Mirror is a sink that can leave its target equal to a Full run's output
// (target.fullSync Mirror). The executor calls BeginMirror on every session of such a run,
// after Prepare and before the first write, and FinishMirror once the last batch is
// committed, before the run is recorded as completed.
type Mirror interface {
	// BeginMirror starts or continues the run's pass. When run.Resume is set the run
	// continues a checkpoint: the sink finds what it kept of the pass and returns true, or
	// returns false when that is gone (a crash of the database emptied it, someone removed
	// it), and the executor starts the run over with Resume unset.
	BeginMirror(ctx context.Context, run MirrorRun) (bool, error)
	// FinishMirror makes the target equal to what the pass wrote and returns the number of
	// rows (documents) it removed. A refusal (too many deletes) is a business error that
	// leaves the target as it was. A pass that a crashed runner already finished is not
	// finished again: its count is returned.
	FinishMirror(ctx context.Context) (int64, error)
	// DoneMirror removes what the pass kept, once the run is recorded as completed. The
	// next pass removes anything it leaves.
	DoneMirror(ctx context.Context) error
}

// ExceedsDeleteRatio decides whether removing removed of total rows (documents) is more than
// target.maxDeleteRatio allows; a ratio of 1 allows any removal.
func ExceedsDeleteRatio(removed, total int64, ratio float64) bool {
	if removed <= 0 || ratio >= 1 {
		return false
	}
	return float64(removed) > ratio*float64(total)
}

// MirrorRun describes a Mirror run to its sink.
type MirrorRun struct {
	// Pipeline identifies the pipeline (namespace, name and uid) for what the sink keeps of a
	// pass between sessions.
	Pipeline string
	// RunID is the run's id; a new pass's Elasticsearch index is named after it.
	RunID string
	// Resume says the run continues a committed checkpoint.
	Resume bool
	// MaxDeleteRatio is target.maxDeleteRatio.
	MaxDeleteRatio float64
}

// Refused is a row of a batch that the target refuses for what the row holds (a constraint
// it violates, a value its mapping cannot take): writing it again cannot succeed until the
// row or the target changes.
type Refused struct {
	// Row is the row's index in the batch written.
	Row int
	// Class is what refused it: a SQLSTATE, an Elasticsearch error type.
	Class string
	// Message says why; it may still quote the row's values, which the executor scrubs.
	Message string
}

// Rejecter is a sink that can write a batch without the rows its target refuses, for a
// pipeline that tolerates rejects (spec.errors) and to name the row that failed a batch.
// The executor writes batches with Write or Send first; a batch that fails with a row error
// is written again with WriteRejecting.
type Rejecter interface {
	Sink
	// RowError reports whether err, from Write, Send or Receive, may come from some rows of
	// the batch alone.
	RowError(err error) bool
	// WriteRejecting writes b without the rows the target refuses and returns those. It
	// calls commit with them before the write is durable, and runs the statements commit
	// returns in the write's transaction (a TxSink; other sinks get none). An error of
	// commit is returned as it is, after the write is undone where the target can undo it
	// (Postgres; an Elasticsearch document stays written, which a replay rewrites alike).
	WriteRejecting(ctx context.Context, b *batch.Batch, commit func([]Refused) ([]Statement, error)) (int64, []Refused, error)
	// AnswersPerRow reports whether the target answers each row of a write on its own
	// (Elasticsearch's bulk items): WriteRejecting then costs what Write does, and the
	// executor writes every batch with it instead of writing a failed batch twice.
	AnswersPerRow() bool
}
