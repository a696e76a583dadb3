package runner

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/state"
	"github.com/sluice-dev/sluice/test/testenv"
)

// pythonForTests is Debian's python3 when present, the image's interpreter; else python3
// from PATH.
func pythonForTests() string {
	if _, err := os.Stat("/usr/bin/python3"); err == nil {
		return "/usr/bin/python3"
	}
	return "python3"
}

// pyTask is a python task of a tasks-mode spec.
type pyTask struct{ name, code string }

// tasksSpecJSON is specJSON in tasks mode: opts.query becomes the sql task, then the python
// tasks. timeout is spec.transformTimeout (the default when 0).
func tasksSpecJSON(t *testing.T, o specOpts, timeout time.Duration, tasks ...pyTask) string {
	t.Helper()
	var spec map[string]any
	if err := json.Unmarshal([]byte(specJSON(t, o)), &spec); err != nil {
		t.Fatal(err)
	}
	src := spec["source"].(map[string]any)
	list := []map[string]any{{"name": "read", "sql": src["query"]}}
	delete(src, "query")
	for _, pt := range tasks {
		list = append(list, map[string]any{"name": pt.name, "python": pt.code})
	}
	spec["tasks"] = list
	if timeout > 0 {
		spec["transformTimeout"] = timeout.String()
	}
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The three tasks of TestPythonTasksWriteExactlyTheirRows, and the same plan in SQL.
var (
	normalizeTask = pyTask{"normalize", `
def transform(row):
    row["name"] = row["name"].upper().replace("ROW", "Item")
    return row
`}
	dropTask = pyTask{"drop-tens", `
def transform(row):
    return None if row["id"] % 10 == 0 else row
`}
	fanOutTask = pyTask{"fan-out", `
def transform(row):
    if row["id"] % 7:
        return row
    copy = dict(row, id=row["id"] + 1000000, name=row["name"] + " copy", amount=row["amount"] * 2)
    copy["doc"] = {"copy_of": row["id"], "doc": row["doc"]}
    return [row, copy]
`}
	plannedSQL = `
		SELECT id, updated_at, replace(upper(name), 'ROW', 'Item') AS name, amount, doc FROM src WHERE id % 10 <> 0
		UNION ALL
		SELECT id + 1000000, updated_at, replace(upper(name), 'ROW', 'Item') || ' copy', amount * 2,
		       jsonb_build_object('copy_of', id, 'doc', doc)
		FROM src WHERE id % 10 <> 0 AND id % 7 = 0`
)

// digestOf is sinkMatchesSource's digest of any query of (id, updated_at, name, amount, doc).
func digestOf(t *testing.T, db *testDB, from string) (int64, string) {
	t.Helper()
	var n int64
	var h string
	err := db.conn.QueryRow(context.Background(), `SELECT count(*), coalesce(md5(string_agg(
		id::text || '|' || updated_at::text || '|' || coalesce(name, '') || '|' || amount::text || '|' || doc::text,
		',' ORDER BY id)), '') FROM `+from).Scan(&n, &h)
	if err != nil {
		t.Fatalf("digest %s: %v", from, err)
	}
	return n, h
}

func sinkMatches(t *testing.T, want *testDB, wantFrom string, got *testDB, table string) {
	t.Helper()
	nw, hw := digestOf(t, want, wantFrom)
	ng, hg := digestOf(t, got, "analytics."+table)
	if nw != ng || hw != hg {
		t.Fatalf("sink differs from the plan: want %d rows (%s), sink has %d rows (%s)", nw, hw, ng, hg)
	}
}

// TestPythonTasksWriteExactlyTheirRows runs a plan that normalizes a field, drops rows and
// fans rows out: the sink holds exactly the rows the same plan gives in SQL, and the counters
// count reader rows read and sink rows written.
func TestPythonTasksWriteExactlyTheirRows(t *testing.T) {
	for _, tp := range topologies {
		t.Run(tp.name, func(t *testing.T) {
			main, dst := dbsFor(t, tp)
			const rows = 2345
			createSource(t, main, rows)
			createTarget(t, dst, "items")
			r := &inProcess{cfg: testConfig(main, dst), env: envOf(main, dst), opts: Options{Python: pythonForTests()},
				spec: tasksSpecJSON(t, specOpts{sourceConn: "main", targetConn: dst.name, batch: 500}, 0,
					normalizeTask, dropTask, fanOutTask)}
			start := time.Now()
			res := r.run(t)
			requireOutcome(t, res, OutcomeIdle, configv1.ExitOK)
			t.Logf("run took %s", time.Since(start))
			main.exec(t, `CREATE TABLE planned AS `+plannedSQL)
			sinkMatches(t, main, "planned", dst, "items")
			written := main.queryInt(t, `SELECT count(*) FROM planned`)
			if res.RowsRead != rows || res.RowsWritten != written || res.Batches != 5 {
				t.Fatalf("read %d, wrote %d in %d batches; want %d, %d, 5", res.RowsRead, res.RowsWritten, res.Batches, rows, written)
			}
		})
	}
}

// TestPythonFailuresFailTheRunBeforeTheirBatch: a task that raises, exceeds the transform
// timeout, returns a non-dict or loses the key column at reader row 700 fails the run with
// the task, the row and the cause; the first batch (rows 1 to 500) is written, the second
// is not.
func TestPythonFailuresFailTheRunBeforeTheirBatch(t *testing.T) {
	cases := []struct {
		name    string
		code    string
		timeout time.Duration
		want    []string
	}{
		{"exception", "def transform(row):\n    if row['id'] == 700:\n        raise KeyError('email')\n    return row\n", 0,
			[]string{`task "check" raised an exception at reader row (id=700)`, "KeyError", `File "<task check>", line 3`}},
		{"timeout", "import time\ndef transform(row):\n    if row['id'] == 700:\n        time.sleep(60)\n    return row\n", time.Second,
			[]string{`exceeded the transform timeout of 1s on a batch of 500 rows: task "check" was at reader row (id=700)`}},
		{"non-dict return", "def transform(row):\n    return 'oops' if row['id'] == 700 else row\n", 0,
			[]string{`task "check" returned str for reader row (id=700): transform must return a dict, a list of dicts or None`}},
		{"missing key column", "def transform(row):\n    if row['id'] == 700:\n        del row['id']\n    return row\n", 0,
			[]string{`after the python tasks, the row from reader row (id=700) has no key column "id"`}},
	}
	main := newTestDB(t, "main")
	createSource(t, main, 1000)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			main.exec(t, `DROP TABLE IF EXISTS analytics.items`)
			createTarget(t, main, "items")
			r := &inProcess{cfg: testConfig(main), env: envOf(main), opts: Options{Python: pythonForTests()},
				pipeline: state.Pipeline{Namespace: "tenant", Name: fmt.Sprintf("case-%d", i)},
				spec: tasksSpecJSON(t, specOpts{sourceConn: "main", batch: 500, attempts: 3, backoff: time.Second}, tc.timeout,
					pyTask{"check", tc.code})}
			start := time.Now()
			res := r.run(t)
			t.Logf("failed after %s: %s", time.Since(start).Round(time.Millisecond), res.Message)
			requireOutcome(t, res, OutcomeFailed, configv1.ExitBusiness)
			for _, w := range tc.want {
				if !strings.Contains(res.Message, w) {
					t.Errorf("the failure does not contain %q:\n%s", w, res.Message)
				}
			}
			if len(r.sleeps) != 0 {
				t.Errorf("a business error was retried: %v", r.sleeps)
			}
			if end := r.rep.lastEnd(t); end.Phase != etlv1.PhaseFailed || end.Message != res.Message {
				t.Errorf("reported %s %q", end.Phase, end.Message)
			}
			if n := main.queryInt(t, `SELECT count(*) FROM analytics.items`); n != 500 {
				t.Errorf("the sink has %d rows, want the first batch's 500", n)
			}
			if n := main.queryInt(t, `SELECT max(id) FROM analytics.items`); n != 500 {
				t.Errorf("the sink's last row is %d, want 500", n)
			}
		})
	}
}

