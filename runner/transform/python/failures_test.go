package python

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/batch"
	"github.com/sluice-dev/sluice/runner/failure"
)

// TestBatchFailuresNameTheTaskAndTheRow: every way a task can fail a batch is a business
// error that names the task and the reader row, with the cause.
func TestBatchFailuresNameTheTaskAndTheRow(t *testing.T) {
	cases := []struct {
		name  string
		codes []string
		opts  Options
		want  []string
		not   []string
	}{
		{
			name: "exception",
			codes: []string{`
def transform(row):
    if row["id"] == 2:
        raise ValueError("bad row")
    return row
`},
			want: []string{"task \"t1\" raised an exception at reader row (id=2): ValueError\n  File \"<task t1>\", line 4, in transform\n" +
				`    raise ValueError("bad row")`},
		},
		{
			name: "exception after a fan-out names the reader row",
			codes: []string{`
def transform(row):
    return [row, dict(row, id=row["id"] + 100)]
`, `
def transform(row):
    return row if row["id"] != 102 else 1 / 0
`},
			want: []string{`task "t2" raised an exception at reader row (id=2): ZeroDivisionError`, `return row if row["id"] != 102 else 1 / 0`},
		},
		{
			name:  "a return that is not a dict",
			codes: []string{"def transform(row):\n    return 5\n"},
			want:  []string{`task "t1" returned int for reader row (id=1): transform must return a dict, a list of dicts or None`},
		},
		{
			name:  "a list holding something else",
			codes: []string{"def transform(row):\n    return [row, 'x'] if row['id'] == 3 else row\n"},
			want:  []string{`task "t1" returned a list whose item 1 is str, not a dict for reader row (id=3)`},
		},
		{
			name:  "a row without the key column",
			codes: []string{"def transform(row):\n    return {'name': row['name']}\n"},
			opts:  Options{SinkKey: []string{"id"}},
			want:  []string{`after the python tasks, the row from reader row (id=1) has no key column "id"`},
		},
		{
			name:  "a row with a None key",
			codes: []string{"def transform(row):\n    if row['id'] == 3:\n        row['id'] = None\n    return row\n"},
			opts:  Options{SinkKey: []string{"id"}},
			want:  []string{`the row from reader row (id=3) has no key column "id" (missing or None)`},
		},
		{
			name:  "a delete without the key column",
			codes: []string{"import sluice\ndef transform(row):\n    return sluice.Delete({'name': row['name']}) if row['id'] == 2 else row\n"},
			opts:  Options{SinkKey: []string{"id"}},
			want:  []string{`the row from reader row (id=2) has no key column "id"`},
		},
		{
			name:  "a delete of something else than a dict",
			codes: []string{"import sluice\ndef transform(row):\n    return sluice.Delete(row['id'])\n"},
			want:  []string{`task "t1" raised an exception at reader row (id=1)`, "TypeError: sluice.Delete takes a dict with the sink key columns, not int"},
		},
		{
			name:  "a value the sinks cannot write",
			codes: []string{"def transform(row):\n    row['tags'] = {'a', 'b'}\n    return row\n"},
			want:  []string{`for reader row (id=1), a row whose column "tags" holds a set`},
		},
		{
			name:  "an object the sinks cannot write",
			codes: []string{"def transform(row):\n    row['o'] = object() if row['id'] == 2 else 1\n    return row\n"},
			want:  []string{`for reader row (id=2), a row whose column 'o' holds a value of type object`},
		},
		{
			name:  "timeout",
			codes: []string{"import time\ndef transform(row):\n    time.sleep(30)\n"},
			opts:  Options{Timeout: time.Second},
			want: []string{`the python tasks exceeded the transform timeout of 1s on a batch of 3 rows: task "t1" was at reader row (id=1)`,
				"File \"<task t1>\", line 3, in transform\n    time.sleep(30)"},
		},
		{
			name:  "a timeout that ignores the interrupt",
			codes: []string{"import signal\ndef transform(row):\n    signal.signal(signal.SIGINT, signal.SIG_IGN)\n    while True: pass\n"},
			opts:  Options{Timeout: time.Second},
			want:  []string{`the python tasks exceeded the transform timeout of 1s on a batch of 3 rows`},
		},
		{
			name:  "memory",
			codes: []string{"def transform(row):\n    row['big'] = bytearray(512 << 20)\n    return row\n"},
			opts:  Options{MemoryLimit: 256 << 20},
			want:  []string{`task "t1" ran out of memory (limit 256 MiB) at reader row (id=1): MemoryError`, "row['big'] = bytearray(512 << 20)"},
		},
		{
			name: "the worker exits",
			// What it printed may quote a row: it stays in the runner's log.
			codes: []string{"import os\ndef transform(row):\n    print('leaving now', row['name'])\n    os._exit(3)\n"},
			want:  []string{"the python worker ended during a batch", "exited with status 3", "its last output is in the runner's log"},
			not:   []string{"leaving now"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := start(t, c.opts, c.codes...)
			begin := time.Now()
			out, err := apply(t, s, idRows(3))
			if err == nil {
				t.Fatalf("Apply = %v, want an error", out.Rows)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
			for _, w := range c.not {
				if strings.Contains(err.Error(), w) {
					t.Errorf("error contains %q:\n%v", w, err)
				}
			}
			if failure.Classify(err) != etlv1.ErrorBusiness {
				t.Errorf("error class %s, want Business", failure.Classify(err))
			}
			t.Logf("failed after %s: %v", time.Since(begin).Round(time.Millisecond), err)
			if c.opts.Timeout > 0 && time.Since(begin) > c.opts.Timeout+interruptGrace+3*time.Second {
				t.Errorf("the timeout took %s", time.Since(begin))
			}
			if len(err.Error()) > 3000 {
				t.Errorf("the message has %d bytes, more than the status can take", len(err.Error()))
			}
		})
	}
}

// TestStartFailures: code that cannot serve fails the stage's start as a business error,
// before any batch.
func TestStartFailures(t *testing.T) {
	cases := []struct {
		name string
		code string
		opts Options
		want string
	}{
		{"syntax error", "def transform(row) return row", Options{}, "task \"t1\" does not compile: SyntaxError: expected ':' at line 1\n  File \"<task t1>\", line 1"},
		{"no transform", "def transformer(row):\n    return row\n", Options{}, `task "t1": the code defines no transform(row) function`},
		{"setup raises", "def setup():\n    1 / 0\ndef transform(row):\n    return row\n", Options{},
			"task \"t1\": setup() raised an exception: ZeroDivisionError\n  File \"<task t1>\", line 2, in setup\n    1 / 0"},
		{"module code raises", "import not_a_module\ndef transform(row):\n    return row\n", Options{},
			"task \"t1\" raised an exception when its code was loaded: ModuleNotFoundError\n  File \"<task t1>\", line 1, in <module>\n    import not_a_module"},
		{"setup too slow", "import time\ndef setup():\n    time.sleep(30)\ndef transform(row):\n    return row\n",
			Options{Timeout: time.Second}, `did not start within the transform timeout of 1s: task "t1" was still loading or in setup()`},
		{"no interpreter", "def transform(row):\n    return row\n", Options{Python: "/nonexistent/python3"},
			`python interpreter "/nonexistent/python3" not found`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := startErr(t, c.opts, c.code)
			if err == nil || !strings.Contains(err.Error(), c.want) || failure.Classify(err) != etlv1.ErrorBusiness {
				t.Fatalf("Start = %v, want a business error containing %q", err, c.want)
			}
		})
	}
}

