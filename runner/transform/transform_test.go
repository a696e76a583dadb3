package transform

import (
	"context"
	"strings"
	"testing"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/batch"
	"github.com/sluice-dev/sluice/runner/failure"
	"github.com/sluice-dev/sluice/runner/sandbox/sandboxtest"
)

func TestBuild(t *testing.T) {
	cases := []struct {
		name  string
		tasks []etlv1.Task
		err   string
	}{
		{name: "legacy mode gets the identity"},
		{name: "a lone sql task gets the identity", tasks: []etlv1.Task{{Name: "read", SQL: "SELECT 1"}}},
		{name: "a later sql task is refused", tasks: []etlv1.Task{{Name: "read", SQL: "SELECT 1"}, {Name: "again", SQL: "SELECT 2"}},
			err: `task "again": only the first task may be an sql task`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			stages, err := Build(context.Background(), &etlv1.ETLPipelineSpec{Tasks: tc.tasks}, Options{})
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || failure.Classify(err) != etlv1.ErrorBusiness {
					t.Fatalf("Build = %v, want a business error containing %q", err, tc.err)
				}
				return
			}
			if err != nil || !IsIdentity(stages) {
				t.Fatalf("Build = %v, %v; want identity stages", stages, err)
			}
			if c := Confinement(stages); c != "" {
				t.Errorf("Confinement = %q without a python stage, want \"\"", c)
			}
			b := &batch.Batch{Rows: [][]any{{1}}}
			out, err := Chain(context.Background(), stages, b)
			if err != nil || out != b {
				t.Fatalf("Chain changed the batch: %v", err)
			}
		})
	}
}

// TestBuildStartsOnePythonStage checks that the python tasks of a plan share one stage, in
// order, and that a task that does not compile fails the build as a business error.
func TestBuildStartsOnePythonStage(t *testing.T) {
	ctx := context.Background()
	spec := &etlv1.ETLPipelineSpec{Tasks: []etlv1.Task{{Name: "read", SQL: "SELECT 1"},
		{Name: "double", Python: "def transform(r):\n    r['v'] *= 2\n    return r\n"},
		{Name: "plus-one", Python: "def transform(r):\n    r['v'] += 1\n    return r\n"}}}
	opts := Options{AllowUnsandboxed: sandboxtest.UnconfinedLocally(t)}
	stages, err := Build(ctx, spec, opts)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	defer func() { _ = stages[0].Close() }()
	if len(stages) != 1 || IsIdentity(stages) {
		t.Fatalf("Build = %d stages (identity %v), want one python stage", len(stages), IsIdentity(stages))
	}
	t.Logf("confinement: %s", Confinement(stages))
	if c := Confinement(stages); c == "" {
		t.Errorf("Confinement is empty for a python stage")
	} else if !opts.AllowUnsandboxed && strings.HasPrefix(c, "none:") {
		t.Errorf("Confinement = %q on a kernel that can sandbox the worker", c)
	}
	out, err := Chain(ctx, stages, &batch.Batch{Columns: []batch.Column{{Name: "v"}}, Rows: [][]any{{int64(5)}}})
	if err != nil || out.Rows[0][0] != int64(11) {
		t.Fatalf("Chain = %v, %v; want v = 5*2+1 = 11", out, err)
	}
	spec.Tasks[2].Python = "def transform(r) return r"
	if _, err := Build(ctx, spec, opts); err == nil || !strings.Contains(err.Error(), `task "plus-one" does not compile`) ||
		failure.Classify(err) != etlv1.ErrorBusiness {
		t.Fatalf("Build with a syntax error = %v, want a business error naming the task", err)
	}
}
