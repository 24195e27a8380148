"""The worker side of forkyard-pool's protocol, over the JSON-lines codec.

The wire (one JSON document per line, each way; forkyard-pool's
``src/protocol.rs`` is the authority)::

    parent -> worker  {"forkyard_ipc":1,"codec":"json-lines","sends":{...},"receives":{...}}
    worker -> parent  the same hello with "sends" and "receives" swapped
    worker -> parent  "Ready"
    parent -> worker  {"Task":{"id":7,"req":<request>}}
    worker -> parent  {"Done":{"id":7,"result":{"Ok":<response>}}}
                   or {"Done":{"id":7,"result":{"Err":{"kind":"ValueError","message":"bad input","detail":"Traceback ..."}}}}
    parent -> worker  {"Chunk":{"id":9,"items":[<request>,<request>,<request>]}}
    worker -> parent  {"Items":{"id":9,"results":[[0,{"Ok":<response>}],[1,{"Err":{...}}]]}}
                      (any number of these; every index answered once)
    parent -> worker  {"Cancel":{"id":10}}
    worker -> parent  {"Cancelled":{"id":10}}   (once stopped; nothing more for 10)
    parent -> worker  "Drain"    (answer what you have, then exit 0)

A Python worker cannot compute the Rust types' structural fingerprints, so it
declares the ones the parent announced: the parent's type check then trusts
this worker to speak them.

One asyncio event loop reads the channel, starts every task as it arrives
(the pool never sends more than ``max_in_flight_per_worker`` at once) and
writes each answer as its task ends. Answers that end together go out in one
write. Sync handlers run on a thread pool, so the loop keeps reading while
they work (and sees ``Cancel`` and ``Drain``).

An error answers with its kind, message and traceback (``detail``, kept to
its first 4 KiB and its last 12 KiB or so when longer than ``DETAIL_MAX``).
"""

import asyncio
import inspect
import json
import os
import socket
import sys
import threading
import traceback
from collections import deque
from queue import SimpleQueue

# forkyard-ipc's default frame limit: no parent sends a longer line.
DEFAULT_MAX_LINE = 16 * 1024 * 1024

# How often, at most, a chunk running on a thread (a sync handler) sends the
# results it has, so a worker that dies mid-chunk loses only the items since.
# (An async chunk sends them whenever it waits: see _Worker.add_result.)
PART_EVERY = 0.02

# The most bytes of an error's detail (its traceback) sent, as forkyard-pool's
# TaskError::DETAIL_MAX: a longer one keeps its head and its tail.
DETAIL_MAX = 16 * 1024

# TaskError::UNSENDABLE: the kind of a result that cannot be sent (over the
# frame limit, or with no JSON form).
UNSENDABLE = "Unsendable"
_DETAIL_HEAD = 4 * 1024


class TaskError(Exception):
    """Fails a task with an error kind and message of your choosing.

    ``raise TaskError("no such user", kind="NotFound")`` answers the task
    with kind ``NotFound`` and message ``no such user``: the Rust caller gets
    ``PoolError::Task(e)`` with ``e.kind() == Some("NotFound")``. Any other
    exception answers with its class as the kind (``ValueError``);
    ``TaskError`` is for kinds that are not a Python class. ``detail``
    replaces the traceback sent with it.
    """

    def __init__(self, message, kind="TaskError", detail=None):
        super().__init__(message)
        self.kind = kind
        self.detail = detail


def error_kind(error):
    """The kind a failed task answers with: the exception's class name,
    qualified with its module unless it is a builtin or defined in
    ``__main__`` (as Python's tracebacks print it: ``ValueError``,
    ``mymodule.NotFound``, ``Outer.Inner``); ``TaskError`` gives its own.
    """
    if isinstance(error, TaskError):
        return error.kind
    cls = type(error)
    kind = cls.__qualname__
    if cls.__module__ not in ("builtins", "__main__"):
        kind = f"{cls.__module__}.{kind}"
    return kind


