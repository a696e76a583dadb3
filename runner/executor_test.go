package runner

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/status"
)

// topology is where the sink lives relative to the state database.
type topology struct {
	name   string
	shared bool
}

var topologies = []topology{{"sink in state database", true}, {"sink in another database", false}}

// dbsFor returns the state/source database and the sink database of a topology.
func dbsFor(t *testing.T, tp topology) (main, dst *testDB) {
	main = newTestDB(t, "main")
	if tp.shared {
		return main, main
	}
	return main, newTestDB(t, "analytics")
}

func TestRunsCopyTheSourceExactly(t *testing.T) {
	for _, tp := range topologies {
		for _, mode := range []etlv1.Mode{etlv1.ModeIncremental, etlv1.ModeFull} {
			t.Run(fmt.Sprintf("%s/%s", mode, tp.name), func(t *testing.T) {
				main, dst := dbsFor(t, tp)
				createSource(t, main, 2345)
				createTarget(t, dst, "items")
				r := &inProcess{cfg: testConfig(main, dst), env: envOf(main, dst),
					spec: specJSON(t, specOpts{mode: mode, sourceConn: "main", targetConn: dst.name, batch: 500})}

				res := r.run(t)
				requireOutcome(t, res, OutcomeIdle, configv1.ExitOK)
				if res.RowsRead != 2345 || res.RowsWritten != 2345 || res.Batches != 5 {
					t.Fatalf("first run: read %d, wrote %d in %d batches; want 2345, 2345, 5", res.RowsRead, res.RowsWritten, res.Batches)
				}
				sinkMatchesSource(t, main, dst, "items")
				if end := r.rep.lastEnd(t); end.Phase != etlv1.PhaseIdle || end.RowsWritten != 2345 {
					t.Fatalf("end report %+v, want Idle with 2345 rows written", end)
				}

				// Nothing new: an incremental run reads and writes nothing, a full run starts
				// over (its checkpoint was reset when the first run completed).
				r.runID, r.rep = "run-2", nil
				res = r.run(t)
				requireOutcome(t, res, OutcomeIdle, configv1.ExitOK)
				wantRead := int64(0)
				if mode == etlv1.ModeFull {
					wantRead = 2345
				}
				if res.RowsRead != wantRead || res.RowsWritten != wantRead {
					t.Fatalf("second run read %d and wrote %d rows, want %d", res.RowsRead, res.RowsWritten, wantRead)
				}

				// Updated and new rows flow through.
				main.exec(t, `UPDATE src SET name = 'changed', amount = amount + 1,
					updated_at = updated_at + interval '1 day' WHERE id % 100 = 0`)
				insertRows(t, main, 2346, 2500)
				r.runID, r.rep = "run-3", nil
				res = r.run(t)
				requireOutcome(t, res, OutcomeIdle, configv1.ExitOK)
				if mode == etlv1.ModeIncremental && res.RowsRead != 23+155 {
					t.Fatalf("incremental run after changes read %d rows, want %d", res.RowsRead, 23+155)
				}
				sinkMatchesSource(t, main, dst, "items")
				if mode == etlv1.ModeFull {
					if n := main.queryInt(t, `SELECT count(*) FROM etl.etl_state WHERE full_checkpoint IS NOT NULL`); n != 0 {
						t.Fatalf("a completed full run left its checkpoint behind")
					}
				}
				if n := main.queryInt(t, `SELECT count(*) FROM etl.etl_runs WHERE outcome = 'succeeded'`); n != 3 {
					t.Fatalf("etl_runs has %d succeeded runs, want 3", n)
				}
			})
		}
	}
}

func TestValuesKeepTheirTypes(t *testing.T) {
	for _, decode := range []bool{false, true} {
		name := "raw"
		if decode {
			name = "decoded"
		}
		t.Run(name, func(t *testing.T) { valuesKeepTheirTypes(t, decode) })
	}
}

