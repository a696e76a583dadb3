package runner

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/source/cdc"
	"github.com/sluice-dev/sluice/runner/state"
	"github.com/sluice-dev/sluice/runner/status"
)

// cdcSpec is the spec of a CDC pipeline on table src; bounded gives it a schedule (a run
// ends at the WAL position current at its start).
func cdcSpec(t *testing.T, target, targetConn string, batch int32, bounded bool, edit func(map[string]any)) string {
	t.Helper()
	spec := map[string]any{
		"mode": etlv1.ModeCDC,
		"source": map[string]any{
			"connection": "main", "table": "src",
			"cursor": map[string]any{"keyColumns": []string{"id"}},
		},
		"target":    map[string]any{"name": target, "connection": targetConn},
		"batchSize": batch,
		"retry":     map[string]any{"attempts": 3, "initialBackoff": "10ms"},
	}
	if bounded {
		spec["schedule"] = "@every 1h"
	}
	if edit != nil {
		edit(spec)
	}
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatalf("marshal spec: %v", err)
	}
	return string(b)
}

// dropSlotsAtCleanup drops the test database's replication slots before the database goes
// (a database with a slot cannot be dropped).
func dropSlotsAtCleanup(t *testing.T, db *testDB) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for range 50 {
			_, err := db.conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
				WHERE database = current_database() AND NOT active`)
			var left int64
			if err == nil {
				_ = db.conn.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE database = current_database()`).Scan(&left)
				if left == 0 {
					return
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
}

// slotOf returns the pipeline's slot as the source shows it.
func slotOf(t *testing.T, db *testDB, cfg *configv1.OperatorConfig, env map[string]string, p state.Pipeline, spec string) (string, cdc.Slot) {
	t.Helper()
	pl, err := makePlan(cfg, spec, "1", func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatalf("plan: %v", err)
	}
	slot, _ := cdc.Names(p.Namespace, p.Name, p.UID, pl.stream)
	info, err := cdc.InspectSlot(context.Background(), db.conn, slot)
	if err != nil {
		t.Fatalf("inspect slot: %v", err)
	}
	return slot, info
}

// checkpointLSNOf reads the pipeline's committed checkpoint as an LSN (0: none, or a copy).
func checkpointLSNOf(t *testing.T, db *testDB, p state.Pipeline) pglogrepl.LSN {
	t.Helper()
	var cols, vals []string
	err := db.conn.QueryRow(context.Background(), `SELECT coalesce(incremental_columns, '{}'), coalesce(incremental_checkpoint, '{}')
		FROM etl.etl_state WHERE namespace = $1 AND name = $2`, p.Namespace, p.Name).Scan(&cols, &vals)
	if err != nil {
		return 0
	}
	if len(cols) == 1 && cols[0] == lsnColumn {
		lsn, _ := pglogrepl.ParseLSN(vals[0])
		return lsn
	}
	return 0
}

// The tests of this file give each pipeline a UID of its own: slot names are the server's, not
// a database's, and parallel tests share the server.

