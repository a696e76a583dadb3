// Package transform holds the stages between the reader and the sink. A stage maps a batch to
// a batch; the executor runs the stages of a pipeline in order. Legacy mode has the identity
// stage; tasks mode's python tasks run in one stage (package python).
package transform

import (
	"context"
	"fmt"
	"log/slog"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/batch"
	"github.com/sluice-dev/sluice/runner/failure"
	"github.com/sluice-dev/sluice/runner/transform/python"
)

// Stage maps a batch to a batch. It must be deterministic and free of side effects, because a
// batch is replayed after a crash. A stage may change the columns, drop rows or emit several
// rows per input row; the executor checks afterwards that every row still has the sink key.
// An error from the user's code is a business error (failure.Business); a stage that loses
// its worker process reports an infrastructure error (failure.Infra) and is rebuilt.
type Stage interface {
	// Name identifies the stage in errors ("identity", "python"; the python stage's errors
	// name the task too).
	Name() string
	// Apply maps one batch. The input batch is not used again by the caller, so a stage may
	// reuse its rows.
	Apply(ctx context.Context, in *batch.Batch) (*batch.Batch, error)
	// Close releases the stage's resources (a worker process).
	Close() error
}

// The python tasks' stage is a Stage.
var _ Stage = (*python.Stage)(nil)

// RowFailure is a stage's failure on one input row (python.RowFailure): the batch can be
// transformed again without it.
type RowFailure = python.RowFailure

// Identity passes batches through unchanged.
type Identity struct{}

// Name returns "identity".
func (Identity) Name() string { return "identity" }

// Apply returns in.
func (Identity) Apply(_ context.Context, in *batch.Batch) (*batch.Batch, error) { return in, nil }

// Close does nothing.
func (Identity) Close() error { return nil }

// Options are what building the stages needs besides the spec.
type Options struct {
	// Python is the interpreter of python tasks, a path or a name looked up in PATH
	// (python.DefaultPython).
	Python string
	// PythonMemoryLimit is the python worker's address space limit in bytes
	// (python.DefaultMemoryLimit when 0; negative: none).
	PythonMemoryLimit int64
	// Keys are the reader's key columns, by which errors name a row; SinkKey are the columns
	// every row reaching the sink must have.
	Keys, SinkKey []string
	// Log receives the python worker's start and output.
	Log *slog.Logger
	// AllowUnsandboxed lets python tasks run unconfined on a kernel that cannot sandbox their
	// worker (runner.allowUnsandboxedPython); when off, Build fails there with a business
	// error. Confinement tells what applied.
	AllowUnsandboxed bool
}

// Build returns the stages of a spec's task plan after its SQL reader. A plan without
// transforms (legacy mode, or a single sql task) gets the identity stage. The python tasks
// all run in one worker process, started here: a task that does not compile or whose
// setup() fails is a business error before anything is read.
func Build(ctx context.Context, spec *etlv1.ETLPipelineSpec, opts Options) ([]Stage, error) {
	var tasks []python.Task
	for i, t := range spec.Tasks {
		if i == 0 && t.SQL != "" {
			continue // the SQL reader (a CDC pipeline has none: its rows come from its table)
		}
		if t.Python == "" {
			return nil, failure.Business(fmt.Errorf("task %q: only the first task may be an sql task", t.Name))
		}
		tasks = append(tasks, python.Task{Name: t.Name, Code: t.Python})
	}
	if len(tasks) == 0 {
		return []Stage{Identity{}}, nil
	}
	popts := python.Options{
		Python:           opts.Python,
		MemoryLimit:      opts.PythonMemoryLimit,
		Keys:             opts.Keys,
		SinkKey:          opts.SinkKey,
		Log:              opts.Log,
		AllowUnsandboxed: opts.AllowUnsandboxed,
	}
	if spec.TransformTimeout != nil {
		popts.Timeout = spec.TransformTimeout.Duration
	}
	stage, err := python.Start(ctx, tasks, popts)
	if err != nil {
		return nil, err
	}
	return []Stage{stage}, nil
}

// Chain applies stages in order.
func Chain(ctx context.Context, stages []Stage, b *batch.Batch) (*batch.Batch, error) {
	for _, s := range stages {
		out, err := s.Apply(ctx, b)
		if err != nil {
			return nil, fmt.Errorf("transform %s: %w", s.Name(), err)
		}
		b = out
	}
	return b, nil
}

// IsIdentity reports whether stages leave every batch unchanged, so that batches may travel
// undecoded from the reader to a sink that takes them so.
func IsIdentity(stages []Stage) bool {
	for _, s := range stages {
		if _, ok := s.(Identity); !ok {
			return false
		}
	}
	return true
}

// Confinement describes what confines the python worker of stages, for the run's status:
// "" when no stage runs python, else python.Stage.Confinement ("landlock ABI 7 (filesystem,
// tcp, signals, ptrace); seccomp (sockets, io_uring, ptrace)"), which starts with "none:"
// when the worker runs unconfined because AllowUnsandboxed allowed it.
func Confinement(stages []Stage) string {
	for _, s := range stages {
		if c, ok := s.(interface{ Confinement() string }); ok {
			return c.Confinement()
		}
	}
	return ""
}
