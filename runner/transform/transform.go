// Package transform holds the stages between the reader and the sink. A stage maps a batch to
// a batch; the executor runs the stages of a pipeline in order. Today there is the identity
// stage; Python stages (tasks mode) plug in here as another Stage.
package transform

import (
	"context"
	"fmt"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/batch"
	"github.com/sluice-dev/sluice/runner/failure"
)

// Stage maps a batch to a batch. It must be deterministic and free of side effects, because a
// batch is replayed after a crash. A stage may change the columns, drop rows or emit several
// rows per input row; the executor checks afterwards that every row still has the sink key.
// An error from the user's code is a business error (failure.Business); a stage that loses
// its worker process reports an infrastructure error (failure.Infra) and is rebuilt.
type Stage interface {
	// Name identifies the stage in errors (the task name).
	Name() string
	// Apply maps one batch. The input batch is not used again by the caller, so a stage may
	// reuse its rows.
	Apply(ctx context.Context, in *batch.Batch) (*batch.Batch, error)
	// Close releases the stage's resources (a worker process).
	Close() error
}

// Identity passes batches through unchanged.
type Identity struct{}

// Name returns "identity".
func (Identity) Name() string { return "identity" }

// Apply returns in.
func (Identity) Apply(_ context.Context, in *batch.Batch) (*batch.Batch, error) { return in, nil }

// Close does nothing.
func (Identity) Close() error { return nil }

// Build returns the stages of a spec's task plan after its SQL reader. A plan without
// transforms (legacy mode, or a single sql task) gets the identity stage.
func Build(spec *etlv1.ETLPipelineSpec) ([]Stage, error) {
	stages := []Stage{Identity{}}
	for i, t := range spec.Tasks {
		if i == 0 {
			continue // the SQL reader
		}
		if t.Python != "" {
			return nil, failure.Business(fmt.Errorf("task %q: python transforms are not supported by this runner yet", t.Name))
		}
		return nil, failure.Business(fmt.Errorf("task %q: only the first task may be an sql task", t.Name))
	}
	return stages, nil
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