def describe_error(error):
    """The text the Rust caller sees for a failed task (its ``TaskError``
    displayed): ``"<kind>: <message>"``, or the kind alone when the message
    is empty.
    """
    kind = error_kind(error)
    message = str(error)
    return f"{kind}: {message}" if message else kind


def bound_detail(detail):
    """``detail`` kept to at most ``DETAIL_MAX`` bytes of UTF-8: its first
    4 KiB and its end (where a traceback has the innermost frame and the
    exception), with a line saying how many bytes were cut between them.
    """
    detail = well_formed(detail)
    data = detail.encode("utf-8")
    if len(data) <= DETAIL_MAX:
        return detail
    # The note is at most 40 bytes; the tail gets what is left. A character
    # split at either cut is dropped (and counted as cut).
    head = data[:_DETAIL_HEAD].decode("utf-8", "ignore")
    tail = data[len(data) - (DETAIL_MAX - _DETAIL_HEAD - 40):].decode("utf-8", "ignore")
    cut = len(data) - len(head.encode()) - len(tail.encode())
    return f"{head}\n[... {cut} bytes cut ...]\n{tail}"


def well_formed(text):
    """``text`` with each lone surrogate replaced by U+FFFD.

    A ``str`` can hold surrogates that are no character: a byte that was not
    UTF-8, decoded with ``surrogateescape`` (``os.fsdecode``, ``sys.argv``,
    file names), comes back as ``\\udcff``. JSON would write it as that
    escape, which is not Unicode: the pool would reject the whole line and
    lose the worker with every task on it. Replacing (rather than restoring
    the byte) is what decoding such bytes with ``errors="replace"`` gives.
    """
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in text)


def _detail(error):
    if isinstance(error, TaskError) and error.detail is not None:
        return bound_detail(str(error.detail))
    lines = traceback.format_exception(type(error), error, error.__traceback__)
    return bound_detail("".join(lines))


class ProtocolError(Exception):
    """The parent sent something this worker cannot understand."""


def _is_async(handler):
    if inspect.iscoroutinefunction(handler):
        return True
    call = getattr(handler, "__call__", None)
    return inspect.iscoroutinefunction(call)


# One encoder for every answer (json.dumps with options builds a new one per call).
# ensure_ascii=False: text goes out as UTF-8, so a lone surrogate (no
# character, see well_formed) fails the strict .encode() after it instead of
# going out as a \udXXX escape the pool cannot read.
_to_json = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode


def _encode(message):
    return _to_json(message).encode() + b"\n"


