package python

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/sluice-dev/sluice/runner/batch"
	"github.com/sluice-dev/sluice/runner/failure"
	"github.com/sluice-dev/sluice/runner/sandbox"
)

// Defaults of Options.
const (
	DefaultPython      = "python3"
	DefaultTimeout     = 60 * time.Second
	DefaultMemoryLimit = 1 << 30
)

// Task is one python task of a plan: its name (for errors) and its code.
type Task struct {
	Name string
	Code string
}

// Options configure a Stage; the zero value of each field is its default.
type Options struct {
	// Python is the interpreter: a path, or a name looked up in the runner's PATH
	// (DefaultPython).
	Python string
	// Timeout bounds each batch's trip through all the tasks, and the worker's start
	// (compiling the tasks and running their setup) (spec.transformTimeout, DefaultTimeout).
	Timeout time.Duration
	// MemoryLimit is the worker's address space limit in bytes (RLIMIT_AS), DefaultMemoryLimit
	// when 0; negative sets none.
	MemoryLimit int64
	// Keys are the reader's key columns: an error names the reader row it is about by them.
	Keys []string
	// SinkKey are the columns every output row must have, not None: the sink's upsert key.
	SinkKey []string
	// Log receives the worker's start and what tasks print; nil discards.
	Log *slog.Logger
	// AllowUnsandboxed lets the worker run unconfined on a kernel that cannot sandbox it
	// (see package sandbox for what is required); when off, Start fails with a business
	// error naming what the kernel lacks. Stage.Confinement tells which happened.
	AllowUnsandboxed bool

	// detect replaces sandbox.Detect in tests.
	detect func() sandbox.Capabilities
}

