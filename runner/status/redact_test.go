package status

import (
	"bytes"
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

func TestRedactValues(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"the source's row key",
			`source row (id=77) has a NULL cursor column "updated_at"`,
			`source row (id=****) has a NULL cursor column "updated_at"`},
		{"a composite key with quoted values",
			`source row (tenant=7, email="a, b) c@example.com") has a NULL key column "id"`,
			`source row (tenant=****, email=****) has a NULL key column "id"`},
		{"a transform's reader row, twice",
			`task "t" raised an exception at reader row (id=42, at=2024-01-01 00:00:00Z): ... reader row (id="x\"y")`,
			`task "t" raised an exception at reader row (id=****, at=****): ... reader row (id=****)`},
		{"the order columns of a tie",
			`the reader's output has two rows with the same (updated_at, id), reader row (updated_at="2024-01-01 00:00:00+00", id=5): the keyset order must be unique`,
			`the reader's output has two rows with the same (updated_at, id), reader row (updated_at=****, id=****): the keyset order must be unique`},
		{"a NULL key stays a value",
			`source row (id=NULL) has a NULL key column "id"`,
			`source row (id=****) has a NULL key column "id"`},
		{"a row without key columns names no value",
			`task "t" was at reader row (row 3 of the batch)`,
			`task "t" was at reader row (row 3 of the batch)`},
		{"key columns without values stay",
			`write to es:c: row 2 of the batch, key (id, tenant): the _id is empty`,
			`write to es:c: row 2 of the batch, key (id, tenant): the _id is empty`},
		{"Elasticsearch document ids",
			`write to es:c: rejected 1 of 2 documents: index c, _id "42": status 400: document_parsing_exception: [1:8] failed to parse field [age] of type [long] in document with id '42'`,
			`write to es:c: rejected 1 of 2 documents: index c, _id "****": status 400: document_parsing_exception: [1:8] failed to parse field [age] of type [long] in document with id '****'`},
		{"an Elasticsearch id with a quote",
			`_id "o'brien": status 400: document_parsing_exception: failed to parse field [age] of type [long] in document with id 'o'brien' (caused by x)`,
			`_id "****": status 400: document_parsing_exception: failed to parse field [age] of type [long] in document with id '****' (caused by x)`},
		{"an Elasticsearch version conflict",
			`_id "[\"a\",1]": status 409: version_conflict_engine_exception: [["a",1]]: version conflict, document already exists (current version [1])`,
			`_id "****": status 409: version_conflict_engine_exception: [****]: version conflict, document already exists (current version [1])`},
		{"the read horizon",
			"the read horizon is at 2024-05-01 10:00:00.123456Z",
			"the read horizon is at ****"},
		{"the read horizon of a sequence cursor",
			"the read horizon is the cursor value 1234",
			"the read horizon is the cursor value ****"},
		{"a held read horizon names its holder",
			`the read horizon is held at 2024-05-01 10:00:00Z by backend pid 7 (application "psql", idle in transaction since 2024-05-01T09:00:00Z): rows stamped later wait until it ends`,
			`the read horizon is held at **** by backend pid 7 (application "psql", idle in transaction since 2024-05-01T09:00:00Z): rows stamped later wait until it ends`},
		{"the checkpoints etl.advance compares",
			`ERROR: pipeline tenant/items: checkpoint is {"2024-01-01 00:00:00+00",5}, the batch was read after {"2024-01-01 00:00:00+00","a,b"} (SQLSTATE SLF02)`,
			`ERROR: pipeline tenant/items: checkpoint is {****,****}, the batch was read after {****,****} (SQLSTATE SLF02)`},
		{"no checkpoint yet",
			`checkpoint is <NULL>, the batch was read after {7}`,
			`checkpoint is <NULL>, the batch was read after {****}`},
		{"nothing else changes",
			`write to analytics.items: upsert: ERROR: duplicate key value violates unique constraint "items_email_key" (SQLSTATE 23505)`,
			`write to analytics.items: upsert: ERROR: duplicate key value violates unique constraint "items_email_key" (SQLSTATE 23505)`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := RedactValues(tc.in); got != tc.want {
				t.Fatalf("RedactValues\n  in %s\n got %s\nwant %s", tc.in, got, tc.want)
			}
		})
	}
}

