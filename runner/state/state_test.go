package state

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/failure"
	"github.com/sluice-dev/sluice/test/testenv"
)

func connectN(t *testing.T, n int) []*pgx.Conn {
	t.Helper()
	dsn := testenv.NewPostgresDB(t)
	conns := make([]*pgx.Conn, n)
	for i := range conns {
		c, err := pgx.Connect(context.Background(), dsn)
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		t.Cleanup(func() { _ = c.Close(context.Background()) })
		conns[i] = c
	}
	return conns
}

func TestMigrateIsIdempotentAndConcurrent(t *testing.T) {
	conns := connectN(t, 3)
	errs := make(chan error, len(conns))
	for _, c := range conns {
		go func() { errs <- Migrate(context.Background(), c) }()
	}
	for range conns {
		if err := <-errs; err != nil {
			t.Fatalf("Migrate: %v", err)
		}
	}
	if err := Migrate(context.Background(), conns[0]); err != nil {
		t.Fatalf("Migrate again: %v", err)
	}
	var versions int
	if err := conns[0].QueryRow(context.Background(), `SELECT count(*) FROM etl.schema_migrations`).Scan(&versions); err != nil || versions != len(migrations) {
		t.Fatalf("%d versions recorded (%v), want %d", versions, err, len(migrations))
	}
}

func TestClaimFencesEarlierRunners(t *testing.T) {
	conns := connectN(t, 1)
	ctx := context.Background()
	if err := Migrate(ctx, conns[0]); err != nil {
		t.Fatal(err)
	}
	p := Pipeline{Namespace: "ns", Name: "p"}
	s := New(conns[0], p)
	run := Run{ID: "r1", Generation: 1, Mode: etlv1.ModeIncremental}

	first, err := s.Claim(ctx, run)
	if err != nil || first.Epoch != 1 || first.SameRun || first.Incremental != nil {
		t.Fatalf("first claim %+v, %v", first, err)
	}
	pos := &Position{Columns: []string{"c", "id"}, Values: []string{"2024-01-01 00:00:00Z", "10"}}
	if err := s.Advance(ctx, first.Epoch, Advance{Mode: etlv1.ModeIncremental, RunID: "r1", Position: pos, RowsRead: 10, RowsWritten: 10, Batches: 1}); err != nil {
		t.Fatalf("Advance: %v", err)
	}

	// A replacement pod of the same run: new epoch, counters and checkpoint carry over.
	second, err := s.Claim(ctx, run)
	if err != nil || second.Epoch != 2 || !second.SameRun || second.RowsRead != 10 ||
		second.Incremental == nil || !slices.Equal(second.Incremental.Values, pos.Values) {
		t.Fatalf("second claim %+v, %v", second, err)
	}
	// The first runner is fenced: it can neither advance nor finish.
	err = s.Advance(ctx, first.Epoch, Advance{Mode: etlv1.ModeIncremental, RunID: "r1", Position: pos, RowsRead: 1, Batches: 1})
	if !failure.IsFenced(err) {
		t.Fatalf("a stale Advance = %v, want fenced", err)
	}
	if _, err := s.Load(ctx, first.Epoch); !failure.IsFenced(err) {
		t.Fatalf("a stale Load = %v, want fenced", err)
	}
	if err := s.Finish(ctx, first.Epoch, "r1", End{Outcome: OutcomeSucceeded}); !failure.IsFenced(err) {
		t.Fatalf("a stale Finish = %v, want fenced", err)
	}

	// A new run resets the counters, keeps the incremental position and abandons the old run.
	third, err := s.Claim(ctx, Run{ID: "r2", Generation: 2, Mode: etlv1.ModeIncremental})
	if err != nil || third.Epoch != 3 || third.SameRun || third.RowsRead != 0 || third.Incremental == nil {
		t.Fatalf("third claim %+v, %v", third, err)
	}
	var outcome string
	if err := conns[0].QueryRow(ctx, `SELECT outcome FROM etl.etl_runs WHERE run_id = 'r1'`).Scan(&outcome); err != nil || outcome != OutcomeAbandoned {
		t.Fatalf("run r1 is %q (%v), want abandoned", outcome, err)
	}
	if err := s.Finish(ctx, third.Epoch, "r2", End{Outcome: OutcomeSucceeded}); err != nil {
		t.Fatalf("Finish: %v", err)
	}
}