func TestCDCCopiesThenStreamsInsertsUpdatesAndDeletes(t *testing.T) {
	for _, tp := range topologies {
		t.Run(tp.name, func(t *testing.T) {
			main, dst := dbsFor(t, tp)
			dropSlotsAtCleanup(t, main)
			createSource(t, main, 2345)
			createTarget(t, dst, "items")
			spec := cdcSpec(t, "analytics.items", dst.name, 500, true, nil)
			r := &inProcess{cfg: testConfig(main, dst), env: envOf(main, dst), spec: spec,
				pipeline: state.Pipeline{Namespace: "tenant", Name: "items", UID: "uid-1"}}

			res := r.run(t)
			requireOutcome(t, res, OutcomeIdle, configv1.ExitOK)
			if res.RowsRead != 2345 {
				t.Fatalf("the copy read %d rows, want 2345", res.RowsRead)
			}
			sinkMatchesSource(t, main, dst, "items")

			// Changes after the copy: inserts, updates (one changes a key), deletes, and a
			// transaction that inserts and deletes the same row.
			main.exec(t, `INSERT INTO src SELECT g, now(), 'new ' || g, g, '{}' FROM generate_series(3000, 3099) g`)
			main.exec(t, `UPDATE src SET name = 'changed', amount = amount + 1 WHERE id % 7 = 0`)
			main.exec(t, `DELETE FROM src WHERE id % 11 = 0`)
			main.exec(t, `UPDATE src SET id = 100000 WHERE id = 1`)
			main.exec(t, `BEGIN; INSERT INTO src VALUES (5000, now(), 'gone', 1, '{}'); DELETE FROM src WHERE id = 5000; COMMIT`)
			r.runID, r.rep = "run-2", nil
			res = r.run(t)
			requireOutcome(t, res, OutcomeIdle, configv1.ExitOK)
			sinkMatchesSource(t, main, dst, "items")
			if res.RowsRead == 0 || res.RowsRead >= 2345 {
				t.Fatalf("the second run read %d changes, want the changes only", res.RowsRead)
			}
			end := r.rep.lastEnd(t)
			if end.Replication == nil || end.Replication.Phase != etlv1.ReplicationStreaming || end.Replication.ConfirmedLSN == "" {
				t.Fatalf("end report's replication %+v, want Streaming with a confirmed LSN", end.Replication)
			}
			// The slot is told only what the sink committed.
			slot, info := slotOf(t, main, r.cfg, r.env, r.pipeline, spec)
			if cp := checkpointLSNOf(t, main, r.pipeline); !info.Exists || info.Confirmed > cp || cp == 0 {
				t.Fatalf("slot %s %+v: confirmed %s, checkpoint %s", slot, info, info.Confirmed, cp)
			}

			// Nothing new: a run reads nothing.
			r.runID, r.rep = "run-3", nil
			res = r.run(t)
			requireOutcome(t, res, OutcomeIdle, configv1.ExitOK)
			if res.RowsRead != 0 {
				t.Fatalf("a run without changes read %d", res.RowsRead)
			}
		})
	}
}

func TestCDCRefusesWhatItCannotStream(t *testing.T) {
	main := newTestDB(t, "main")
	dropSlotsAtCleanup(t, main)
	main.exec(t, `CREATE TABLE src (id bigint, name text)`)
	createTarget(t, main, "items")
	r := &inProcess{cfg: testConfig(main), env: envOf(main), spec: cdcSpec(t, "analytics.items", "", 100, true, nil),
		pipeline: state.Pipeline{Namespace: "tenant", Name: "items", UID: "uid-1"}}
	res := r.run(t)
	requireOutcome(t, res, OutcomeFailed, configv1.ExitBusiness)
	if !strings.Contains(res.Message, "has no primary key") {
		t.Fatalf("message %q does not say the table lacks a primary key", res.Message)
	}
	if n := main.queryInt(t, `SELECT count(*) FROM pg_replication_slots WHERE database = current_database()`); n != 0 {
		t.Fatalf("a refused pipeline left %d slots", n)
	}

	// A role without REPLICATION.
	main.exec(t, `ALTER TABLE src ADD PRIMARY KEY (id)`)
	role := fmt.Sprintf("noreplication_%d", time.Now().UnixNano())
	main.exec(t, `CREATE ROLE `+role+` LOGIN PASSWORD 'pw'`)
	t.Cleanup(func() { _, _ = main.conn.Exec(context.Background(), `DROP OWNED BY `+role+`; DROP ROLE `+role) })
	main.exec(t, `GRANT SELECT ON src TO `+role)
	dsn := strings.Replace(main.dsn, "postgres@", role+":pw@", 1)
	r.env = map[string]string{configv1.PostgresDSNEnv("main"): main.dsn}
	r.cfg = testConfig(main, &testDB{name: "limited", dsn: dsn})
	r.env[configv1.PostgresDSNEnv("limited")] = dsn
	r.spec = cdcSpec(t, "analytics.items", "main", 100, true, func(s map[string]any) {
		s["source"].(map[string]any)["connection"] = "limited"
	})
	r.runID, r.rep = "run-2", nil
	res = r.run(t)
	requireOutcome(t, res, OutcomeFailed, configv1.ExitBusiness)
	for _, want := range []string{"may not replicate", "does not own table public.src"} {
		if !strings.Contains(res.Message, want) {
			t.Fatalf("message %q does not say %q", res.Message, want)
		}
	}

	// TRUNCATE is not applied: the run fails naming the table, after what came before it.
	r.cfg, r.env, r.runID, r.rep = testConfig(main), envOf(main), "run-3", nil
	r.spec = cdcSpec(t, "analytics.items", "", 100, true, nil)
	main.exec(t, `INSERT INTO src VALUES (1, 'a'), (2, 'b')`)
	r.cfg.AllowedTargets.PostgresTables = append(r.cfg.AllowedTargets.PostgresTables, "analytics.items")
	main.exec(t, `DROP TABLE analytics.items; CREATE TABLE analytics.items (id bigint PRIMARY KEY, name text)`)
	requireOutcome(t, r.run(t), OutcomeIdle, configv1.ExitOK)
	main.exec(t, `INSERT INTO src VALUES (3, 'c')`)
	main.exec(t, `TRUNCATE src`)
	r.runID, r.rep = "run-4", nil
	res = r.run(t)
	requireOutcome(t, res, OutcomeFailed, configv1.ExitBusiness)
	if !strings.Contains(res.Message, "public.src was truncated") {
		t.Fatalf("message %q does not name the truncate", res.Message)
	}
	if n := main.queryInt(t, `SELECT count(*) FROM analytics.items`); n != 3 {
		t.Fatalf("the sink holds %d rows, want the 3 committed before the truncate", n)
	}
}