// valuesKeepTheirTypes copies many types, raw (the bytes travel as Postgres sent them) or
// decoded into Go values and encoded again (the path of transforms).
func valuesKeepTheirTypes(t *testing.T, decode bool) {
	db := newTestDB(t, "main")
	db.exec(t, `CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')`)
	db.exec(t, `CREATE TABLE src (
		id int PRIMARY KEY, ts timestamptz NOT NULL, n numeric, j jsonb, tags text[], nums int[],
		u uuid, d date, iv interval, m mood, b bytea, f float8, t text)`)
	db.exec(t, `INSERT INTO src VALUES
		(1, '2024-05-01 10:00:00.123456+02', 12345678901234567890.000000001, '{"big": 12345678901234567890, "z": 1, "a": [1.50]}',
		 '{"a b", "c,d", NULL}', '{1,2,3}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2024-02-29', '1 day 02:03:04',
		 'happy', '\xdeadbeef', 1.5e300, 'ünïcode ✓'),
		(2, '2024-05-01 10:00:00.123456+02', 'NaN', 'null', '{}', NULL, NULL, 'infinity', NULL, NULL, NULL, 'NaN', NULL),
		(3, 'infinity', '-Infinity', '[]', NULL, '{}', NULL, '-infinity', '-1 mon', 'sad', '', '-0', '')`)
	db.exec(t, `CREATE SCHEMA analytics`)
	// The target spells some types differently: Postgres converts them from the source type.
	db.exec(t, `CREATE TABLE analytics.items (
		id bigint PRIMARY KEY, ts timestamptz, n numeric, j jsonb, tags text[], nums bigint[],
		u text, d date, iv interval, m text, b bytea, f float8, t varchar(20))`)
	r := &inProcess{cfg: testConfig(db), env: envOf(db), opts: Options{Decode: decode}, spec: specJSON(t, specOpts{
		mode: etlv1.ModeIncremental, sourceConn: "main", batch: 2,
		query: "SELECT * FROM src"})}
	r.spec = strings.Replace(r.spec, `"column":"updated_at"`, `"column":"id"`, 1)
	requireOutcome(t, r.run(t), OutcomeIdle, configv1.ExitOK)
	var diff int64
	err := db.conn.QueryRow(context.Background(), `
		SELECT count(*) FROM src s FULL JOIN analytics.items a ON a.id = s.id
		WHERE a.id IS NULL OR s.id IS NULL
		   OR (s.ts, s.n, s.j, s.tags, s.nums::bigint[], s.u::text, s.d, s.iv, s.m::text, s.b, s.f, s.t)
		      IS DISTINCT FROM (a.ts, a.n, a.j, a.tags, a.nums, a.u, a.d, a.iv, a.m, a.b, a.f, a.t::text)`).Scan(&diff)
	if err != nil {
		t.Fatal(err)
	}
	if diff != 0 {
		t.Fatalf("%d rows differ between source and sink", diff)
	}
	if n := db.queryInt(t, `SELECT count(*) FROM analytics.items WHERE j->>'big' = '12345678901234567890'`); n != 1 {
		t.Fatalf("a large integer inside jsonb lost precision")
	}
}