// TestWorkerKilledFromOutsideIsRetried: a worker killed by someone else (the kernel's OOM
// killer) is an infrastructure error, and the next batch starts a new worker, which runs
// setup() again.
func TestWorkerKilledFromOutsideIsRetried(t *testing.T) {
	s := start(t, Options{}, `
import os
starts = 0
def setup():
    global starts
    starts += 1
def transform(row):
    row["pid"] = os.getpid()
    row["starts"] = starts
    return row
`)
	out, err := apply(t, s, idRows(1))
	if err != nil {
		t.Fatalf("first batch: %v", err)
	}
	first := out.Rows[0][2]
	if err := s.w.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-s.w.done
	_, err = apply(t, s, idRows(1))
	if err == nil || failure.Classify(err) != etlv1.ErrorInfra || !strings.Contains(err.Error(), "killed by signal killed") {
		t.Fatalf("batch after the kill = %v, want an infrastructure error", err)
	}
	out, err = apply(t, s, idRows(1))
	if err != nil {
		t.Fatalf("batch after the infrastructure error: %v", err)
	}
	if out.Rows[0][2] == first || out.Rows[0][3] != int64(1) {
		t.Fatalf("pid %v (first %v), setup runs %v: want a new worker that ran setup once", out.Rows[0][2], first, out.Rows[0][3])
	}
}

