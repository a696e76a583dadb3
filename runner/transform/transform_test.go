package transform

import (
	"context"
	"strings"
	"testing"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/batch"
	"github.com/sluice-dev/sluice/runner/failure"
)

func TestBuild(t *testing.T) {
	cases := []struct {
		name  string
		tasks []etlv1.Task
		err   string
	}{
		{name: "legacy mode gets the identity"},
		{name: "a lone sql task gets the identity", tasks: []etlv1.Task{{Name: "read", SQL: "SELECT 1"}}},
		{name: "python is not here yet", tasks: []etlv1.Task{{Name: "read", SQL: "SELECT 1"}, {Name: "py", Python: "def transform(r): return r"}},
			err: `task "py": python transforms are not supported`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			stages, err := Build(&etlv1.ETLPipelineSpec{Tasks: tc.tasks})
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || failure.Classify(err) != etlv1.ErrorBusiness {
					t.Fatalf("Build = %v, want a business error containing %q", err, tc.err)
				}
				return
			}
			if err != nil || !IsIdentity(stages) {
				t.Fatalf("Build = %v, %v; want identity stages", stages, err)
			}
			b := &batch.Batch{Rows: [][]any{{1}}}
			out, err := Chain(context.Background(), stages, b)
			if err != nil || out != b {
				t.Fatalf("Chain changed the batch: %v", err)
			}
		})
	}
}