func TestBadInputFailsBeforeWriting(t *testing.T) {
	main := newTestDB(t, "main")
	createSource(t, main, 100)
	createTarget(t, main, "items")
	good := specOpts{sourceConn: "main", batch: 10, attempts: 3, backoff: time.Second}
	cases := []struct {
		name   string
		spec   func(o specOpts) string
		env    func(env map[string]string)
		class  etlv1.ErrorClass
		code   int
		retry  []time.Duration
		inText string
	}{
		{name: "malformed spec snapshot", spec: func(specOpts) string { return `{"mode": "Incremental", "source": ` },
			class: etlv1.ErrorBusiness, code: configv1.ExitBusiness, inText: "decode spec snapshot"},
		{name: "unknown field in spec", spec: func(specOpts) string { return `{"mode": "Full", "colour": "red"}` },
			class: etlv1.ErrorBusiness, code: configv1.ExitBusiness, inText: "unknown field"},
		{name: "unknown connection", spec: func(o specOpts) string { o.sourceConn = "nope"; return specJSON(t, o) },
			class: etlv1.ErrorBusiness, code: configv1.ExitBusiness, inText: `source connection "nope" is not a Postgres connection`},
		{name: "target not whitelisted", spec: func(o specOpts) string { o.target = "analytics.secret"; return specJSON(t, o) },
			class: etlv1.ErrorBusiness, code: configv1.ExitBusiness, inText: "not in the operator's whitelist"},
		{name: "missing DSN", spec: func(o specOpts) string { return specJSON(t, o) },
			env:   func(env map[string]string) { delete(env, configv1.PostgresDSNEnv("main")) },
			class: etlv1.ErrorBusiness, code: configv1.ExitBusiness, inText: "SLUICE_PG_MAIN_DSN is not set"},
		{name: "query lacks the cursor column", spec: func(o specOpts) string { o.query = "SELECT id, name FROM src"; return specJSON(t, o) },
			class: etlv1.ErrorBusiness, code: configv1.ExitBusiness, inText: `no cursor column "updated_at"`},
		{name: "query lacks the key column", spec: func(o specOpts) string { o.query = "SELECT updated_at, name FROM src"; return specJSON(t, o) },
			class: etlv1.ErrorBusiness, code: configv1.ExitBusiness, inText: `no key column "id"`},
		{name: "bad column", spec: func(o specOpts) string { o.query = "SELECT id, updated_at, bogus_col FROM src"; return specJSON(t, o) },
			class: etlv1.ErrorBusiness, code: configv1.ExitBusiness, inText: `column "bogus_col" does not exist`},
		{name: "missing target table", spec: func(o specOpts) string { o.target = "analytics.other"; return specJSON(t, o) },
			class: etlv1.ErrorBusiness, code: configv1.ExitBusiness, inText: "target table analytics.other does not exist"},
		{name: "unreachable database", spec: func(o specOpts) string { return specJSON(t, o) },
			env: func(env map[string]string) {
				env[configv1.PostgresDSNEnv("main")] = "postgres://sluice:hunter2secret@127.0.0.1:1/x?sslmode=disable&connect_timeout=2"
			},
			class: etlv1.ErrorInfra, code: configv1.ExitInfra, retry: []time.Duration{time.Second, 2 * time.Second, 4 * time.Second},
			inText: "connect to \"main\""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := envOf(main)
			if tc.env != nil {
				tc.env(env)
			}
			r := &inProcess{cfg: testConfig(main), env: env, spec: tc.spec(good)}
			res := r.run(t)
			requireOutcome(t, res, OutcomeFailed, tc.code)
			if res.ErrorClass != tc.class || !strings.Contains(res.Message, tc.inText) {
				t.Fatalf("failure %s %q, want %s containing %q", res.ErrorClass, res.Message, tc.class, tc.inText)
			}
			if strings.Contains(res.Message, "hunter2") {
				t.Fatalf("the failure message leaks a password: %q", res.Message)
			}
			if fmt.Sprint(r.sleeps) != fmt.Sprint(tc.retry) {
				t.Fatalf("retried after %v, want %v", r.sleeps, tc.retry)
			}
			end := r.rep.lastEnd(t)
			if end.Phase != etlv1.PhaseFailed || end.ErrorClass != tc.class || end.Message != res.Message {
				t.Fatalf("end report %+v does not match the result %+v", end, res)
			}
			if n := main.queryInt(t, `SELECT count(*) FROM analytics.items`); n != 0 {
				t.Fatalf("%d rows were written", n)
			}
			if n := main.queryInt(t, `SELECT count(*) FROM pg_tables WHERE schemaname = 'etl' AND tablename = 'etl_state'`); n > 0 {
				if n := main.queryInt(t, `SELECT count(*) FROM etl.etl_state`); n != 0 {
					t.Fatalf("the failed run claimed the pipeline in etl_state")
				}
			}
		})
	}
}

func TestBusinessErrorsDuringTheRunFailFast(t *testing.T) {
	cases := []struct {
		name   string
		setup  func(t *testing.T, db *testDB)
		inText string
	}{
		{name: "NULL cursor", setup: func(t *testing.T, db *testDB) {
			db.exec(t, `ALTER TABLE src ALTER COLUMN updated_at DROP NOT NULL`)
			db.exec(t, `UPDATE src SET updated_at = NULL WHERE id = 77`)
		}, inText: `source row (id=77) has a NULL cursor column updated_at`},
		{name: "value does not fit the target", setup: func(t *testing.T, db *testDB) {
			db.exec(t, `ALTER TABLE analytics.items ALTER COLUMN amount TYPE numeric(4,2)`)
		}, inText: "numeric field overflow"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			db := newTestDB(t, "main")
			createSource(t, db, 100)
			createTarget(t, db, "items")
			tc.setup(t, db)
			r := &inProcess{cfg: testConfig(db), env: envOf(db),
				spec: specJSON(t, specOpts{sourceConn: "main", batch: 10, attempts: 3, backoff: time.Second})}
			res := r.run(t)
			requireOutcome(t, res, OutcomeFailed, configv1.ExitBusiness)
			if !strings.Contains(res.Message, tc.inText) || len(r.sleeps) != 0 {
				t.Fatalf("failure %q after retries %v, want %q and no retry", res.Message, r.sleeps, tc.inText)
			}
			if got := db.queryInt(t, `SELECT count(*) FROM etl.etl_runs WHERE outcome = 'failed' AND error_class = 'Business'`); got != 1 {
				t.Fatalf("etl_runs does not record the failed run")
			}
		})
	}
}

