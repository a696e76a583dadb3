package state

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

func TestDecideReset(t *testing.T) {
	str := func(s string) *string { return &s }
	cases := []struct {
		name           string
		found          bool
		uid, stream    *string
		newUID, newStr string
		want           string
	}{
		{"no state yet", false, nil, nil, "u1", "s1", ""},
		{"state from before identities is adopted", true, nil, nil, "u1", "s1", ""},
		{"same pipeline, same stream", true, str("u1"), str("s1"), "u1", "s1", ""},
		{"a pipeline re-created under the same name", true, str("u1"), str("s1"), "u2", "s1", etlv1.ReasonPipelineRecreated},
		{"re-created and changed: recreated wins", true, str("u1"), str("s1"), "u2", "s2", etlv1.ReasonPipelineRecreated},
		{"the stream changed", true, str("u1"), str("s1"), "u1", "s2", etlv1.ReasonStreamChanged},
		{"a run by hand has no uid: only the stream counts", true, str("u1"), str("s1"), "", "s1", ""},
		{"a run by hand on another stream", true, str(""), str("s1"), "", "s2", etlv1.ReasonStreamChanged},
	}
	for _, tc := range cases {
		got := decideReset(tc.found, tc.uid, tc.stream, tc.newUID, tc.newStr)
		reason := ""
		if got != nil {
			reason = got.Reason
		}
		if reason != tc.want {
			t.Errorf("%s: reset %q, want %q", tc.name, reason, tc.want)
		}
	}
}

// TestClaimResetsAnotherIdentity: the checkpoint and run log of an earlier pipeline of the same
// name do not survive into a new one, a stream change clears the checkpoint, and a Full
// checkpoint is continued only by a run of the same reader and transforms.
func TestClaimResetsAnotherIdentity(t *testing.T) {
	conn := connectN(t, 1)[0]
	ctx := context.Background()
	if err := Migrate(ctx, conn); err != nil {
		t.Fatal(err)
	}
	claim := func(uid, runID string, mode etlv1.Mode, stream, full string) Claim {
		t.Helper()
		c, err := New(conn, Pipeline{Namespace: "ns", Name: "p", UID: uid}).Claim(ctx,
			Run{ID: runID, Generation: 1, Mode: mode, Stream: stream, FullStream: full})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	advance := func(uid string, epoch int64, mode etlv1.Mode, runID string, v string) {
		t.Helper()
		err := New(conn, Pipeline{Namespace: "ns", Name: "p", UID: uid}).Advance(ctx, epoch, Advance{
			Mode: mode, RunID: runID, Generation: 1, Position: &Position{Columns: []string{"id"}, Values: []string{v}},
			RowsRead: 1, RowsWritten: 1, Batches: 1})
		if err != nil {
			t.Fatal(err)
		}
	}
	runs := func() int64 {
		var n int64
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM etl.etl_runs WHERE namespace = 'ns' AND name = 'p'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	c := claim("uid-1", "r1", etlv1.ModeIncremental, "s1", "f1")
	advance("uid-1", c.Epoch, etlv1.ModeIncremental, "r1", "10")
	if c = claim("uid-1", "r2", etlv1.ModeIncremental, "s1", "f1"); c.Reset != nil || c.Incremental == nil {
		t.Fatalf("same identity: reset %+v, checkpoint %+v; want the checkpoint continued", c.Reset, c.Incremental)
	}
	if c = claim("uid-1", "r3", etlv1.ModeIncremental, "s2", "f1"); c.Reset == nil || c.Reset.Reason != etlv1.ReasonStreamChanged || c.Incremental != nil {
		t.Fatalf("stream change: reset %+v, checkpoint %+v; want an empty checkpoint", c.Reset, c.Incremental)
	}
	advance("uid-1", c.Epoch, etlv1.ModeIncremental, "r3", "20")
	if runs() != 3 {
		t.Fatalf("%d runs recorded, want 3", runs())
	}
	c = claim("uid-2", "r4", etlv1.ModeIncremental, "s2", "f1")
	if c.Reset == nil || c.Reset.Reason != etlv1.ReasonPipelineRecreated || c.Incremental != nil || c.SameRun {
		t.Fatalf("re-created pipeline: reset %+v, checkpoint %+v; want an empty checkpoint", c.Reset, c.Incremental)
	}
	if runs() != 1 {
		t.Fatalf("%d runs recorded after the re-creation, want only the new pipeline's", runs())
	}

	// A Full checkpoint: a resume of the same reader continues it, another reader does not.
	c = claim("uid-2", "f-1", etlv1.ModeFull, "s2", "full-a")
	advance("uid-2", c.Epoch, etlv1.ModeFull, "f-1", "500")
	if c = claim("uid-2", "f-2", etlv1.ModeFull, "s2", "full-a"); c.Full == nil || c.Full.Values[0] != "500" {
		t.Fatalf("same full stream: %+v, want the checkpoint kept", c.Full)
	}
	if c = claim("uid-2", "f-3", etlv1.ModeFull, "s2", "full-b"); c.Full != nil {
		t.Fatalf("changed reader: %+v, want no full checkpoint", c.Full)
	}
}

func TestClaimKeepsTheRunHistoryBounded(t *testing.T) {
	conn := connectN(t, 1)[0]
	ctx := context.Background()
	if err := Migrate(ctx, conn); err != nil {
		t.Fatal(err)
	}
	s := New(conn, Pipeline{Namespace: "ns", Name: "p", UID: "u"})
	for i := range 7 {
		if _, err := s.Claim(ctx, Run{ID: fmt.Sprintf("r%d", i), Mode: etlv1.ModeIncremental, Stream: "s", History: 3}); err != nil {
			t.Fatal(err)
		}
	}
	rows, err := conn.Query(ctx, `SELECT run_id FROM etl.etl_runs ORDER BY started_at, run_id`)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(ids, ",") != "r4,r5,r6" {
		t.Fatalf("etl_runs keeps %v, want the 3 newest", ids)
	}
}