func (o *Options) defaults() {
	if o.Python == "" {
		o.Python = DefaultPython
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.MemoryLimit == 0 {
		o.MemoryLimit = DefaultMemoryLimit
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
}

// Stage runs a plan's Python tasks, in order, in one python3 worker process. It implements
// transform.Stage. It is used by one goroutine at a time.
type Stage struct {
	tasks []Task
	opts  Options
	plan  sandbox.Plan
	w     *worker
	enc   encoder
	dec   decoder
	out   output
	// scratch renders values as text; width is the last batch's column count, to size the
	// next batch's rows at once.
	scratch []byte
	width   int
}

// Start starts the worker: it compiles every task in a namespace of its own and runs their
// setup() functions. An error there (a syntax error, an exception in setup, no transform
// function, no interpreter) is a business error, before anything is read.
//
// The worker runs sandboxed (package sandbox): it may read its interpreter's installation and
// the shared libraries, write only a working directory of its own, open no socket, and
// neither signal nor trace the runner. On a kernel that cannot enforce that, Start fails with
// a business error unless opts.AllowUnsandboxed is set.
func Start(ctx context.Context, tasks []Task, opts Options) (*Stage, error) {
	opts.defaults()
	plan, err := decidePlan(&opts)
	if err != nil {
		return nil, err
	}
	s := &Stage{tasks: tasks, opts: opts, plan: plan}
	if err := s.start(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Name returns "python": the errors of Apply name the task.
func (s *Stage) Name() string { return "python" }

// Close stops the worker.
func (s *Stage) Close() error {
	if s.w != nil {
		s.w.stop()
		s.w = nil
	}
	return nil
}

func (s *Stage) start(ctx context.Context) error {
	w, err := startWorker(ctx, &s.opts, s.plan, s.opts.Log)
	if err != nil {
		var se *startError
		if errors.As(err, &se) {
			return failure.Business(err)
		}
		return failure.Infra(err)
	}
	e := &s.enc
	e.buf = append(e.buf[:0], make([]byte, headerSize)...)
	e.dict()
	_ = e.str("tasks")
	e.list(len(s.tasks))
	for _, t := range s.tasks {
		e.tuple(2)
		if err := e.str(t.Name); err != nil {
			w.kill()
			return failure.Business(fmt.Errorf("task %q: the name is not valid UTF-8", t.Name))
		}
		if err := e.str(t.Code); err != nil {
			w.kill()
			return failure.Business(fmt.Errorf("task %q: the code is not valid UTF-8", t.Name))
		}
	}
	_ = e.str("memory")
	e.int(max(s.opts.MemoryLimit, 0))
	e.endDict()
	frame := finishFrame(e.buf, frameInit)

	kind, payload, err := w.roundTrip(ctx, frame, s.opts.Timeout)
	switch {
	case errors.Is(err, errTimeout):
		info := w.interrupt()
		w.kill()
		msg := fmt.Sprintf("the python tasks did not start within the transform timeout of %s", s.opts.Timeout)
		if f, ok := s.decodeFailure(info); ok && f.task != "" {
			msg += fmt.Sprintf(": task %q was still loading or in setup()", f.task)
			if f.frames != "" {
				msg += "\n" + f.frames
			}
		}
		return failure.Business(errors.New(msg))
	case err != nil && ctx.Err() != nil:
		w.kill()
		return err
	case err != nil:
		report, memory, _ := w.exitReport()
		w.closePipes()
		if memory {
			return failure.Business(fmt.Errorf("the python worker ran out of memory while loading the tasks (limit %s): %s",
				s.memoryLimit(), report))
		}
		return failure.Business(fmt.Errorf("the python worker ended while loading the tasks: %s", report))
	case kind == frameError:
		f, ok := s.decodeFailure(payload)
		w.kill()
		if !ok {
			return failure.Business(errors.New("the python worker failed while loading the tasks"))
		}
		return failure.Business(s.startFailure(f))
	case kind != frameReady:
		w.kill()
		return failure.Business(fmt.Errorf("the python worker answered the tasks with a frame of kind %q", kind))
	}
	version := ""
	s.dec.reset(payload)
	if v, err := s.dec.value(); err == nil {
		if d, ok := v.(*pyDict); ok {
			version, _ = d.get("python").(string)
		}
	}
	if s.plan.Confined() {
		s.opts.Log.Info("python worker started", "pid", w.cmd.Process.Pid, "python", version, "tasks", len(s.tasks),
			"sandbox", s.plan.String())
	} else {
		s.opts.Log.Warn("python worker started unsandboxed", "pid", w.cmd.Process.Pid, "python", version,
			"tasks", len(s.tasks), "sandbox", s.plan.String())
	}
	s.w = w
	return nil
}

// finishFrame writes the header of a frame whose payload follows headerSize reserved bytes.
func finishFrame(buf []byte, kind byte) []byte {
	binary.LittleEndian.PutUint32(buf, uint32(len(buf)-headerSize))
	buf[4] = kind
	return buf
}

// Apply sends the batch through the tasks. Output rows have the union of the tasks' output
// keys as columns, in the order they first appear; a row without one of them has NULL there.
func (s *Stage) Apply(ctx context.Context, in *batch.Batch) (*batch.Batch, error) {
	if in.Len() == 0 {
		return in, nil
	}
	if in.Raw != nil {
		return nil, errors.New("python stage: raw batches cannot be transformed")
	}
	if s.w == nil {
		if err := s.start(ctx); err != nil {
			return nil, err
		}
	}
	cols := make([]inColumn, len(in.Columns))
	for i, c := range in.Columns {
		cols[i] = inColumn{name: c.Name, oid: c.Type, style: styleOf(c.Type)}
	}
	e := &s.enc
	e.buf = append(e.buf[:0], make([]byte, headerSize)...)
	var rerr *rowError
	if s.scratch, rerr = encodeBatch(e, in, cols, s.scratch); rerr != nil {
		return nil, failure.Business(&RowFailure{Row: rerr.row, Class: "encode",
			err: fmt.Errorf("reader row (%s), column %q: %w", s.rowKey(in, cols, rerr.row), rerr.col, rerr.err)})
	}
	frame := finishFrame(e.buf, frameBatch)
	// Memory that the worker's answer replaces: a batch's frame can be megabytes.
	defer s.trim()

	kind, payload, err := s.w.roundTrip(ctx, frame, s.opts.Timeout)
	if err != nil {
		return nil, s.lost(ctx, err, in, cols)
	}
	switch kind {
	case frameResult:
		return s.result(in, cols, payload)
	case frameError:
		f, ok := s.decodeFailure(payload)
		if !ok || !rowKind(f.kind) || f.row < 0 || f.row >= in.Len() {
			// The worker may be in any state after such a failure (out of memory,
			// interrupted): it goes, the next batch starts another.
			s.w.kill()
			s.w = nil
		}
		if !ok {
			return nil, failure.Business(errors.New("the python worker failed and its report does not decode"))
		}
		err := s.batchFailure(f, in, cols)
		if rowKind(f.kind) && f.row >= 0 && f.row < in.Len() {
			// A task's exception or return value for one row: the worker caught it and
			// waits for the next batch.
			class := f.kind
			if f.kind == "exception" {
				class = f.message
			}
			err = &RowFailure{Row: f.row, Task: f.task, Class: class, err: err}
		}
		return nil, failure.Business(err)
	}
	s.w.kill()
	s.w = nil
	return nil, failure.Business(fmt.Errorf("the python worker answered a batch with a frame of kind %q", kind))
}

// trim drops buffers far bigger than a typical batch needs.
func (s *Stage) trim() {
	if cap(s.enc.buf) > 64<<20 {
		s.enc.buf = nil
	}
	if s.w != nil && cap(s.w.buf) > 64<<20 {
		s.w.buf = nil
	}
}

// lost handles a round trip that failed: the time limit, a cancelled run, or a worker that
// died.
func (s *Stage) lost(ctx context.Context, err error, in *batch.Batch, cols []inColumn) error {
	w := s.w
	s.w = nil
	switch {
	case errors.Is(err, errTimeout):
		info := w.interrupt()
		w.kill()
		msg := fmt.Sprintf("the python tasks exceeded the transform timeout of %s on a batch of %d rows", s.opts.Timeout, in.Len())
		if f, ok := s.decodeFailure(info); ok && f.task != "" {
			msg += fmt.Sprintf(": task %q was at reader row (%s)", f.task, s.rowKey(in, cols, f.row))
			if f.frames != "" {
				msg += "\n" + f.frames
			}
		}
		return failure.Business(errors.New(msg))
	case ctx.Err() != nil:
		w.kill()
		return err
	}
	report, memory, signaled := w.exitReport()
	w.closePipes()
	switch {
	case memory:
		return failure.Business(fmt.Errorf("the python worker ran out of memory (limit %s) on a batch of %d rows: %s",
			s.memoryLimit(), in.Len(), report))
	case signaled:
		// Killed from outside (the kernel's OOM killer, a crash in a C extension): the next
		// batch starts a new worker, and the executor's retries decide.
		return failure.Infra(fmt.Errorf("the python worker died during a batch: %s", report))
	}
	return failure.Business(fmt.Errorf("the python worker ended during a batch (a task called os._exit?): %s", report))
}

// result decodes the worker's answer into the output batch.
func (s *Stage) result(in *batch.Batch, cols []inColumn, payload []byte) (*batch.Batch, error) {
	out := &s.out
	*out = output{cols: out.cols[:0], kinds: out.kinds[:0]}
	s.dec.reset(payload)
	if err := s.dec.result(out, s.width); err != nil {
		var ve *valueError
		if errors.As(err, &ve) {
			row := out.source(ve.row)
			err := fmt.Errorf("the python tasks returned, for reader row (%s), a row whose %v", s.rowKey(in, cols, row), ve)
			if row >= 0 && row < in.Len() {
				err = &RowFailure{Row: row, Class: "value", err: err}
			}
			return nil, failure.Business(err)
		}
		return nil, failure.Business(fmt.Errorf("the python tasks' output: %w", err))
	}
	s.width = len(out.cols)
	if len(out.rows) == 0 {
		// Every row was dropped. The batch keeps the reader's columns so that it still has
		// the sink's key columns: the checkpoint moves on with nothing written.
		return &batch.Batch{Columns: in.Columns, Rows: [][]any{}}, nil
	}
	for _, k := range s.opts.SinkKey {
		c := -1
		for i, name := range out.cols {
			if name == k {
				c = i
				break
			}
		}
		for i, row := range out.rows {
			if c < 0 || row[c] == nil {
				return nil, failure.Business(fmt.Errorf("after the python tasks, the row from reader row (%s) has no key column %q "+
					"(missing or None): every row reaching the sink needs its key (%s)",
					s.rowKey(in, cols, out.source(i)), k, strings.Join(s.opts.SinkKey, ", ")))
			}
		}
	}
	b := &batch.Batch{Columns: make([]batch.Column, len(out.cols)), Rows: out.rows}
	for c, name := range out.cols {
		j := in.Index(name)
		switch {
		case j >= 0 && isJSON(in.Columns[j].Type):
			if row, err := jsonColumn(out.rows, c); err != nil {
				return nil, failure.Business(fmt.Errorf("the python tasks returned, for reader row (%s), a row whose column %q %w",
					s.rowKey(in, cols, out.source(row)), name, err))
			}
			b.Columns[c] = batch.Column{Name: name, Type: in.Columns[j].Type}
		case j >= 0 && restoreType(in.Columns[j].Type, out.kinds[c], out.rows, c):
			b.Columns[c] = batch.Column{Name: name, Type: in.Columns[j].Type}
		default:
			b.Columns[c] = batch.Column{Name: name, Type: columnType(out.kinds[c], out.rows, c)}
		}
	}
	b.Deleted = out.deleted(in)
	b.Origin = out.origin
	// The rows now belong to the batch.
	out.rows = nil
	return b, nil
}

// deleted flags the output rows that delete their key: a task's sluice.Delete, and every row
// made from a reader row that was already a delete (target.deleteWhen).
func (o *output) deleted(in *batch.Batch) []bool {
	if len(o.deletes) == 0 && in.Deleted == nil {
		return nil
	}
	flags := make([]bool, len(o.rows))
	for _, i := range o.deletes {
		flags[i] = true
	}
	if in.Deleted != nil {
		for i := range flags {
			if in.Deleted[o.source(i)] {
				flags[i] = true
			}
		}
	}
	return flags
}

// source returns the input row of output row i.
func (o *output) source(i int) int {
	if o.origin == nil {
		return i
	}
	if i < 0 || i >= len(o.origin) {
		return -1
	}
	return o.origin[i]
}

// columnType gives a column of Python values its Postgres type: the type of its values when
// they are all of one kind, text for decimals (json.Number, see decimalValue) and for
// integers mixed with decimals, text when kinds mix otherwise (every value is then rendered
// as text, which the sink casts to the target's type), 0 for lists (the sink writes them as
// the target's array or JSON type) and for a column of None only.
func columnType(kinds uint16, rows [][]any, c int) uint32 {
	switch kinds {
	case 0, kList:
		return 0
	case kBool:
		return pgtype.BoolOID
	case kInt:
		return pgtype.Int8OID
	case kNumeric:
		return pgtype.TextOID
	case kFloat:
		return pgtype.Float8OID
	case kText:
		return pgtype.TextOID
	case kBytes:
		return pgtype.ByteaOID
	case kJSON:
		return pgtype.JSONOID
	case kInt | kNumeric:
		for _, row := range rows {
			if v, ok := row[c].(int64); ok {
				row[c] = json.Number(strconv.FormatInt(v, 10))
			}
		}
		return pgtype.TextOID
	}
	for _, row := range rows {
		if row[c] != nil {
			row[c] = textOf(row[c])
		}
	}
	return pgtype.TextOID
}

func isJSON(oid uint32) bool { return oid == pgtype.JSONOID || oid == pgtype.JSONBOID }

// jsonColumn writes back a column that came from a json or jsonb column as JSON, whatever
// its values became: json.loads gave the task a dict, a list, a str, a number or a bool, and
// the same value goes back as the same JSON (a str as a JSON string, not as JSON text).
// It returns the output row of a value JSON cannot carry.
func jsonColumn(rows [][]any, c int) (int, error) {
	for i, row := range rows {
		switch v := row[c].(type) {
		case nil, json.RawMessage:
		default:
			raw, err := appendJSON(nil, v)
			if err != nil {
				return i, err
			}
			row[c] = json.RawMessage(raw)
		}
	}
	return 0, nil
}

// restoreType gives a column that keeps a reader column's name its reader type back when its
// values still fit it: times still in the form Python got them (RFC 3339, or the date), and
// integers of a smallint or integer column still in range. The sinks then write them as
// legacy mode does (Postgres parsing a timestamp from text costs it a microsecond a value,
// several times what parsing it here costs); a value that does not fit leaves the column to
// columnType, and Postgres casts it.
func restoreType(oid uint32, kinds uint16, rows [][]any, c int) bool {
	switch {
	case kinds == kText && (oid == pgtype.TimestamptzOID || oid == pgtype.TimestampOID || oid == pgtype.DateOID):
		times := make([]any, len(rows))
		for i, row := range rows {
			if row[c] == nil {
				continue
			}
			t, ok := parseTime(row[c].(string), oid)
			if !ok {
				return false
			}
			times[i] = t
		}
		for i, row := range rows {
			row[c] = times[i]
		}
		return true
	case kinds == kInt && (oid == pgtype.Int2OID || oid == pgtype.Int4OID):
		limit := int64(math.MaxInt32)
		if oid == pgtype.Int2OID {
			limit = math.MaxInt16
		}
		for _, row := range rows {
			if v, ok := row[c].(int64); ok && (v > limit || v < -limit-1) {
				return false
			}
		}
		return true
	}
	return false
}

// parseTime reads a time in the form encode.go gave it to Python, or with another offset
// (datetime.isoformat), or ±infinity.
func parseTime(s string, oid uint32) (any, bool) {
	inf := pgtype.Finite
	switch s {
	case "infinity":
		inf = pgtype.Infinity
	case "-infinity":
		inf = pgtype.NegativeInfinity
	}
	if inf != pgtype.Finite {
		switch oid {
		case pgtype.TimestamptzOID:
			return pgtype.Timestamptz{InfinityModifier: inf, Valid: true}, true
		case pgtype.TimestampOID:
			return pgtype.Timestamp{InfinityModifier: inf, Valid: true}, true
		}
		return pgtype.Date{InfinityModifier: inf, Valid: true}, true
	}
	// time.Parse reads RFC 3339 on a fast path of its own: a timestamp without time zone is
	// read as one in UTC, which keeps its wall time.
	var t time.Time
	var err error
	switch oid {
	case pgtype.TimestamptzOID:
		t, err = time.Parse(time.RFC3339Nano, s)
		t = t.UTC()
	case pgtype.TimestampOID:
		if len(s) < len(layoutDate) || s[len(s)-1] == 'Z' {
			return nil, false
		}
		t, err = time.Parse(time.RFC3339Nano, s+"Z")
	default:
		t, err = time.Parse(layoutDate, s)
	}
	return t, err == nil
}

// textOf renders an output value in the text form Postgres reads for its type.
func textOf(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case int64:
		return strconv.FormatInt(v, 10)
	case float64:
		switch {
		case v != v:
			return "NaN"
		case v > 0 && v*0.5 == v:
			return "Infinity"
		case v < 0 && v*0.5 == v:
			return "-Infinity"
		}
		return string(appendPyFloat(nil, v))
	case bool:
		return strconv.FormatBool(v)
	case json.Number:
		return string(v)
	case []byte:
		return `\x` + fmt.Sprintf("%x", v)
	case json.RawMessage:
		return string(v)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// rowKey renders input row i's key columns, "id=5".
func (s *Stage) rowKey(in *batch.Batch, cols []inColumn, i int) string {
	if i < 0 || i >= len(in.Rows) {
		return "unknown"
	}
	parts := make([]string, 0, len(s.opts.Keys))
	for _, k := range s.opts.Keys {
		if j := in.Index(k); j >= 0 {
			parts = append(parts, k+"="+keyText(in.Rows[i][j], &cols[j]))
		}
	}
	if len(parts) == 0 {
		return "row " + strconv.Itoa(i+1) + " of the batch"
	}
	return strings.Join(parts, ", ")
}

func (s *Stage) memoryLimit() string {
	if s.opts.MemoryLimit < 0 {
		return "none"
	}
	return formatBytes(s.opts.MemoryLimit)
}

func formatBytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}

// workerFailure is the worker's error frame. It carries no row value (worker.py's _Failure):
// for an exception, message is its type alone and frames are the task's lines it went
// through.
type workerFailure struct {
	kind, task, message, frames string
	row                         int
}

func (s *Stage) decodeFailure(payload []byte) (workerFailure, bool) {
	if payload == nil {
		return workerFailure{}, false
	}
	s.dec.reset(payload)
	v, err := s.dec.value()
	d, ok := v.(*pyDict)
	if err != nil || !ok {
		return workerFailure{}, false
	}
	f := workerFailure{row: -1}
	f.kind, _ = d.get("kind").(string)
	f.task, _ = d.get("task").(string)
	f.message, _ = d.get("message").(string)
	f.frames, _ = d.get("frames").(string)
	if r, ok := d.get("row").(int64); ok {
		f.row = int(r)
	}
	return f, true
}

func (d *pyDict) get(key string) any {
	for i, k := range d.keys {
		if k == key {
			return d.vals[i]
		}
	}
	return nil
}

// startFailure words a failure of the worker's start.
func (s *Stage) startFailure(f workerFailure) error {
	switch f.kind {
	case "compile":
		return fmt.Errorf("task %q does not compile: %s\n%s", f.task, f.message, f.frames)
	case "define":
		return fmt.Errorf("task %q: %s", f.task, f.message)
	case "load":
		return fmt.Errorf("task %q raised an exception when its code was loaded: %s", f.task, withFrames(f))
	case "setup":
		return fmt.Errorf("task %q: setup() raised an exception: %s", f.task, withFrames(f))
	case "memory":
		return fmt.Errorf("task %q ran out of memory while loading (limit %s): %s", f.task, s.memoryLimit(), withFrames(f))
	}
	return fmt.Errorf("the python worker failed while loading the tasks (%s): %s", f.kind, f.message)
}

// batchFailure words a failure of a batch, naming the task and the reader row by its key.
func (s *Stage) batchFailure(f workerFailure, in *batch.Batch, cols []inColumn) error {
	at := s.rowKey(in, cols, f.row)
	switch f.kind {
	case "exception":
		return fmt.Errorf("task %q raised an exception at reader row (%s): %s", f.task, at, withFrames(f))
	case "return":
		return fmt.Errorf("task %q returned %s for reader row (%s): transform must return a dict, a list of dicts or None",
			f.task, f.message, at)
	case "memory":
		if f.task == "" {
			return fmt.Errorf("the python worker ran out of memory (limit %s) on a batch of %d rows", s.memoryLimit(), in.Len())
		}
		return fmt.Errorf("task %q ran out of memory (limit %s) at reader row (%s): %s", f.task, s.memoryLimit(), at, withFrames(f))
	case "value":
		return fmt.Errorf("the python tasks returned, for reader row (%s), a row whose %s", at, f.message)
	case "interrupted":
		return fmt.Errorf("the python worker was interrupted (task %q, reader row (%s))", f.task, at)
	}
	return fmt.Errorf("the python worker failed (%s): %s", f.kind, f.message)
}

// withFrames is an exception's type, then the task's lines it went through.
func withFrames(f workerFailure) string {
	if f.frames == "" {
		return f.message
	}
	return f.message + "\n" + f.frames
}

// RowFailure is a failure of the python tasks caused by one reader row: a task raised for
// it, returned something that is not a row, or made a value the sink cannot take; or the
// row holds a value Python cannot be given. The run may reject the row (spec.errors) and
// transform the batch again without it: the worker keeps running.
type RowFailure struct {
	// Row is the reader row's index in the batch.
	Row int
	// Task is the task that failed ("" when no task ran yet).
	Task string
	// Class is the exception's type, or what failed: "return", "value", "encode".
	Class string
	err   error
}

func (e *RowFailure) Error() string { return e.err.Error() }
func (e *RowFailure) Unwrap() error { return e.err }

// rowKind reports whether a worker failure of kind is about one row, after which the worker
// carries on (worker.py's _Failure of a task's exception, return value or output value).
func rowKind(kind string) bool {
	switch kind {
	case "exception", "return", "value":
		return true
	}
	return false
}