// TestIdentityTransformWritesWhatLegacyModeWrites copies many types twice, in legacy mode and
// through an identity python task: both sinks hold the same rows.
func TestIdentityTransformWritesWhatLegacyModeWrites(t *testing.T) {
	db := newTestDB(t, "main")
	db.exec(t, `CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')`)
	db.exec(t, `CREATE TABLE src (
		id int PRIMARY KEY, ts timestamptz NOT NULL, n numeric, j jsonb, tags text[], nums int[],
		u uuid, d date, iv interval, m mood, b bytea, f float8, t text, flag boolean, big bigint, w timestamp)`)
	db.exec(t, `INSERT INTO src VALUES
		(1, '2024-05-01 10:00:00.123456+02', 12345678901234567890.000000001,
		 '{"big": 12345678901234567890, "z": 1, "a": [1.50, "s", {"k": null}]}',
		 '{"a b", "c,d", NULL}', '{1,2,3}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2024-02-29', '1 day 02:03:04',
		 'happy', '\xdeadbeef', 1.5e300, 'ünïcode ✓', true, 9223372036854775807, '2024-05-01 10:00:00'),
		(2, '2024-05-01 10:00:00.123456+02', 'NaN', '"a json string"', '{}', NULL, NULL, 'infinity', NULL, NULL, NULL, 'NaN', NULL,
		 false, -9223372036854775808, '-infinity'),
		(3, 'infinity', '-Infinity', '[]', NULL, '{}', NULL, '-infinity', '-1 mon', 'sad', '', '-0', '', NULL, 0, NULL),
		(4, '2024-05-02 00:00:00+00', 0.00, '12.5', '{x}', '{-1}', NULL, '2000-01-01', '0', 'ok', '\x00', 0.1, 'x', true, 1, '1999-12-31 23:59:59.999999')`)
	db.exec(t, `CREATE SCHEMA analytics`)
	for _, table := range []string{"items", "other"} {
		db.exec(t, `CREATE TABLE analytics.`+table+` (
			id bigint PRIMARY KEY, ts timestamptz, n numeric, j jsonb, tags text[], nums bigint[],
			u text, d date, iv interval, m text, b bytea, f float8, t varchar(20), flag boolean, big bigint, w timestamp)`)
	}
	base := specOpts{mode: etlv1.ModeIncremental, sourceConn: "main", batch: 3, query: "SELECT * FROM src"}
	legacy := base
	legacy.target = "analytics.other"
	runs := map[string]string{
		"legacy": specJSON(t, legacy),
		"tasks":  tasksSpecJSON(t, base, 0, pyTask{"identity", "def transform(row):\n    return row\n"}),
	}
	for name, spec := range runs {
		r := &inProcess{cfg: testConfig(db), env: envOf(db), pipeline: state.Pipeline{Namespace: "tenant", Name: name}, opts: Options{Python: pythonForTests()},
			spec: strings.Replace(spec, `"column":"updated_at"`, `"column":"id"`, 1)}
		requireOutcome(t, r.run(t), OutcomeIdle, configv1.ExitOK)
	}
	// Values compare with their types' equality: numeric 0.00 = 0 (pgx decodes a numeric zero
	// without its scale, in legacy mode's decoded path too) and jsonb 1.50 = 1.5 (json.loads
	// makes a float of it), the two differences that text would show.
	const differ = `row(a.*) IS DISTINCT FROM row(l.*)`
	var diff int64
	err := db.conn.QueryRow(context.Background(), `
		SELECT count(*) FROM analytics.items a FULL JOIN analytics.other l ON a.id = l.id
		WHERE a.id IS NULL OR l.id IS NULL OR `+differ).Scan(&diff)
	if err != nil {
		t.Fatal(err)
	}
	if n := db.queryInt(t, `SELECT count(*) FROM analytics.items`); n != 4 {
		t.Fatalf("tasks mode wrote %d rows, want 4", n)
	}
	if diff != 0 {
		rows, _ := db.conn.Query(context.Background(), `SELECT row(a.*)::text, row(l.*)::text FROM analytics.items a
			FULL JOIN analytics.other l ON a.id = l.id WHERE `+differ)
		for rows.Next() {
			var a, l *string
			_ = rows.Scan(&a, &l)
			t.Logf("tasks:  %v\nlegacy: %v", deref(a), deref(l))
		}
		rows.Close()
		t.Fatalf("%d rows differ between tasks mode and legacy mode", diff)
	}
}