// cdcWriters runs writers that insert, update (some of them the key) and delete rows of src
// in transactions of several statements, some of them held open, until ctx ends. It returns
// the number of transactions committed once they have stopped.
func cdcWriters(ctx context.Context, t *testing.T, db *testDB, writers int) func() int64 {
	t.Helper()
	var wg sync.WaitGroup
	var committed atomic.Int64
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := pgx.Connect(context.Background(), db.dsn)
			if err != nil {
				t.Errorf("writer %d: %v", w, err)
				return
			}
			defer func() { _ = conn.Close(context.Background()) }()
			rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			for n := 0; ctx.Err() == nil; n++ {
				tx, err := conn.Begin(context.Background())
				if err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
				for range 1 + rng.IntN(20) {
					id := 1 + rng.IntN(6000)
					var stmt string
					switch rng.IntN(5) {
					case 0, 1:
						stmt = `UPDATE src SET name = 'w' || $1::text, amount = amount + 1, updated_at = now() WHERE id = $1`
					case 2:
						stmt = `INSERT INTO src VALUES ($1, now(), 'ins', 1, '{}') ON CONFLICT (id) DO UPDATE SET name = 'reins'`
					case 3:
						stmt = `DELETE FROM src WHERE id = $1`
					default:
						stmt = `UPDATE src SET id = id + 6000 WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM src WHERE id = $1 + 6000)`
					}
					if _, err := tx.Exec(context.Background(), stmt, id); err != nil {
						t.Errorf("writer %d: %v", w, err)
						_ = tx.Rollback(context.Background())
						return
					}
				}
				if n%7 == 0 { // a transaction held open while others commit around it
					time.Sleep(time.Duration(50+rng.IntN(400)) * time.Millisecond)
				}
				if err := tx.Commit(context.Background()); err != nil {
					continue // a deadlock or a serialization failure: the writer goes on
				}
				committed.Add(1)
			}
		}()
	}
	return func() int64 { wg.Wait(); return committed.Load() }
}