def _short(line, limit=200):
    text = line.decode("utf-8", "replace").rstrip("\n")
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def serve(handler, *, threads=None, max_line=DEFAULT_MAX_LINE):
    """Answers the pool's tasks with ``handler(request)`` until drained; never returns.

    - ``handler`` gets the request as decoded JSON (a dict, list, str, int,
      float, bool or None: serde's external tagging for Rust enums) and
      returns the response, which must be JSON-serialisable.
    - An ``async def`` handler (or an object with an ``async def __call__``)
      runs every task the pool sends at once, as asyncio tasks: as many run
      concurrently as the pool grants (``max_in_flight_per_worker``).
    - A plain ``def`` handler runs on a pool of ``threads`` threads (default
      1: one task at a time, in arrival order). More threads help handlers
      that wait on I/O or release the GIL; CPU-bound Python code needs more
      workers, not threads.
    - An exception answers its task with its kind (see ``error_kind``), its
      message (``str(exc)``) and its traceback, and the worker keeps serving:
      the Rust caller gets ``PoolError::Task`` with a ``TaskError``
      (``kind()``, ``message()``, ``detail()``), which it tells apart from a
      crash (``PoolError::WorkerCrashed``). A response that cannot be encoded
      as JSON fails its task the same way (kind ``Unsendable``, as a result too large for a frame).
    - A chunk (``Pool::map`` on the Rust side) runs its items one after the
      other, through the same handler; several chunks in flight run at once,
      as tasks do. With an async handler the results of items that finish
      back to back go out together, and as soon as the chunk waits (an item
      awaits something), whatever finished goes out. A chunk on a thread
      sends its results every 20 ms or so while it runs. Either way the rest
      goes out at its end.
    - On ``Cancel`` an async handler is cancelled at its current ``await``
      (``asyncio.CancelledError``: clean up in ``finally``) and the worker
      answers ``Cancelled``; a chunk starts none of its remaining items. A
      sync handler already running in a thread cannot be stopped: the worker
      lets it finish, and if it does not within the pool's cancel grace the
      pool kills the worker and starts another.
    - On ``Drain`` it stops taking tasks, finishes and answers the ones it
      has, and exits 0. When the parent goes away it does the same.
    - A message it cannot read (not JSON, an unknown kind, longer than
      ``max_line`` bytes) is an error: it names the message on stderr,
      answers the tasks it has, and exits 1.

    Call it from a plain script, outside any running event loop.
    """
    if _is_async(handler):
        if threads is not None:
            raise ValueError("threads= is for sync handlers; an async handler runs on the event loop")
    else:
        threads = 1 if threads is None else threads
        if not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
    if not isinstance(max_line, int) or max_line < 1:
        raise ValueError(f"max_line must be a positive integer, got {max_line!r}")
    worker = _Worker(handler, threads, max_line)
    loop = asyncio.new_event_loop()
    try:
        code = loop.run_until_complete(worker.run())
    except SystemExit as exit:  # a handler called sys.exit(): that is a crash
        code = exit.code if isinstance(exit.code, int) else 1
        if not isinstance(exit.code, int) and exit.code is not None:
            print(exit.code, file=sys.stderr)
    except KeyboardInterrupt:
        code = 130
    _exit(code)


def _exit(code):
    # os._exit: a sync handler still running in a thread (the parent went away
    # mid-task) must not keep the process alive at interpreter exit.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code)


class _Job:
    """A task or a chunk on this worker."""

    __slots__ = ("id", "task", "started", "claimed", "cancel_requested", "pending", "lock", "timer")

    def __init__(self, job_id):
        self.id = job_id
        self.task = None  # the asyncio task answering it
        self.started = False  # its asyncio task began
        self.claimed = False  # sync mode: a thread took it (it can no longer be skipped)
        self.cancel_requested = False
        self.pending = []  # a chunk's (index, encoded result) not sent yet
        # Guards claimed/cancel_requested, pending and timer against the threads.
        self.lock = threading.Lock()
        self.timer = None  # the scheduled send of pending results


class _Threads:
    """The threads that run a sync handler.

    Each job is claimed by one thread, which runs it unless a Cancel came
    first; the outcomes go back to the event loop in batches (one wake-up of
    the loop for all that finished meanwhile), not one future per task.
    """

    def __init__(self, n, loop):
        self.loop = loop
        self.queue = SimpleQueue()
        self.done = deque()
        self.lock = threading.Lock()
        self.wake_scheduled = False
        for i in range(n):
            threading.Thread(target=self.work, name=f"forkyard-task-{i}", daemon=True).start()

    def run(self, job, fn, *args):
        """A future of ("ran", value) | ("skipped", None) | ("raise", BaseException)."""
        future = self.loop.create_future()
        self.queue.put((job, future, fn, args))
        return future

    def work(self):
        while True:
            job, future, fn, args = self.queue.get()
            with job.lock:
                skip = job.cancel_requested
                job.claimed = True
            if skip:
                outcome = ("skipped", None)
            else:
                try:
                    outcome = ("ran", fn(*args))
                except BaseException as error:  # SystemExit and the like: the loop re-raises
                    outcome = ("raise", error)
            self.done.append((future, outcome))
            with self.lock:
                if self.wake_scheduled:
                    continue
                self.wake_scheduled = True
            self.loop.call_soon_threadsafe(self.collect)

    def collect(self):
        with self.lock:
            self.wake_scheduled = False
        while self.done:
            future, outcome = self.done.popleft()
            if not future.done():
                future.set_result(outcome)