func deref(s *string) string {
	if s == nil {
		return "<none>"
	}
	return *s
}

// TestKilledPythonRunsLoseAndDuplicateNothing kills `sluice runner` processes of a pipeline
// with python tasks at random moments, each replacement continuing from the checkpoint: the
// sink ends holding exactly the plan's rows, each reader row counted once, and no worker
// outlives its runner.
func TestKilledPythonRunsLoseAndDuplicateNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs it many times")
	}
	bin := buildSluice(t)
	main := newTestDB(t, "main")
	const rows = 20000
	createSource(t, main, rows)
	createTarget(t, main, "items")
	cfg := writeConfig(t, testConfig(main))
	spec := tasksSpecJSON(t, specOpts{mode: etlv1.ModeIncremental, sourceConn: "main", batch: 500, attempts: 3,
		backoff: 200 * time.Millisecond}, 0, normalizeTask, dropTask, fanOutTask)
	env := runEnv(envOf(main), spec, "run-1")
	args := []string{"--config", cfg, "--no-status", "--termination-log", "", "--log-level", "warn", "--python", pythonForTests()}

	start := time.Now()
	p := startRunner(t, bin, withName(env, "calibration"), args...)
	if code := p.wait(t, 2*time.Minute); code != configv1.ExitOK {
		t.Fatalf("calibration run exited %d; its log:\n%s", code, p.log)
	}
	d := time.Since(start)
	main.exec(t, `TRUNCATE analytics.items`)
	main.exec(t, `TRUNCATE etl.etl_state, etl.etl_runs`)

	t.Logf("uninterrupted run %s", d)
	kills, orphans, total := 8, 0, rows
	completions := killRunsAtRandom(t, bin, env, args, killPlan{kills: kills, window: d / 2, stream: 6,
		more: func() { insertRows(t, main, total+1, total+5000); total += 5000 },
		// The worker must die with its runner: note it before the kill, check after.
		onKill: func(p *runnerProcess) func() {
			workers := childPIDs(p.cmd.Process.Pid)
			return func() { waitGone(t, workers); orphans += len(workers) }
		}})
	p = startRunner(t, bin, env, args...)
	if code := p.wait(t, 2*time.Minute); code != configv1.ExitOK {
		t.Fatalf("final runner exited %d; its log:\n%s", code, p.log)
	}
	t.Logf("%d kills, %d runs completed before their kill, %d rows, %d workers checked gone with their runners",
		kills, completions, total, orphans)
	main.exec(t, `CREATE TABLE planned AS `+plannedSQL)
	sinkMatches(t, main, "planned", main, "items")
	if n := main.queryInt(t, `SELECT rows_read FROM etl.etl_state`); n != int64(total) {
		t.Fatalf("committed counters say %d rows read, want %d: a batch was counted twice or lost", n, total)
	}
}

