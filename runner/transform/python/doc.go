// Package python runs the python tasks of a tasks-mode pipeline (`tasks[1:]`, after the SQL
// reader) as one transform stage.
//
// # The tasks
//
// Each task's code defines `def transform(row: dict) -> dict | list[dict] | None`: the row
// transformed, several rows (a list or tuple of dicts), or None to drop the row. A task deletes
// a key from the sink by returning sluice.Delete(row) (after `import sluice`), alone or in the
// list: row is a dict with the sink key columns. Delete is a class of the worker's own, so no
// other return value is taken for a delete; a delete goes to the sink as it is, later tasks do
// not see it. A row made from a reader row that target.deleteWhen marks deleted is a delete
// too. The result frame then carries a third element, the indexes of the deleting rows. It may
// define `def setup()`, which runs once when the worker starts, before the first batch. Each
// task's code runs in a namespace of its own (its own module dict), so two tasks may both
// define transform and helpers of the same name. The tasks apply in order: every row a task
// returns goes to the next task. The output columns are the union of the keys of the rows
// the last task returns, in the order they first appear in the batch; a row that lacks one
// of them writes NULL there. Every output row must have the sink key columns, not None.
//
// Transforms must be deterministic and free of side effects (no writes elsewhere, no
// network, no clock or randomness that changes the output): a batch is replayed after a
// crash or an infrastructure error, and the checkpoint is the reader's last row of a
// committed batch, whatever the transforms did with it.
//
// # The worker
//
// One python3 process serves a run's tasks (Options.Python, "python3" from PATH by
// default; the image has Debian's python3). It starts with -s (no user site-packages) and
// -c with the worker script embedded in the binary; not -I (isolated mode), because that
// ignores PYTHONHASHSEED, and not -S, so that a derived image may install packages the tasks
// import. Its environment is built from nothing: PATH, LANG=C.UTF-8, TMPDIR,
// PYTHONHASHSEED=0 (set iteration and hash() are the same when a batch is replayed),
// PYTHONDONTWRITEBYTECODE=1, PYTHONUTF8=1 and PYTHONSAFEPATH=1; no variable of the runner's,
// which hold the DSNs, reaches it, nor any of the runner's descriptors (the runner's own are
// close-on-exec; the worker closes any the runner inherited without the flag before it
// loads a task). Before the first worker starts the runner makes itself non-dumpable, so
// that the worker, running as the same unprivileged user, cannot read the runner's
// environment or memory through /proc. The worker runs in a process group of its own and
// the kernel kills it when the runner dies.
//
// # The sandbox
//
// The worker runs confined (package sandbox; docs/sandbox.md): Landlock lets it read only its
// interpreter and installation (sys.executable, <prefix>/lib and lib64, sys.path), the shared
// libraries (/lib, /lib64, /usr/lib, /usr/lib64, /usr/local/lib), /etc/ld.so.cache,
// /usr/share/zoneinfo and /dev/urandom, and write only /dev/null and a directory of its own,
// made fresh for each worker in the runner's temporary directory, which is its working
// directory and TMPDIR and goes when it ends. No token, no /etc/passwd, no /proc: Python
// starts without them. A seccomp filter refuses socket(2) of every family and io_uring;
// Landlock's scopes keep it from signalling or tracing the runner. The interpreter is first
// asked, unconfined and without any task's code, where it is installed: a wrapper such as a
// pyenv shim is a script that the sandbox would not let run, so the worker runs
// sys.executable. Only the worker is confined, never the runner. On a kernel without Landlock
// or seccomp, Start fails with a business error naming what is missing, unless
// Options.AllowUnsandboxed (runner.allowUnsandboxedPython) lets the worker run unconfined;
// Stage.Confinement says which.
//
// Frames go over the worker's stdin and stdout: a 4-byte little-endian payload length, a
// kind byte (I init, B batch; K ready, R result, E error), then the payload in Python's
// marshal format, version 4. The worker keeps the pipes on duplicated descriptors and points
// fd 1 at stderr, so a print() in a task cannot corrupt a frame; stderr is a pipe of its
// own: its lines go to the runner's log (up to 64 KiB a run) and its end into the error of a
// worker that dies. We measured the alternatives on 5000-row batches of the benchmark's
// rows (python 3.11): marshal reads rows 1.9 times faster than the json module and writes
// them 5.4 times faster (0.36 against 1.9 µs a row), in half the bytes; pickle writes at
// about marshal's speed but is a stack machine to decode in Go. A batch is a list of dicts:
// the first row carries the column names as interned strings, later rows refer to them, so
// Python builds the dicts in C with shared keys. The answer is the list of output dicts and,
// when a task dropped or fanned out rows, the index of the reader row each came from.
//
// # Types
//
// Values reach Python as:
//
//	Postgres                          Python
//	NULL                              None
//	boolean                           bool
//	smallint, integer, bigint         int
//	real, double precision            float
//	numeric                           decimal.Decimal, scale kept (12.50), NaN and ±Infinity too
//	text, varchar, char, enums        str
//	timestamptz                       str, RFC 3339 in UTC: "2024-05-01T09:30:00Z", "...09:30:00.25Z"
//	timestamp                         str without offset: "2024-05-01T09:30:00"
//	date                              str "2024-05-01"
//	time                              str "09:30:00"
//	±infinity (timestamps, dates)     str "infinity", "-infinity"
//	json, jsonb                       what json.loads returns: dict, list, str, int, float, ...
//	bytea                             bytes
//	uuid                              str
//	arrays                            list, elements mapped as above
//	anything else (interval, inet)    str in Postgres' text form
//
// Values come back from Python as:
//
//	Python                            written as
//	None                              NULL (a JSON null read from json/jsonb comes back as NULL too)
//	bool                              boolean
//	int                               bigint; beyond 64 bits, its digits as a decimal
//	float                             double precision
//	decimal.Decimal                   its exact digits (Go json.Number): a number for Elasticsearch,
//	                                  cast by Postgres into the target column's type
//	str                               text, cast by Postgres into the target column's type
//	bytes, bytearray                  bytea
//	dict                              json (keys in order, floats as Python writes them)
//	list, tuple                       an array or a JSON array: whatever the target column is
//	datetime, date, time              str (isoformat)
//	uuid.UUID, str and int Enums      str, int
//	set, complex, other objects       an error naming the column and the row
//
// A column is typed by its values in each batch: a column of one kind gets that kind's type
// above, other mixes are written as text. Two exceptions keep an identity transform's output
// equal to legacy mode's: a column that keeps the name of a json or jsonb reader column goes
// back as JSON whatever json.loads made of it (a str is a JSON string), and a column that keeps
// the name of a timestamptz, timestamp, date, smallint or integer reader column and still
// holds values in the form Python got them goes back as that type. The Postgres sink casts a
// column whose type differs from the target column's (text to timestamptz, uuid or an enum,
// bigint to integer), so a timestamp a task builds as a str in RFC 3339 lands in a
// timestamptz column. A str written into a json or jsonb column that did not come from one
// must be JSON text. Known differences from legacy mode: a float inside json keeps Python's
// digits (jsonb 1.50 comes back 1.5, equal as jsonb), a json column loses its whitespace, and
// a JSON null becomes SQL NULL.
//
// # Limits and failures
//
// Each batch's trip through the tasks is bounded by spec.transformTimeout (60s by default),
// and so is the worker's start (compiling the tasks, running setup). At the limit the worker
// gets SIGINT, which raises KeyboardInterrupt where the task is, so that the error can name
// the task and the row, and is killed two seconds later at the latest. Its address space is
// limited with RLIMIT_AS (1 GiB by default, Options.MemoryLimit): an allocation beyond it
// raises MemoryError. A run whose transforms raise an exception, return something other than
// a dict, a list of dicts or None, exceed a limit, or drop a key column fails with a
// business error naming the task, the reader row by its key columns and, for an exception,
// its type and the lines of the task's code it went through (at most 2 KB); the batch is not
// written. An error carries no value of a row but its key: not the exception's message,
// which may quote one (ValueError(f"bad email {row['email']}")), nor a value's repr. A
// worker killed from
// outside (a signal it did not get from the runner) is an infrastructure error: the batch is
// retried and a new worker started.
package python