class _Worker:
    def __init__(self, handler, threads, max_line):
        self.handler = handler
        self.is_async = threads is None
        self.threads = threads
        self.pool = None  # the _Threads, once the loop runs
        self.max_line = max_line
        self.running = {}  # id -> _Job
        self.outbox = []
        self.flush_scheduled = False
        self.writer = None
        self.loop = None

    def fail(self, message):
        print(f"forkyard_pool worker: {message}", file=sys.stderr, flush=True)

    async def run(self):
        self.loop = asyncio.get_running_loop()
        if not self.is_async:
            self.pool = _Threads(self.threads, self.loop)
        fd = os.environ.get("FORKYARD_IPC_FD")
        if fd is None:
            self.fail("FORKYARD_IPC_FD is not set: start this worker from a forkyard pool")
            return 2
        codec = os.environ.get("FORKYARD_IPC_CODEC", "json-lines")
        if codec != "json-lines":
            self.fail(
                f"the parent chose the {codec} codec; a Python worker speaks json-lines: "
                "build the pool with .codec(Codec::JsonLines)"
            )
            return 2
        sock = socket.socket(fileno=int(fd))
        sock.setblocking(False)
        reader, self.writer = await asyncio.open_connection(sock=sock, limit=self.max_line + 1)
        try:
            hello = json.loads(await reader.readline())
            reply = {
                "forkyard_ipc": hello["forkyard_ipc"],
                "codec": "json-lines",
                "sends": hello["receives"],
                "receives": hello["sends"],
            }
        except (ValueError, KeyError, TypeError) as error:
            self.fail(f"no valid hello from the parent: {error}")
            return 1
        self.send(reply)
        self.send("Ready")
        error = await self.read(reader)
        # Drained, the parent gone, or an unreadable message: answer what runs.
        while self.running:
            await asyncio.wait([job.task for job in self.running.values()])
        self.flush()
        try:
            await self.writer.drain()
            self.writer.close()
            await self.writer.wait_closed()
        except OSError:
            pass  # the parent is gone: nobody is left to answer
        if error is not None:
            self.fail(error)
            return 1
        return 0

    async def read(self, reader):
        """Reads and starts messages until Drain or EOF; returns an error text or None."""
        while True:
            try:
                line = await reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as eof:
                if eof.partial:
                    return f"the channel closed in the middle of a message: {_short(eof.partial)}"
                return None  # the parent closed the channel: as Drain
            except asyncio.LimitOverrunError:
                return f"a message longer than max_line ({self.max_line} bytes)"
            except OSError as error:
                return f"reading the channel: {error}"
            try:
                message = json.loads(line)
            except ValueError as error:
                return f"a message that is not JSON ({error}): {_short(line)}"
            try:
                if self.dispatch(message):
                    return None
            except ProtocolError as error:
                return f"{error}: {_short(line)}"

    def dispatch(self, message):
        """Acts on one message; true when it was Drain."""
        if message == "Drain":
            return True
        if isinstance(message, dict) and len(message) == 1:
            ((kind, body),) = message.items()
            if isinstance(body, dict):
                if kind == "Task" and "req" in body:
                    job = self.new_job(body)
                    job.task = self.loop.create_task(self.run_task(job, body["req"]))
                    return False
                if kind == "Chunk" and isinstance(body.get("items"), list):
                    job = self.new_job(body)
                    job.task = self.loop.create_task(self.run_chunk(job, body["items"]))
                    return False
                if kind == "Cancel":
                    self.cancel(body.get("id"))
                    return False
        raise ProtocolError("a message this worker does not know")

    def new_job(self, body):
        job_id = body.get("id")
        if not isinstance(job_id, int) or isinstance(job_id, bool) or job_id < 0:
            raise ProtocolError("a task without a valid id")
        if job_id in self.running:
            raise ProtocolError(f"task {job_id} is already running")
        job = self.running[job_id] = _Job(job_id)
        return job

    # ---- cancel ---------------------------------------------------------------

    def cancel(self, job_id):
        """Stops a task or chunk if it can; unknown or answered ids are ignored.

        An async handler is cancelled at its current await (CancelledError);
        work still queued for a thread never starts; a sync handler already
        running cannot be stopped (a chunk stops before its next item): the
        worker says nothing until it ends, and the pool's cancel grace applies.
        """
        job = self.running.get(job_id)
        if job is None or job.cancel_requested:
            return
        with job.lock:
            # A thread that has not claimed the job yet will skip it.
            job.cancel_requested = True
        if job.started and self.is_async:
            job.task.cancel()
        # Not started yet: the job answers Cancelled when it starts.

    def cancelled(self, job):
        self.send({"Cancelled": {"id": job.id}})

    # ---- tasks ----------------------------------------------------------------

    async def run_task(self, job, request):
        job.started = True
        try:
            if job.cancel_requested:
                raise asyncio.CancelledError
            if self.is_async:
                value = self.handler(request)
                if inspect.isawaitable(value):
                    value = await value
                result = self.ok(value)
            else:
                result = await self.in_thread(job, self.sync_task, request)
        except asyncio.CancelledError:
            if not job.cancel_requested:
                raise
            self.cancelled(job)
            return
        except Exception as error:  # the task fails, the worker lives on
            result = self.err(error)
        finally:
            del self.running[job.id]
        line = b'{"Done":{"id":%d,"result":%s}}\n' % (job.id, result)
        if len(line) - 1 > self.max_line:
            error = f"the response is {len(line) - 1} bytes, over the frame limit ({self.max_line})"
            line = b'{"Done":{"id":%d,"result":%s}}\n' % (job.id, self.err_text(UNSENDABLE, error))
        self.send_line(line)

    async def in_thread(self, job, fn, *args):
        """Runs fn on a thread; CancelledError if a Cancel made the thread skip it."""
        what, value = await self.pool.run(job, fn, *args)
        if what == "skipped":
            raise asyncio.CancelledError
        if what == "raise":
            raise value
        return value

    def sync_task(self, request):
        """A task on a thread: its encoded result (errors encoded too)."""
        try:
            return self.ok(self.call_sync(request))
        except Exception as error:
            return self.err(error)

    def call_sync(self, request):
        value = self.handler(request)
        if inspect.isawaitable(value):
            if inspect.iscoroutine(value):
                value.close()
            raise TypeError(
                "the handler returned an awaitable but is not `async def`: "
                "make it `async def` so serve() runs it on the event loop"
            )
        return value

    # ---- chunks ---------------------------------------------------------------

    async def run_chunk(self, job, items):
        """Runs the handler on each item in turn; sends results as they come.

        Results are sent at most every PART_EVERY while the chunk runs (so a
        worker that dies mid-chunk loses only the items since) and all at once
        at the end.
        """
        job.started = True
        stopped = job.cancel_requested
        try:
            if stopped:
                pass
            elif self.is_async:
                for index, item in enumerate(items):
                    if job.cancel_requested:
                        stopped = True
                        break
                    try:
                        value = self.handler(item)
                        if inspect.isawaitable(value):
                            value = await value
                        result = self.ok(value)
                    except asyncio.CancelledError:
                        if not job.cancel_requested:
                            raise
                        stopped = True
                        break
                    except Exception as error:
                        result = self.err(error)
                    self.add_result(job, index, result)
            else:
                try:
                    stopped = not await self.in_thread(job, self.chunk_in_thread, job, items)
                except asyncio.CancelledError:
                    if not job.cancel_requested:
                        raise
                    stopped = True
        finally:
            del self.running[job.id]
            self.send_results(job)
        if stopped:
            self.cancelled(job)

    def chunk_in_thread(self, job, items):
        """A sync chunk, on a thread; false if a Cancel stopped it before the end."""
        for index, item in enumerate(items):
            if job.cancel_requested:
                return False
            try:
                result = self.ok(self.call_sync(item))
            except Exception as error:
                result = self.err(error)
            self.add_result(job, index, result, threadsafe=True)
        return True

    def add_result(self, job, index, result, threadsafe=False):
        if not threadsafe:
            # On the loop's thread (an async chunk): no lock needed. The send
            # runs at the loop's next turn, which comes only when the chunk
            # waits (an item awaits something that is not ready) or ends:
            # items that finish back to back go out together, and none waits
            # for a later item that does.
            job.pending.append((index, result))
            if job.timer is None:
                job.timer = self.loop.call_soon(self.send_results, job)
            return
        with job.lock:
            job.pending.append((index, result))
            if job.timer is not None:
                return
            job.timer = True  # a send is being scheduled
        self.loop.call_soon_threadsafe(self.schedule_results, job)

    def schedule_results(self, job):
        with job.lock:
            if job.timer is True:
                job.timer = self.loop.call_later(PART_EVERY, self.send_results, job)

    def send_results(self, job):
        """Sends a chunk's pending results, in Items messages that fit a frame."""
        with job.lock:
            pending, job.pending = job.pending, []
            if job.timer is not None and job.timer is not True:
                job.timer.cancel()
            job.timer = None
        head = b'{"Items":{"id":%d,"results":[' % job.id
        tail = b"]}}\n"
        parts, size = [], len(head) + len(tail) - 1
        for index, result in pending:
            part = b"[%d,%s]" % (index, result)
            if len(head) + len(part) + len(tail) - 1 > self.max_line:
                error = f"the response is {len(part)} bytes, over the frame limit ({self.max_line})"
                part = b"[%d,%s]" % (index, self.err_text(UNSENDABLE, error))
            if parts and size + 1 + len(part) > self.max_line:
                self.send_line(head + b",".join(parts) + tail)
                parts, size = [], len(head) + len(tail) - 1
            parts.append(part)
            size += len(part) + (1 if len(parts) > 1 else 0)
        if parts:
            self.send_line(head + b",".join(parts) + tail)

    # ---- encoding and writing -------------------------------------------------

    def ok(self, value):
        """`{"Ok":value}` as JSON bytes, or an Err if the value has no JSON form."""
        try:
            return b'{"Ok":' + _to_json(value).encode() + b"}"
        except (TypeError, ValueError, RecursionError) as error:
            return self.err_text(UNSENDABLE, f"the response is not JSON: {error}")

    def err(self, error):
        """`{"Err":{"kind":..,"message":..,"detail":..}}` as JSON bytes."""
        try:
            message = str(error)
        except Exception as broken:  # a __str__ that raises
            message = f"<the exception's str() raised {type(broken).__name__}>"
        # Each text well formed: a lone surrogate would make the line unreadable.
        fields = {
            "kind": well_formed(str(error_kind(error))),
            "message": well_formed(message),
            "detail": _detail(error),
        }
        return b'{"Err":' + _to_json(fields).encode() + b"}"

    def err_text(self, kind, message):
        fields = {"kind": well_formed(kind), "message": well_formed(message)}
        return b'{"Err":' + _to_json(fields).encode() + b"}"

    def send(self, message):
        self.send_line(_encode(message))

    def send_line(self, line):
        # Answers that end in the same turn of the loop go out in one write.
        self.outbox.append(line)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self):
        self.flush_scheduled = False
        if self.outbox:
            data = b"".join(self.outbox)
            self.outbox.clear()
            if not self.writer.is_closing():
                self.writer.write(data)