func TestCDCConvergesUnderConcurrentWriters(t *testing.T) {
	for _, tp := range topologies {
		t.Run(tp.name, func(t *testing.T) {
			main, dst := dbsFor(t, tp)
			dropSlotsAtCleanup(t, main)
			createSource(t, main, 5000)
			createTarget(t, dst, "items")
			spec := cdcSpec(t, "analytics.items", dst.name, 200, true, nil)
			r := &inProcess{cfg: testConfig(main, dst), env: envOf(main, dst), spec: spec,
				pipeline: state.Pipeline{Namespace: "tenant", Name: "items", UID: "uid-1"}}
			ctx, stop := context.WithTimeout(context.Background(), 8*time.Second)
			defer stop()
			wait := cdcWriters(ctx, t, main, 4)
			// Runs one after another while the writers write: the first copies the table
			// under them, the later ones stream.
			runs := 0
			for ctx.Err() == nil {
				r.runID, r.rep = fmt.Sprintf("run-%d", runs), nil
				requireOutcome(t, r.run(t), OutcomeIdle, configv1.ExitOK)
				runs++
				_, info := slotOf(t, main, r.cfg, r.env, r.pipeline, spec)
				if cp := checkpointLSNOf(t, main, r.pipeline); info.Confirmed > cp && cp != 0 {
					t.Fatalf("the slot confirmed %s, past the committed checkpoint %s", info.Confirmed, cp)
				}
			}
			txns := wait()
			r.runID, r.rep = "run-final", nil
			requireOutcome(t, r.run(t), OutcomeIdle, configv1.ExitOK)
			t.Logf("%d runs under %d writer transactions", runs, txns)
			if txns < 50 || runs < 2 {
				t.Fatalf("only %d transactions and %d runs: the test exercised too little", txns, runs)
			}
			sinkMatchesSource(t, main, dst, "items")
		})
	}
}

// A continuous CDC run on a table nobody writes commits nothing, yet it keeps reporting its
// look at the slot: that is what tells the manager's progress deadline it is alive.
func TestIdleCDCStreamKeepsReportingItsSlot(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("streams an idle table for longer than a slot inspection interval")
	}
	main := newTestDB(t, "main")
	dropSlotsAtCleanup(t, main)
	createSource(t, main, 100)
	createTarget(t, main, "items")
	// A scheduled run copies the table; the continuous run after it has nothing to apply.
	r := &inProcess{cfg: testConfig(main), env: envOf(main), spec: cdcSpec(t, "analytics.items", "", 100, true, nil),
		pipeline: state.Pipeline{Namespace: "tenant", Name: "items", UID: "uid-idle"}}
	requireOutcome(t, r.run(t), OutcomeIdle, configv1.ExitOK)
	r.spec, r.runID = cdcSpec(t, "analytics.items", "", 100, false, nil), "run-2"
	// Paused once two reports carry different looks at the slot, or after a minute.
	start := time.Now()
	rep := &fakeReporter{}
	rep.signal = func(int) status.Signal { // called with rep.mu held
		first, last := slotLooks(rep.progress)
		if (!first.IsZero() && last.After(first)) || time.Since(start) > time.Minute {
			return status.Pause
		}
		return status.Continue
	}
	r.rep = rep
	requireOutcome(t, r.run(t), OutcomePaused, configv1.ExitOK)
	first, last := slotLooks(r.rep.progress)
	if first.IsZero() || last.Sub(first) < cdcInspectEvery-time.Second {
		t.Fatalf("the idle stream reported slot looks from %v to %v, want them spanning an inspection interval (%d reports)",
			first, last, len(r.rep.progress))
	}
}

// An earlier runner whose connection is still open (its node went away, say) keeps streaming
// the slot: the runner that claimed the pipeline ends that walsender and streams.
func TestCDCTakesTheSlotFromAnEarlierRunner(t *testing.T) {
	t.Parallel()
	main := newTestDB(t, "main")
	dropSlotsAtCleanup(t, main)
	createSource(t, main, 300)
	createTarget(t, main, "items")
	spec := cdcSpec(t, "analytics.items", "", 100, true, nil)
	r := &inProcess{cfg: testConfig(main), env: envOf(main), spec: spec,
		pipeline: state.Pipeline{Namespace: "tenant", Name: "items", UID: "uid-takeover"}}
	requireOutcome(t, r.run(t), OutcomeIdle, configv1.ExitOK)

	holdSlot(t, main, r, spec)
	main.exec(t, `INSERT INTO src SELECT g, now(), 'new', 1, '{}' FROM generate_series(1000, 1099) g`)
	r.runID, r.rep = "run-2", nil
	requireOutcome(t, r.run(t), OutcomeIdle, configv1.ExitOK)
	sinkMatchesSource(t, main, main, "items")
}

