# Sluice's Python worker: the child process that runs a pipeline's Python tasks.
#
# The runner (runner/transform/python) starts one worker per run and talks to it over its
# stdin and stdout in frames: a 4-byte little-endian payload length, a 1-byte kind, then the
# payload, which is marshal data (version 4). See the Go package's documentation for the
# protocol and for how values are typed.
#
# This file must run on the image's python3 (3.11) with the standard library only.

import builtins
import datetime
import decimal
import gc
import json
import linecache
import marshal
import os
import signal
import struct
import sys
import traceback
import uuid

_HEADER = struct.Struct("<IB")
_VERSION = 4  # the marshal format the Go side reads and writes

# Frame kinds, mirrored in protocol.go.
_INIT, _BATCH = ord("I"), ord("B")
_READY, _RESULT, _ERROR = ord("K"), ord("R"), ord("E")

# Column conversions the runner asks for (kinds of protocol.go).
_NUMERIC, _JSON, _NUMERIC_ARRAY, _JSON_ARRAY = 1, 2, 3, 4

_FRAMES_LIMIT = 2048
_LINE_LIMIT = 200


class _Failure(Exception):
    """A failure reported to the runner in an error frame.

    What it carries leaves the runner in the run's status and logs, so it holds no row value:
    for an exception, its type and the frames of the task's code (file, line, function and
    source line: the tenant's code, not data), never its message, which may quote a row
    (ValueError(f"bad email {row['email']}")), nor a value's repr.
    """

    def __init__(self, kind, message, task="", row=-1, frames=""):
        super().__init__(message)
        self.info = {"kind": kind, "message": message, "task": task, "row": row, "frames": frames}


def _tail(text):
    """The last lines of text, at most _FRAMES_LIMIT characters."""
    if len(text) <= _FRAMES_LIMIT:
        return text
    cut = text[-_FRAMES_LIMIT:]
    nl = cut.find("\n")
    if 0 <= nl < len(cut) - 1:
        cut = cut[nl + 1:]
    return "...\n" + cut


def _frames(exc):
    """The frames of exc's traceback that run a task's code, innermost last: where the task
    was, and the line of its code that called into the library that raised."""
    lines = []
    for fs in traceback.extract_tb(exc.__traceback__):
        if not fs.filename.startswith("<task "):
            continue
        lines.append('  File "%s", line %s, in %s' % (fs.filename, fs.lineno, fs.name))
        src = (fs.line or "").strip()
        if src:
            lines.append("    " + (src if len(src) <= _LINE_LIMIT else src[:_LINE_LIMIT] + "..."))
    return _tail("\n".join(lines))


def _type_name(exc):
    """exc's type, qualified by its module unless built in or the task's own. A class made at
    run time could be named after data: only identifier characters are kept."""
    t = type(exc)
    name = t.__qualname__
    if t.__module__ not in ("builtins", "sluice_task", "__main__"):
        name = "%s.%s" % (t.__module__, name)
    name = "".join(c if c.isascii() and (c.isalnum() or c in "._") else "?" for c in name)
    return name[:100]


def _describe(exc):
    """The exception's type, and its message only when the worker raised it with a message
    of its own that quotes no value (sluice.Delete's)."""
    if getattr(exc, "_sluice_safe", False):
        return "%s: %s" % (_type_name(exc), exc)
    return _type_name(exc)


def _task_failure(name, row, exc):
    if isinstance(exc, MemoryError):
        return _Failure("memory", "MemoryError", name, row, _frames(exc))
    if isinstance(exc, KeyboardInterrupt):
        return _Failure("interrupted", "interrupted", name, row, _frames(exc))
    return _Failure("exception", _describe(exc), name, row, _frames(exc))


def _bad_return(name, row, what):
    return _Failure("return", what, name, row)