// TestExceptionReportsCarryNoRowValues: however a task fails on a row, the error that goes to
// the run's status names the task, the exception's type, the task's line and the reader row
// by its key, and holds nothing of the row's other values, not even when the exception's
// message, its cause or a library's message quotes them.
func TestExceptionReportsCarryNoRowValues(t *testing.T) {
	const email = "jane.doe@example.org"
	cases := []struct {
		name, code string
		want       []string
	}{
		{"a message that quotes the row", `
def transform(row):
    email = row["email"]
    raise ValueError(f"bad email {email}")
`, []string{"task \"t1\" raised an exception at reader row (id=7): ValueError\n  File \"<task t1>\", line 4, in transform\n" +
			`    raise ValueError(f"bad email {email}")`}},
		{"a KeyError of a value", "def transform(row):\n    return {}[row['email']]\n",
			[]string{`raised an exception at reader row (id=7): KeyError`, `line 2, in transform`}},
		{"a library's message", "from datetime import datetime\ndef transform(row):\n    return {'d': datetime.strptime(row['email'], '%Y')}\n",
			[]string{`raised an exception at reader row (id=7): ValueError`, `line 3, in transform`}},
		{"int() of a value", "def transform(row):\n    return {'n': int(row['email'])}\n", []string{`: ValueError`}},
		{"a cause that quotes the row", `
class BadRow(Exception):
    pass
def check(row):
    raise RuntimeError(row["email"])
def transform(row):
    try:
        check(row)
    except RuntimeError as e:
        raise BadRow(str(e)) from e
`, []string{`raised an exception at reader row (id=7): BadRow`, `line 10, in transform`}},
		{"a library's exception type", "import json\ndef transform(row):\n    return json.loads(row['email'])\n",
			[]string{`: json.decoder.JSONDecodeError`, `line 3, in transform`}},
		// A date, which marshal cannot carry, has the worker convert the row itself.
		{"a dict keyed by a value", "import datetime\ndef transform(row):\n    row['m'] = {1: row['email'], 'd': datetime.date(2024, 1, 1)}\n    return row\n",
			[]string{`for reader row (id=7), a row whose column 'm' holds a dict key of type int (keys must be strings)`}},
		{"a column named by a non-str value", "import datetime\ndef transform(row):\n    row['d'] = datetime.date(2024, 1, 1)\n    row[len(row['email'])] = 1\n    return row\n",
			[]string{`for reader row (id=7), a row whose column names include one of type int (names must be strings)`}},
		{"a set of values", "def transform(row):\n    row['s'] = {row['email']}\n    return row\n",
			[]string{`column "s" holds a set`}},
	}
	in := &batch.Batch{Columns: []batch.Column{{Name: "id", Type: pgtype.Int8OID}, {Name: "email", Type: pgtype.TextOID}},
		Rows: [][]any{{int64(7), email}}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := start(t, Options{}, c.code)
			_, err := apply(t, s, &batch.Batch{Columns: in.Columns, Rows: [][]any{slices.Clone(in.Rows[0])}})
			if err == nil {
				t.Fatal("Apply succeeded, want an error")
			}
			msg := err.Error()
			t.Logf("%v", msg)
			for _, part := range []string{"jane", "doe", "example", "org", "@"} {
				if strings.Contains(msg, part) {
					t.Errorf("the error holds %q of the row's email", part)
				}
			}
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error does not contain %q", w)
				}
			}
			if failure.Classify(err) != etlv1.ErrorBusiness {
				t.Errorf("error class %s, want Business", failure.Classify(err))
			}
		})
	}
}