// holdSlot streams the pipeline's slot from a connection of its own, as an earlier runner
// whose connection is still open would, until the test ends. It returns the slot and the
// publication.
func holdSlot(t *testing.T, db *testDB, r *inProcess, spec string) (slot, publication string) {
	t.Helper()
	slot, _ = slotOf(t, db, r.cfg, r.env, r.pipeline, spec)
	publication = publicationOf(t, db)
	ctx := context.Background()
	held, err := cdc.ConnectReplication(ctx, db.dsn, "an-earlier-runner")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = held.Close(ctx) })
	if err := pglogrepl.StartReplication(ctx, held, slot, checkpointLSNOf(t, db, r.pipeline),
		pglogrepl.StartReplicationOptions{PluginArgs: []string{"proto_version '1'", "publication_names '" + publication + "'"}}); err != nil {
		t.Fatalf("start the earlier runner's stream: %v", err)
	}
	if n := db.queryInt(t, `SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 AND active`, slot); n != 1 {
		t.Fatalf("the earlier runner does not hold the slot")
	}
	return slot, publication
}

// slotLooks returns the first and the last look at the slot that progress reports carry
// while streaming.
func slotLooks(reports []status.Progress) (first, last time.Time) {
	for _, p := range reports {
		if rs := p.Replication; rs != nil && rs.Phase == etlv1.ReplicationStreaming && rs.ObservedTime != nil {
			if first.IsZero() {
				first = rs.ObservedTime.Time
			}
			last = rs.ObservedTime.Time
		}
	}
	return first, last
}

// publicationOf returns the test database's only publication.
func publicationOf(t *testing.T, db *testDB) string {
	t.Helper()
	var name string
	if err := db.conn.QueryRow(context.Background(), `SELECT pubname FROM pg_publication`).Scan(&name); err != nil {
		t.Fatalf("publication: %v", err)
	}
	return name
}