class Delete:
    """What a transform returns to delete a row's key from the sink: sluice.Delete(row).

    Only the sink key columns of the row matter. A Delete goes to the sink as it is: later
    tasks do not see it. It is a class of the worker's own, so no other return value can be
    taken for a delete.
    """

    __slots__ = ("row",)

    def __init__(self, row):
        if not isinstance(row, dict):
            e = TypeError("sluice.Delete takes a dict with the sink key columns, not %s" % type(row).__name__)
            e._sluice_safe = True  # a type name, no value: the report may quote it
            raise e
        self.row = row

    def __repr__(self):
        return "sluice.Delete(%r)" % (self.row,)


def _module():
    """The sluice module the tasks import: import sluice; return sluice.Delete(row)."""
    import types  # noqa: PLC0415 -- needed only here
    m = types.ModuleType("sluice", "What Sluice's python tasks may use.")
    m.Delete = Delete
    sys.modules["sluice"] = m


def _run(name, fn, rows, origin, dels):
    """Applies one task to every row. origin maps rows to reader rows (None: the identity);
    dels says rows holds Deletes of an earlier task, which pass through untouched.

    The first loop is the hot path: one dict per row, so the output is row for row and the
    origin does not change. The first row that returns anything else moves to the second loop,
    which tracks where each output row came from.
    """
    out = []
    app = out.append
    x = None
    j = 0
    if not dels:
        try:
            for r in rows:
                x = fn(r)
                if x.__class__ is not dict:
                    break
                app(x)
            else:
                return out, origin, False
        except BaseException as e:  # noqa: B036 -- KeyboardInterrupt is the timeout, reported too
            i = len(out)
            raise _task_failure(name, i if origin is None else origin[i], e) from None
        j = len(out)

    def call(j):
        r = rows[j]
        if r.__class__ is Delete:
            return r
        try:
            return fn(r)
        except BaseException as e:  # noqa: B036
            raise _task_failure(name, j if origin is None else origin[j], e) from None

    if dels:
        x = call(0)
    neworigin = list(range(j)) if origin is None else origin[:j]
    oapp = neworigin.append
    n = len(rows)
    while True:
        src = j if origin is None else origin[j]
        if x is None:
            pass
        elif isinstance(x, dict):
            app(x if x.__class__ is dict else dict(x))
            oapp(src)
        elif x.__class__ is Delete:
            app(x)
            oapp(src)
            dels = True
        elif isinstance(x, (list, tuple)):
            for k, item in enumerate(x):
                if item.__class__ is Delete:
                    dels = True
                elif not isinstance(item, dict):
                    raise _bad_return(name, src, "a list whose item %d is %s, not a dict" % (k, type(item).__name__))
                elif item.__class__ is not dict:
                    item = dict(item)
                app(item)
                oapp(src)
        else:
            raise _bad_return(name, src, type(x).__name__)
        j += 1
        if j == n:
            return out, neworigin, dels
        x = call(j)


def _decimals(v):
    if v is None:
        return None
    if v.__class__ is list:
        return [_decimals(x) for x in v]
    return decimal.Decimal(v)


def _jsons(v):
    if v is None:
        return None
    if v.__class__ is list:
        return [_jsons(x) for x in v]
    return json.loads(v)


def _convert(rows, col, kind):
    """Turns a column's wire values into their Python types (see kinds)."""
    if kind == _NUMERIC:
        conv = decimal.Decimal
    elif kind == _JSON:
        conv = json.loads
    elif kind == _NUMERIC_ARRAY:
        conv = _decimals
    elif kind == _JSON_ARRAY:
        conv = _jsons
    else:
        raise _Failure("protocol", "unknown column kind %r" % (kind,))
    for r in rows:
        v = r[col]
        if v is not None:
            r[col] = conv(v)


_PLAIN = frozenset((str, int, float, bool, bytes, type(None)))


class _Unsupported(Exception):
    pass