func TestMaskKeepsTheCount(t *testing.T) {
	if got := Mask(nil); got != nil {
		t.Fatalf("Mask(nil) = %v, want nil: no checkpoint", got)
	}
	if got := Mask([]string{}); got == nil || len(got) != 0 {
		t.Fatalf("Mask([]) = %#v, want an empty checkpoint", got)
	}
	if got := Mask([]string{"2024-01-01 00:00:00Z", "42"}); !slices.Equal(got, []string{"****", "****"}) {
		t.Fatalf("Mask = %v", got)
	}
}

func TestRedactedProgressAndEnd(t *testing.T) {
	t0 := time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)
	cp := []string{"2024-01-01 00:00:00Z", "42"}
	held := metav1.Condition{Type: etlv1.ConditionHorizonHeld, Status: metav1.ConditionFalse, Reason: etlv1.ReasonHorizonCurrent,
		Message: "the read horizon is at 2024-05-01 10:00:00Z"}
	progress := func(cp []string, at time.Time) Progress {
		return Progress{RowsRead: 10, Checkpoint: cp, CheckpointTime: at, Conditions: []metav1.Condition{held}}
	}
	steps := []struct {
		name    string
		apply   func(st *etlv1.ETLPipelineStatus) bool
		changed bool
	}{
		{"the first checkpoint is written masked",
			func(st *etlv1.ETLPipelineStatus) bool { return applyProgress(st, progress(cp, t0), true) }, true},
		{"the same checkpoint in the same second changes nothing",
			func(st *etlv1.ETLPipelineStatus) bool {
				return applyProgress(st, progress(cp, t0.Add(300*time.Millisecond)), true)
			}, false},
		{"a later checkpoint moves the time although the masked values look alike",
			func(st *etlv1.ETLPipelineStatus) bool {
				return applyProgress(st, progress([]string{"2024-01-01 00:00:09Z", "43"}, t0.Add(2*time.Second)), true)
			}, true},
		{"the end is masked too",
			func(st *etlv1.ETLPipelineStatus) bool {
				applyEnd(st, End{Phase: etlv1.PhaseFailed, Progress: progress(cp, t0.Add(3*time.Second)), Time: t0,
					Message: `source row (id=42) has a NULL cursor column "updated_at"`}, true)
				return true
			}, true},
	}
	st := withRun(etlv1.PhaseRunning, "r1")
	for _, step := range steps {
		if got := step.apply(st); got != step.changed {
			t.Fatalf("%s: changed = %v, want %v", step.name, got, step.changed)
		}
		if !slices.Equal(st.Checkpoint.Values, []string{"****", "****"}) || st.Checkpoint.Time == nil {
			t.Fatalf("%s: checkpoint %+v, want two masked values and a time", step.name, st.Checkpoint)
		}
		if msg := st.Conditions[0].Message; msg != "the read horizon is at ****" {
			t.Fatalf("%s: condition message %q", step.name, msg)
		}
	}
	if want := t0.Add(3 * time.Second); !st.Checkpoint.Time.Time.Equal(want) {
		t.Fatalf("checkpoint time %v, want %v", st.Checkpoint.Time, want)
	}
	if st.Run.Message != `source row (id=****) has a NULL cursor column "updated_at"` {
		t.Fatalf("run message %q", st.Run.Message)
	}
	if held.Message != "the read horizon is at 2024-05-01 10:00:00Z" {
		t.Fatalf("redacting changed the caller's condition: %q", held.Message)
	}
}

func TestLogReporterMasksTheCheckpoint(t *testing.T) {
	for _, redact := range []bool{false, true} {
		var buf bytes.Buffer
		l := NewLog(slog.New(slog.NewTextHandler(&buf, nil)), etlv1.TriggerCreated, RedactCheckpoint(redact))
		ctx := context.Background()
		_ = l.Progress(ctx, Progress{Checkpoint: []string{"2024-01-01", "42"}})
		_ = l.Finish(ctx, End{Phase: etlv1.PhaseFailed, Message: "source row (id=42) has a NULL key column", Progress: Progress{Checkpoint: []string{"2024-01-01", "42"}}})
		shows := strings.Contains(buf.String(), "2024-01-01") || strings.Contains(buf.String(), "id=42")
		if shows == redact {
			t.Errorf("redact %v: the log shows the values: %v\n%s", redact, shows, buf.String())
		}
	}
}