// The forget Job of a deleted pipeline drops its slot even while an earlier runner's
// walsender still streams it: the Job holds the pipeline's lock, so the holder lost its claim.
func TestForgetDropsTheSlotAnEarlierRunnerStillHolds(t *testing.T) {
	t.Parallel()
	main := newTestDB(t, "main")
	dropSlotsAtCleanup(t, main)
	createSource(t, main, 200)
	createTarget(t, main, "items")
	spec := cdcSpec(t, "analytics.items", "", 100, true, nil)
	r := &inProcess{cfg: testConfig(main), env: envOf(main), spec: spec,
		pipeline: state.Pipeline{Namespace: "tenant", Name: "items", UID: "uid-forget-held"}}
	requireOutcome(t, r.run(t), OutcomeIdle, configv1.ExitOK)

	slot, publication := holdSlot(t, main, r, spec)

	fctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	lookup := func(k string) (string, bool) { v, ok := r.env[k]; return v, ok }
	if code := Forget(fctx, ForgetParams{Config: r.cfg, Pipeline: r.pipeline, LookupEnv: lookup}); code != configv1.ExitOK {
		t.Fatalf("Forget exit %d, want %d (slot active: %d)", code, configv1.ExitOK,
			main.queryInt(t, `SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 AND active`, slot))
	}
	if n := main.queryInt(t, `SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, slot); n != 0 {
		t.Fatalf("the slot %s is still there", slot)
	}
	if n := main.queryInt(t, `SELECT count(*) FROM pg_publication WHERE pubname = $1`, publication); n != 0 {
		t.Fatalf("the publication %s is still there", publication)
	}
	if n := main.queryInt(t, `SELECT count(*) FROM etl.etl_slots`); n != 0 {
		t.Fatalf("etl.etl_slots keeps %d rows", n)
	}
}

// An update that leaves a large (TOASTed) value unchanged does not carry it in the log under
// the default replica identity: the runner reads it from the source, so the sink still gets
// the row whole, including when the row changed again or went before the run streamed it.
func TestCDCFillsUnchangedLargeValuesFromTheSource(t *testing.T) {
	for _, sk := range cdcSinks {
		t.Run(sk.name, func(t *testing.T) {
			main, dst := dbsFor(t, topology{sk.name, sk.shared})
			dropSlotsAtCleanup(t, main)
			createSource(t, main, 600)
			// Random hex of 16 kB per row: more than the 2 kB Postgres keeps in line even
			// compressed, so every doc is stored out of line.
			big := `(SELECT string_agg(md5(random()::text || id::text || i::text), '') FROM generate_series(1, 500) i)`
			main.exec(t, `UPDATE src SET doc = jsonb_build_object('g', id, 'big', `+big+`)`)
			cfg, env, spec, sinkMatches := cdcTarget(t, sk, main, dst, 100)
			r := &inProcess{cfg: cfg, env: env, spec: spec,
				pipeline: state.Pipeline{Namespace: "tenant", Name: "items", UID: "uid-toast"}}
			requireOutcome(t, r.run(t), OutcomeIdle, configv1.ExitOK)
			if n := main.queryInt(t, `SELECT count(*) FROM src WHERE pg_column_size(doc) > 2000`); n != 600 {
				t.Fatalf("%d of 600 docs are stored out of line", n)
			}

			// Updates of other columns (the doc unchanged, so not in the log), in one
			// transaction and in several; a key change; rows updated, then deleted; rows
			// updated, then their doc changed too; a row updated, deleted, inserted again.
			main.exec(t, `UPDATE src SET amount = amount + 1, name = 'a' WHERE id % 3 = 0`)
			main.exec(t, `BEGIN; UPDATE src SET name = 'b' WHERE id % 5 = 0; UPDATE src SET amount = 0 WHERE id % 5 = 0; COMMIT`)
			main.exec(t, `UPDATE src SET id = id + 10000 WHERE id IN (7, 11)`)
			main.exec(t, `UPDATE src SET name = 'doomed' WHERE id % 13 = 0`)
			main.exec(t, `DELETE FROM src WHERE id % 13 = 0`)
			main.exec(t, `UPDATE src SET name = 'changed twice' WHERE id % 17 = 0`)
			main.exec(t, `UPDATE src SET doc = jsonb_build_object('g', -id, 'big', `+big+`) WHERE id % 17 = 0`)
			main.exec(t, `UPDATE src SET name = 'reborn' WHERE id = 2`)
			main.exec(t, `BEGIN; DELETE FROM src WHERE id = 2; INSERT INTO src VALUES (2, now(), 'new 2', 2, '{"g": 2}'); COMMIT`)
			r.runID, r.rep = "run-2", nil
			res := r.run(t)
			requireOutcome(t, res, OutcomeIdle, configv1.ExitOK)
			if res.RowsRead == 0 {
				t.Fatalf("the second run read no change")
			}
			sinkMatches(t)
		})
	}
}

// A busy database sends the stream of a quiet table keepalives for its other tables'
// transactions, and nothing else: a bounded run still ends, and it moves the slot past them
// (a slot that is never confirmed retains the source's WAL for ever).
func TestCDCOfAQuietTableInABusyDatabase(t *testing.T) {
	main := newTestDB(t, "main")
	dropSlotsAtCleanup(t, main)
	createSource(t, main, 100)
	createTarget(t, main, "items")
	main.exec(t, `CREATE TABLE noise (n int)`)
	ctx, stop := context.WithCancel(context.Background())
	noise, err := pgx.Connect(ctx, main.dsn)
	if err != nil {
		stop()
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer func() { _ = noise.Close(context.Background()) }()
		for ctx.Err() == nil {
			_, _ = noise.Exec(ctx, `INSERT INTO noise VALUES (1)`)
			time.Sleep(2 * time.Millisecond)
		}
	}()
	defer wg.Wait()
	defer stop()

	spec := cdcSpec(t, "analytics.items", "", 100, true, nil)
	r := &inProcess{cfg: testConfig(main), env: envOf(main), spec: spec,
		pipeline: state.Pipeline{Namespace: "tenant", Name: "items", UID: "uid-quiet"}}
	requireOutcome(t, r.run(t), OutcomeIdle, configv1.ExitOK)
	var before string
	if err := main.conn.QueryRow(context.Background(), `SELECT pg_current_wal_insert_lsn()::text`).Scan(&before); err != nil {
		t.Fatal(err)
	}
	r.runID, r.rep = "run-2", nil
	requireOutcome(t, r.run(t), OutcomeIdle, configv1.ExitOK)
	slot, info := slotOf(t, main, r.cfg, r.env, r.pipeline, spec)
	if b, _ := pglogrepl.ParseLSN(before); info.Confirmed < b {
		t.Fatalf("slot %s confirmed %s, before the WAL written before the run (%s)", slot, info.Confirmed, before)
	}
	sinkMatchesSource(t, main, main, "items")
}