def _value(v):
    """A value of a type marshal cannot carry, or a container, made of types the runner reads."""
    t = v.__class__
    if t in _PLAIN:
        return v
    if t is dict or isinstance(v, dict):
        d = {}
        for k, x in v.items():
            if not isinstance(k, str):
                raise _Unsupported("a dict key of type %s (keys must be strings)" % type(k).__name__)
            d[str.__str__(k)] = _value(x)
        return d
    if t is tuple and len(v) == 2 and v[0] is Ellipsis:
        return v  # a decimal already converted by _decimal_columns
    if t is list or t is tuple:
        return [_value(x) for x in v]
    if isinstance(v, decimal.Decimal):
        # A 2-tuple (Ellipsis, text) is the protocol's decimal: the runner makes it a
        # Postgres numeric (str may use an exponent: 1E+3).
        return (Ellipsis, str(v))
    if isinstance(v, (datetime.datetime, datetime.date, datetime.time)):
        return v.isoformat()
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return float(v)
    if isinstance(v, str):
        return str.__str__(v)  # a str Enum's str() is its name, not its value
    if isinstance(v, (bytearray, memoryview)):
        return bytes(v)
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, (list, tuple)):
        return [_value(x) for x in v]
    if isinstance(v, (set, frozenset)):
        raise _Unsupported("a %s (it has no order; return a sorted list)" % t.__name__)
    raise _Unsupported("a value of type %s" % t.__name__)


class _BadName(Exception):
    """A column name that is not a str: the report gives its type, not its value."""


def _normalize(rows, origin):
    """Copies the output rows with every value in a type the runner reads. A failure names the
    column (a str key of the task's row) and the type at fault, never a value."""
    out = []
    for i, r in enumerate(rows):
        d = {}
        k = None
        try:
            for k, v in r.items():
                if k.__class__ is not str:
                    if not isinstance(k, str):
                        raise _BadName("column names include one of type %s (names must be strings)" % type(k).__name__)
                    k = str.__str__(k)
                d[k] = v if v.__class__ in _PLAIN else _value(v)
        except _BadName as e:
            raise _Failure("value", str(e), row=i if origin is None else origin[i]) from None
        except _Unsupported as e:
            raise _Failure("value", "column %r holds %s" % (k, e), row=i if origin is None else origin[i]) from None
        except RecursionError:
            raise _Failure("value", "column %r holds a value nested too deeply (or containing itself)" % (k,),
                           row=i if origin is None else origin[i]) from None
        out.append(d)
    return out


def _decimal_columns(rows):
    """Turns Decimals into the protocol's decimal in place, in the columns where the first
    row has one: the common case of a numeric column passed through, at a fraction of
    _normalize's cost. A row seen twice (returned twice by a task) is left as it is."""
    D = decimal.Decimal
    cols = [k for k, v in rows[0].items() if v.__class__ is D]
    for c in cols:
        for r in rows:
            v = r.get(c)
            if v.__class__ is D:
                r[c] = (Ellipsis, str(v))
    return bool(cols)


def _batch(tasks, payload):
    rows, kinds = marshal.loads(payload)
    for col, kind in kinds:
        _convert(rows, col, kind)
    origin = None
    dels = False
    for name, fn in tasks:
        rows, origin, dels = _run(name, fn, rows, origin, dels)
    result = (rows, origin)
    if dels:
        # The indexes of the deletes, which travel as their rows.
        deletes = []
        for i, r in enumerate(rows):
            if r.__class__ is Delete:
                deletes.append(i)
                rows[i] = r.row
        result = (rows, origin, deletes)
    try:
        return marshal.dumps(result, _VERSION)
    except ValueError:
        pass
    # Decimals, datetimes and other types marshal does not know: convert them.
    if rows and _decimal_columns(rows):
        try:
            return marshal.dumps(result, _VERSION)
        except ValueError:
            pass
    return marshal.dumps((_normalize(rows, origin), *result[1:]), _VERSION)