func TestDroppedConnectionsAreRetried(t *testing.T) {
	for _, tp := range topologies {
		t.Run(tp.name, func(t *testing.T) {
			main, dst := dbsFor(t, tp)
			const rows = 40000
			createSource(t, main, rows)
			createTarget(t, dst, "items")
			r := &inProcess{cfg: testConfig(main, dst), env: envOf(main, dst),
				spec: specJSON(t, specOpts{sourceConn: "main", targetConn: dst.name, batch: 200, attempts: 3, backoff: time.Second})}
			// Terminate every runner session three times while the run moves.
			var kills atomic.Int32
			stop := make(chan struct{})
			done := make(chan struct{})
			go func() {
				defer close(done)
				next := int64(10)
				for kills.Load() < 3 {
					select {
					case <-stop:
						return
					case <-time.After(5 * time.Millisecond):
					}
					var batches int64
					if err := main.conn.QueryRow(context.Background(),
						`SELECT coalesce((SELECT batches FROM etl.etl_state), 0)`).Scan(&batches); err != nil {
						continue // the schema is not there yet
					}
					if batches < next {
						continue
					}
					dbs := []*testDB{main}
					if !tp.shared {
						dbs = append(dbs, dst)
					}
					for _, db := range dbs {
						_, _ = db.conn.Exec(context.Background(), `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
							WHERE application_name LIKE 'sluice-runner%' AND datname = current_database()`)
					}
					kills.Add(1)
					next = batches + 15
				}
			}()
			res := r.run(t)
			close(stop)
			<-done
			requireOutcome(t, res, OutcomeIdle, configv1.ExitOK)
			if kills.Load() < 1 || len(r.sleeps) < 1 {
				t.Fatalf("the test terminated the runner's sessions %d times and the runner retried %d times; want both ≥ 1",
					kills.Load(), len(r.sleeps))
			}
			for _, d := range r.sleeps {
				if d != time.Second {
					t.Fatalf("retry waited %s: the first retry after progress waits the initial backoff", d)
				}
			}
			sinkMatchesSource(t, main, dst, "items")
			if n := main.queryInt(t, `SELECT rows_read FROM etl.etl_state`); n != rows {
				t.Fatalf("committed counters say %d rows read, want %d (a batch was counted twice or lost)", n, rows)
			}
		})
	}
}

func TestPauseStopsAfterACommittedBatch(t *testing.T) {
	for _, mode := range []etlv1.Mode{etlv1.ModeIncremental, etlv1.ModeFull} {
		t.Run(string(mode), func(t *testing.T) {
			db := newTestDB(t, "main")
			createSource(t, db, 3000)
			createTarget(t, db, "items")
			r := &inProcess{cfg: testConfig(db), env: envOf(db), opts: Options{CheckInterval: time.Nanosecond},
				spec: specJSON(t, specOpts{mode: mode, sourceConn: "main", batch: 100})}
			// Checks happen before every batch: pause before the eighth.
			r.rep = &fakeReporter{signal: func(n int) status.Signal {
				if n >= 8 {
					return status.Pause
				}
				return status.Continue
			}}
			res := r.run(t)
			requireOutcome(t, res, OutcomePaused, configv1.ExitOK)
			end := r.rep.lastEnd(t)
			if end.Phase != etlv1.PhasePaused || end.Batches == 0 || end.Batches >= 30 {
				t.Fatalf("end report %+v, want Paused part way", end)
			}
			// The checkpoint is exactly the sink's content: every source row up to it, nothing after.
			col := "incremental_checkpoint"
			upTo := `(s.updated_at, s.id) <= (c.cp[1]::timestamptz, c.cp[2]::bigint)`
			if mode == etlv1.ModeFull {
				col, upTo = "full_checkpoint", `s.id <= c.cp[1]::bigint`
			}
			upToCheckpoint := db.queryInt(t, `SELECT count(*) FROM src s, (SELECT `+col+` AS cp FROM etl.etl_state) c WHERE `+upTo)
			inSink := db.queryInt(t, `SELECT count(*) FROM analytics.items`)
			if upToCheckpoint != inSink || inSink != end.RowsWritten || inSink != end.RowsRead {
				t.Fatalf("after the pause the sink has %d rows, the checkpoint covers %d, the report says %d read / %d written",
					inSink, upToCheckpoint, end.RowsRead, end.RowsWritten)
			}
			if n := db.queryInt(t, `SELECT count(*) FROM etl.etl_runs WHERE outcome = 'paused'`); n != 1 {
				t.Fatalf("etl_runs does not record the pause")
			}

			// Resuming continues after the checkpoint and completes the run.
			r.runID = "run-2"
			r.rep = &fakeReporter{trigger: etlv1.TriggerResume}
			res = r.run(t)
			requireOutcome(t, res, OutcomeIdle, configv1.ExitOK)
			if res.RowsRead != 3000-inSink {
				t.Fatalf("the resumed run read %d rows, want the %d after the checkpoint", res.RowsRead, 3000-inSink)
			}
			sinkMatchesSource(t, db, db, "items")
		})
	}
}