func TestFullCheckpointBelongsToItsRun(t *testing.T) {
	conns := connectN(t, 1)
	ctx := context.Background()
	if err := Migrate(ctx, conns[0]); err != nil {
		t.Fatal(err)
	}
	s := New(conns[0], Pipeline{Namespace: "ns", Name: "p"})
	c, err := s.Claim(ctx, Run{ID: "r1", Generation: 4, Mode: etlv1.ModeFull})
	if err != nil {
		t.Fatal(err)
	}
	pos := &Position{Columns: []string{"id"}, Values: []string{"500"}}
	if err := s.Advance(ctx, c.Epoch, Advance{Mode: etlv1.ModeFull, RunID: "r1", Generation: 4, Position: pos, RowsRead: 500, Batches: 1}); err != nil {
		t.Fatal(err)
	}
	c, err = s.Claim(ctx, Run{ID: "r2", Generation: 4, Mode: etlv1.ModeFull})
	if err != nil || c.Full == nil || c.Full.RunID != "r1" || c.Full.Generation != 4 || c.Incremental != nil {
		t.Fatalf("claim after a full run's checkpoint: %+v, %v", c, err)
	}
	if err := s.Finish(ctx, c.Epoch, "r2", End{Outcome: OutcomeSucceeded, ResetFull: true}); err != nil {
		t.Fatal(err)
	}
	if c, err = s.Load(ctx, c.Epoch); err != nil || c.Full != nil {
		t.Fatalf("a completed full run left its checkpoint: %+v, %v", c.Full, err)
	}
}

func TestLockAdmitsOneLiveRunner(t *testing.T) {
	conns := connectN(t, 3)
	ctx := context.Background()
	p := Pipeline{Namespace: "ns", Name: "p"}
	if err := New(conns[0], p).Lock(ctx, time.Second, nil); err != nil {
		t.Fatalf("first Lock: %v", err)
	}
	start := time.Now()
	if err := New(conns[1], p).Lock(ctx, 300*time.Millisecond, nil); !failure.IsFenced(err) {
		t.Fatalf("second Lock = %v, want fenced", err)
	}
	if time.Since(start) < 300*time.Millisecond {
		t.Fatalf("the second runner gave up before its wait")
	}
	// Another pipeline is not blocked.
	if err := New(conns[1], Pipeline{Namespace: "ns", Name: "q"}).Lock(ctx, time.Second, nil); err != nil {
		t.Fatalf("Lock of another pipeline: %v", err)
	}
	// A runner whose earlier session still holds the lock takes it back.
	if err := New(conns[2], p).Lock(ctx, 5*time.Second, []uint32{conns[0].PgConn().PID()}); err != nil {
		t.Fatalf("Lock over an own stale session: %v", err)
	}
}

func TestArrayLiteral(t *testing.T) {
	cases := []struct {
		in   []string
		want string
	}{
		{[]string{"a", "b"}, `{"a","b"}`},
		{[]string{`say "hi"`, `back\slash`, "comma,brace}", ""}, `{"say \"hi\"","back\\slash","comma,brace}",""}`},
		{nil, `{}`},
	}
	for _, tc := range cases {
		if got := arrayLiteral(tc.in); got != tc.want {
			t.Errorf("arrayLiteral(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestAdvanceStatementRoundTrips(t *testing.T) {
	conns := connectN(t, 1)
	ctx := context.Background()
	if err := Migrate(ctx, conns[0]); err != nil {
		t.Fatal(err)
	}
	s := New(conns[0], Pipeline{Namespace: "ns", Name: "p"})
	c, err := s.Claim(ctx, Run{ID: "r1", Mode: etlv1.ModeIncremental})
	if err != nil {
		t.Fatal(err)
	}
	vals := []string{`2024-01-01 00:00:00+00`, `a "quoted", {braced} \ value`}
	pos := &Position{Columns: []string{"c", "k"}, Values: vals}
	if err := s.Advance(ctx, c.Epoch, Advance{Mode: etlv1.ModeIncremental, RunID: "r1", Position: pos, RowsRead: 2, RowsWritten: 2, Batches: 1}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load(ctx, c.Epoch)
	if err != nil || !slices.Equal(got.Incremental.Values, vals) || got.RowsRead != 2 {
		t.Fatalf("Load = %+v, %v; want the values back exactly", got.Incremental, err)
	}

	// A batch that expects another checkpoint than the committed one is refused.
	next := Advance{Mode: etlv1.ModeIncremental, RunID: "r1", Position: &Position{Columns: []string{"c", "k"}, Values: []string{"x", "y"}}, Batches: 1}
	exec := func(st Statement) error {
		return conns[0].PgConn().ExecParams(ctx, st.SQL, st.Params, nil, nil, nil).Read().Err
	}
	if err := exec(s.AdvanceStatement(c.Epoch, next, []string{"not", "this"})); !failure.IsFenced(err) {
		t.Fatalf("advance after a checkpoint that is not the committed one = %v, want refused", err)
	}
	if err := exec(s.AdvanceStatement(c.Epoch, next, vals)); err != nil {
		t.Fatalf("advance after the committed checkpoint: %v", err)
	}
	if err := exec(s.AdvanceStatement(c.Epoch-1, next, nil)); !failure.IsFenced(err) {
		t.Fatalf("advance with a stale epoch = %v, want fenced", err)
	}
}