func withName(env map[string]string, name string) map[string]string {
	out := map[string]string{}
	for k, v := range env {
		out[k] = v
	}
	out[configv1.EnvPipelineName] = name
	return out
}

// childPIDs lists the processes whose parent is pid.
func childPIDs(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if state, ppid := procStat(child); state != "" && ppid == pid {
			out = append(out, child)
		}
	}
	return out
}

// procStat returns a process's state and parent, "" when it does not exist.
func procStat(pid int) (string, int) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", 0
	}
	// pid (comm) state ppid ...: comm may hold spaces, so split after its parenthesis.
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	ppid, _ := strconv.Atoi(fields[1])
	return fields[0], ppid
}

// waitGone waits for processes to exit (a zombie has exited).
func waitGone(t *testing.T, pids []int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range pids {
		for {
			state, _ := procStat(pid)
			if state == "" || state == "Z" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("python worker %d outlived its runner", pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// TestPythonTasksWriteExactlyTheirDocuments is TestPythonTasksWriteExactlyTheirRows into an
// Elasticsearch index: each document is the plan's row of its key, as Postgres renders it in
// JSON, and there is no other document.
func TestPythonTasksWriteExactlyTheirDocuments(t *testing.T) {
	main := newTestDB(t, "main")
	createSource(t, main, 2345)
	ix := newESIndex(t, `{"properties":{"doc":{"properties":{"big":{"type":"keyword"},"doc":{"properties":{"big":{"type":"keyword"}}}}}}}`)
	spec := tasksSpecJSON(t, specOpts{sourceConn: "main", target: "es:" + ix.name, batch: 500}, 0, normalizeTask, dropTask, fanOutTask)
	var m map[string]any
	if err := json.Unmarshal([]byte(spec), &m); err != nil {
		t.Fatal(err)
	}
	target := m["target"].(map[string]any)
	delete(target, "connection")
	target["action"] = etlv1.ActionIndex
	js, _ := json.Marshal(m)
	r := &inProcess{cfg: esConfig(ix.url, main, ix.name), env: envOf(main), opts: Options{Python: pythonForTests()}, spec: string(js)}
	res := r.run(t)
	requireOutcome(t, res, OutcomeIdle, configv1.ExitOK)

	rows, err := main.conn.Query(context.Background(), `SELECT id::text, json_build_object(
			'id', id, 'updated_at', to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
			'name', name, 'amount', amount, 'doc', doc)::text
		FROM (`+plannedSQL+`) p`)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{}
	for rows.Next() {
		var id, doc string
		if err := rows.Scan(&id, &doc); err != nil {
			t.Fatal(err)
		}
		want[id] = decodeNumbers(t, []byte(doc))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	got := ix.docs(t)
	if len(got) != len(want) || res.RowsWritten != int64(len(want)) {
		t.Fatalf("index %s holds %d documents (%d written), the plan %d rows", ix.name, len(got), res.RowsWritten, len(want))
	}
	for id, w := range want {
		if !sameJSON(got[id], w) {
			t.Fatalf("document %s = %v, planned row %v", id, got[id], w)
		}
	}
}

// TestTasksSamplesRun runs the tasks-mode samples of config/samples, as `make demo` applies
// them, on the demo's data: the Python transforms work with the documented types.
func TestTasksSamplesRun(t *testing.T) {
	db := newTestDB(t, "warehouse")
	script, err := os.ReadFile(testenv.RepoRoot() + "/hack/demo-data.sql")
	if err != nil {
		t.Fatal(err)
	}
	db.exec(t, string(script))
	sample := func(file string) etlv1.ETLPipelineSpec {
		data, err := os.ReadFile(testenv.RepoRoot() + "/config/samples/" + file)
		if err != nil {
			t.Fatal(err)
		}
		var p etlv1.ETLPipeline
		if err := yaml.UnmarshalStrict(data, &p); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		return p.Spec
	}

	t.Run("tasks_to_postgres", func(t *testing.T) {
		spec := sample("tasks_to_postgres.yaml")
		js, _ := json.Marshal(spec)
		cfg := testConfig(db)
		cfg.AllowedTargets.PostgresTables = []string{"analytics.customers"}
		r := &inProcess{cfg: cfg, env: envOf(db), opts: Options{Python: pythonForTests()}, spec: string(js)}
		res := r.run(t)
		requireOutcome(t, res, OutcomeIdle, configv1.ExitOK)
		if n := db.queryInt(t, `SELECT count(*) FROM analytics.customers a JOIN public.customers c USING (id)
			WHERE a.email = lower(trim(c.email)) AND a.country IS NOT DISTINCT FROM upper(c.country)
			  AND a.created_at = c.created_at`); n != 20000 {
			t.Fatalf("%d of 20000 customers written as the transform says", n)
		}
	})

	t.Run("tasks_to_elasticsearch", func(t *testing.T) {
		spec := sample("tasks_to_elasticsearch.yaml")
		if spec.DesiredState != etlv1.DesiredRunning {
			t.Fatalf("the demo's sample must run: desiredState %s", spec.DesiredState)
		}
		ix := newESIndex(t, "")
		spec.Target.Name = "es:" + ix.name
		js, _ := json.Marshal(spec)
		r := &inProcess{cfg: esConfig(ix.url, db, ix.name), env: envOf(db), opts: Options{Python: pythonForTests()}, spec: string(js)}
		res := r.run(t)
		requireOutcome(t, res, OutcomeIdle, configv1.ExitOK)
		docs := ix.docs(t)
		want := map[string]any{"id": json.Number("7"), "email": "customer7@example.com", "domain": "example.com",
			"country": "US", "updated_at": "2025-06-01T00:00:07Z"}
		if len(docs) != 20000 || !sameJSON(docs["7"], want) {
			t.Fatalf("%d documents; document 7 = %v, want %v", len(docs), docs["7"], want)
		}
	})
}

// TestPythonTasksThatDropEveryRowMoveTheCheckpoint: batches whose rows are all dropped write
// nothing, and the run still reads to the end and commits the reader's checkpoint.
func TestPythonTasksThatDropEveryRowMoveTheCheckpoint(t *testing.T) {
	main := newTestDB(t, "main")
	createSource(t, main, 1200)
	createTarget(t, main, "items")
	r := &inProcess{cfg: testConfig(main), env: envOf(main), opts: Options{Python: pythonForTests()},
		spec: tasksSpecJSON(t, specOpts{sourceConn: "main", batch: 500}, 0,
			pyTask{"keep-the-last", "def transform(row):\n    return row if row['id'] == 1200 else None\n"})}
	res := r.run(t)
	requireOutcome(t, res, OutcomeIdle, configv1.ExitOK)
	if res.RowsRead != 1200 || res.RowsWritten != 1 || res.Batches != 3 {
		t.Fatalf("read %d, wrote %d in %d batches; want 1200, 1, 3", res.RowsRead, res.RowsWritten, res.Batches)
	}
	if n := main.queryInt(t, `SELECT count(*) FROM analytics.items`); n != 1 {
		t.Fatalf("the sink has %d rows, want 1", n)
	}
	if n := main.queryInt(t, `SELECT incremental_checkpoint[2]::bigint FROM etl.etl_state`); n != 1200 {
		t.Fatalf("the checkpoint is at id %d, want the reader's last row 1200", n)
	}
}