func TestDuplicateRunnerWaitsThenStopsWithoutWriting(t *testing.T) {
	db := newTestDB(t, "main")
	createSource(t, db, 100)
	createTarget(t, db, "items")
	// Another session holds the pipeline's lock, as a live runner would.
	db.exec(t, `SELECT pg_advisory_lock(hashtextextended('sluice/pipeline/tenant/items', 0))`)
	r := &inProcess{cfg: testConfig(db), env: envOf(db), opts: Options{LockWait: 500 * time.Millisecond},
		spec: specJSON(t, specOpts{sourceConn: "main", batch: 10})}
	res := r.run(t)
	requireOutcome(t, res, OutcomeFenced, configv1.ExitFenced)
	if len(r.rep.ends) != 0 {
		t.Fatalf("a runner that never owned the run reported %+v", r.rep.ends)
	}
	if n := db.queryInt(t, `SELECT count(*) FROM etl.etl_state`); n != 0 {
		t.Fatalf("the fenced runner claimed the pipeline")
	}
	if n := db.queryInt(t, `SELECT count(*) FROM analytics.items`); n != 0 {
		t.Fatalf("the fenced runner wrote %d rows", n)
	}
}

func TestStaleEpochStopsTheRunner(t *testing.T) {
	for _, tp := range topologies {
		t.Run(tp.name, func(t *testing.T) {
			main, dst := dbsFor(t, tp)
			createSource(t, main, 3000)
			createTarget(t, dst, "items")
			r := &inProcess{cfg: testConfig(main, dst), env: envOf(main, dst), opts: Options{CheckInterval: time.Nanosecond},
				spec: specJSON(t, specOpts{sourceConn: "main", targetConn: dst.name, batch: 100})}
			// A zombie scenario: once the runner is under way, another claim bumps the epoch.
			r.rep = &fakeReporter{signal: func(n int) status.Signal {
				if n == 5 {
					main.exec(t, `UPDATE etl.etl_state SET epoch = epoch + 1`)
				}
				return status.Continue
			}}
			res := r.run(t)
			requireOutcome(t, res, OutcomeFenced, configv1.ExitFenced)
			if len(r.rep.ends) != 0 {
				t.Fatalf("a fenced runner reported its end: %+v", r.rep.ends)
			}
			var cp int64
			if err := main.conn.QueryRow(context.Background(), `SELECT incremental_checkpoint[2]::bigint FROM etl.etl_state`).Scan(&cp); err != nil {
				t.Fatal(err)
			}
			inSink := dst.queryInt(t, `SELECT count(*) FROM analytics.items`)
			committed := main.queryInt(t, `SELECT count(*) FROM src WHERE id <= $1`, cp)
			// In the state database the fenced batch rolled back with its checkpoint; in another
			// database the one batch written before the checkpoint failed stays (it is replayed).
			want := committed
			if !tp.shared {
				want = committed + 100
			}
			if inSink != want {
				t.Fatalf("sink has %d rows, checkpoint covers %d, want %d", inSink, committed, want)
			}
		})
	}
}

func TestCheckKeys(t *testing.T) {
	cases := []struct {
		name string
		cols []string
		rows [][]any
		err  string
	}{
		{name: "keys present", cols: []string{"id", "v"}, rows: [][]any{{1, "a"}, {2, nil}}},
		{name: "key column missing", cols: []string{"v"}, rows: [][]any{{"a"}}, err: `no key column "id"`},
		{name: "NULL key", cols: []string{"id", "v"}, rows: [][]any{{1, "a"}, {nil, "b"}}, err: `row 2 of the batch reaching the sink has a NULL key column "id"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := batchOf(tc.cols, tc.rows)
			err := checkKeys(b, []string{"id"})
			if (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("checkKeys = %v, want %q", err, tc.err)
			}
		})
	}
}
