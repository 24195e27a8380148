#!/usr/bin/env python3
"""The worker forkyard-pool's Rust tests run (tests/it/python.rs): the `Work`
requests there, on the forkyard_pool package.

    python3 worker.py async         an async handler (asyncio tasks)
    python3 worker.py threads N     a sync handler on N threads (1: one at a time)

The tests put the package's source directory on PYTHONPATH, or run this
script with a venv's python where the package is installed.
"""

import asyncio
import builtins
import os
import sys
import threading
import time

import forkyard_pool


class Refused(Exception):
    """An exception class of the worker's own (its kind is its name)."""


# Meet is a barrier: `waiting` tasks wait in the handler for the current
# `generation` to end, which the n-th arrival does. A task that gives up
# leaves the count. `cond` guards both in thread mode; the event loop runs
# async handlers on one thread.
waiting = 0
generation = 0
cond = threading.Condition()

# Peak: how many tasks are in the handler now, and the most there ever were.
active = 0
peak = 0
counting = threading.Lock()


def enter():
    global active, peak
    with counting:
        active += 1
        peak = max(peak, active)


def leave():
    global active
    with counting:
        active -= 1


def fail(kind, message):
    exc = getattr(builtins, kind, None)
    if kind == "Refused":
        raise Refused(message)
    if kind == "Undecodable":
        # The byte 0xff as os.fsdecode() gives it: a lone surrogate.
        raise ValueError(message + b"\xff".decode("utf-8", "surrogateescape"))
    if isinstance(exc, type) and issubclass(exc, Exception):
        raise exc(message)
    if kind == "Detailed":
        raise forkyard_pool.TaskError(message, kind=kind, detail="given by the handler")
    raise forkyard_pool.TaskError(message, kind=kind)


def deep_a(n, message):
    if n <= 0:
        raise Refused(message)
    return deep_b(n - 1, message)


def deep_b(n, message):
    if n <= 0:
        raise Refused(message)
    return deep_a(n - 1, message)


def common(request):
    """The requests whose handling is the same in both modes; None if not one."""
    if request == "Pid":
        return True, os.getpid()
    if request == "Module":
        return True, forkyard_pool.__file__
    if request == "Crash":
        os.abort()
    if request == "Exit0":
        os._exit(0)
    if request == "Garbage":
        os.write(int(os.environ["FORKYARD_IPC_FD"]), b"}{ not json\n")
        return True, 0
    if request == "LoneSurrogate":
        return True, "bad name " + b"\xff".decode("utf-8", "surrogateescape")
    if request == "Unserializable":
        return True, {1, 2, 3}
    if isinstance(request, dict) and len(request) == 1:
        ((kind, value),) = request.items()
        if kind == "Echo":
            return True, value
        if kind == "Big":
            return True, "x" * value
        if kind == "Once":
            open(value, "x").close()
            return True, value
        if kind == "Fail":
            fail(value["kind"], value["message"])
        if kind == "Deep":
            deep_a(value["depth"], value["message"])
        if kind == "CrashOnce":
            marker = value["marker"]
            if not os.path.exists(marker):
                open(marker, "w").close()
                os.abort()
            return True, "survived"
    return False, None


async def handle_async(request):
    global waiting, generation
    done, value = common(request)
    if done:
        return value
    if request == "Hang":
        await asyncio.Event().wait()
    ((kind, value),) = request.items()
    if kind == "Peak":
        enter()
        try:
            open(value + ".started", "w").close()
            deadline = time.monotonic() + 20
            while not os.path.exists(value) and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
        finally:
            leave()
        return peak
    if kind == "Deaf":
        open(value + ".started", "w").close()
        while True:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                pass  # a handler that will not be cancelled
    if kind == "Meet":
        n, mine = value["n"], generation
        waiting += 1
        if waiting == n:
            waiting, generation = 0, generation + 1
            return n
        deadline = time.monotonic() + value["within_ms"] / 1000
        while generation == mine and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        if generation == mine:
            waiting -= 1
            raise TimeoutError(f"{waiting + 1} of {n} tasks ran at once")
        return n
    if kind == "WaitFile":
        open(value + ".started", "w").close()
        deadline = time.monotonic() + 20
        while not os.path.exists(value) and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        return os.path.exists(value)
    raise ValueError(f"unsupported request {request!r}")


def handle_sync(request):
    global waiting, generation
    done, value = common(request)
    if done:
        return value
    if request == "Hang":
        threading.Event().wait()
    ((kind, value),) = request.items()
    if kind == "Peak":
        enter()
        try:
            open(value + ".started", "w").close()
            deadline = time.monotonic() + 20
            while not os.path.exists(value) and time.monotonic() < deadline:
                time.sleep(0.005)
        finally:
            leave()
        with counting:
            return peak
    if kind == "Deaf":
        open(value + ".started", "w").close()
        threading.Event().wait()
    if kind == "Meet":
        with cond:
            n, mine = value["n"], generation
            waiting += 1
            if waiting == n:
                waiting, generation = 0, generation + 1
                cond.notify_all()
                return n
            if not cond.wait_for(lambda: generation != mine, value["within_ms"] / 1000):
                waiting -= 1
                raise TimeoutError(f"{waiting + 1} of {n} tasks ran at once")
            return n
    if kind == "WaitFile":
        open(value + ".started", "w").close()
        deadline = time.monotonic() + 20
        while not os.path.exists(value) and time.monotonic() < deadline:
            time.sleep(0.005)
        return os.path.exists(value)
    raise ValueError(f"unsupported request {request!r}")


if __name__ == "__main__":
    if sys.argv[1:] == ["async"]:
        forkyard_pool.serve(handle_async)
    elif len(sys.argv) == 3 and sys.argv[1] == "threads":
        forkyard_pool.serve(handle_sync, threads=int(sys.argv[2]))
    else:
        sys.exit("usage: worker.py async | threads N")