def _load(tasks):
    """Compiles each task in a namespace of its own and runs its setup()."""
    loaded = []
    for name, code in tasks:
        filename = "<task %s>" % name
        # Tracebacks show the lines of the task's code: linecache serves them by file name.
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        ns = {"__name__": "sluice_task", "__builtins__": builtins}
        try:
            exec(compile(code, filename, "exec", dont_inherit=True), ns)
        except SyntaxError as e:
            # The compiler's message and the line it quotes are about the task's code.
            msg = "%s: %s at line %s" % (type(e).__name__, e.msg, e.lineno)
            raise _Failure("compile", msg, name, frames=_tail("".join(traceback.format_exception_only(type(e), e)))) from None
        except BaseException as e:  # noqa: B036
            f = _task_failure(name, -1, e)
            f.info["kind"] = "load" if f.info["kind"] == "exception" else f.info["kind"]
            raise f from None
        fn = ns.get("transform")
        if not callable(fn):
            raise _Failure("define", "the code defines no transform(row) function", name)
        setup = ns.get("setup")
        if setup is not None:
            if not callable(setup):
                raise _Failure("define", "setup is not a function", name)
            try:
                setup()
            except BaseException as e:  # noqa: B036
                f = _task_failure(name, -1, e)
                f.info["kind"] = "setup" if f.info["kind"] == "exception" else f.info["kind"]
                raise f from None
        loaded.append((name, fn))
    return loaded


def _main():
    # The frames travel on the original stdin and stdout; fd 0 becomes /dev/null and fd 1 a
    # copy of stderr, so that a print() in a task (or a C library writing to fd 1) ends up in
    # the runner's log instead of in the middle of a frame. os.dup makes non-inheritable
    # descriptors, so a subprocess of a task does not get the protocol pipes.
    fin = os.fdopen(os.dup(0), "rb", buffering=1 << 16)
    fout = os.fdopen(os.dup(1), "wb", buffering=1 << 16)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    # Descriptors the runner inherited without close-on-exec (from whatever started it) passed
    # on to us: close them before any task's code runs.
    keep = (fin.fileno(), fout.fileno())
    try:
        fds = [int(fd) for fd in os.listdir("/proc/self/fd")]
    except OSError:
        fds = range(3, 1024)
    for fd in fds:
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass
    # A SIGINT from the runner means "time is up": it interrupts the task where it is, so that
    # the error names the task and the row; the runner kills the worker right after.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def send(kind, payload):
        fout.write(_HEADER.pack(len(payload), kind))
        fout.write(payload)
        fout.flush()

    def receive():
        header = fin.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return None, None
        n, kind = _HEADER.unpack(header)
        payload = fin.read(n)
        if len(payload) < n:
            return None, None
        return kind, payload

    def fail(e):
        send(_ERROR, marshal.dumps(e.info, _VERSION))

    kind, payload = receive()
    if kind != _INIT:
        return 2
    init = marshal.loads(payload)
    limit = init.get("memory", 0)
    if limit > 0:
        import resource  # noqa: PLC0415 -- Linux only, needed only here
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    _module()
    try:
        tasks = _load(init["tasks"])
    except _Failure as e:
        fail(e)
        return 0
    # Objects that live for the whole run (modules, the tasks' code and setup data) leave the
    # collector's generations. During a batch the collector is off: a batch allocates its
    # rows by the thousand and frees them by reference counting, and the collections the
    # allocations would trigger cost about a tenth of the batch. The young generations are
    # collected after each answer instead, while the runner reads it (cycles a task makes).
    gc.collect()
    gc.freeze()
    gc.disable()
    send(_READY, marshal.dumps({"python": sys.version.split()[0]}, _VERSION))
    batches = 0

    while True:
        kind, payload = receive()
        if kind is None:
            return 0  # the runner closed the pipe: the run is over
        if kind != _BATCH:
            fail(_Failure("protocol", "unexpected frame kind %r" % (kind,)))
            return 2
        try:
            out = _batch(tasks, payload)
        except _Failure as e:
            fail(e)
            continue
        except MemoryError:
            fail(_Failure("memory", "MemoryError"))
            continue
        except KeyboardInterrupt:
            fail(_Failure("interrupted", "interrupted"))
            continue
        payload = None
        send(_RESULT, out)
        out = None
        batches += 1
        gc.collect(2 if batches % 100 == 0 else 1)


if __name__ == "__main__":
    sys.exit(_main())
