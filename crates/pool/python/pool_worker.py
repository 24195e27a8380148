#!/usr/bin/env python3
"""A forkyard-pool worker in Python.

forkyard-pool starts this script with a Unix socket at the fd named by
FORKYARD_IPC_FD and FORKYARD_IPC_CODEC=json-lines (build the pool with
`.codec(forkyard_ipc::Codec::JsonLines)`). The wire, one JSON document per line:

    parent -> worker  {"forkyard_ipc":1,"codec":"json-lines","sends":{...},"receives":{...}}
    worker -> parent  the same hello with "sends" and "receives" swapped
    worker -> parent  "Ready"
    parent -> worker  {"Task":{"id":7,"req":<request>}}
    worker -> parent  {"Done":{"id":7,"result":{"Ok":<response>}}}   or {"Err":"message"}
    parent -> worker  "Drain"            (answer what you have, then exit 0)

A Python worker cannot compute the Rust types' fingerprints, so it declares
the ones the parent announced: the parent's type check then trusts this
worker to speak them. Use `serve(handler)` with your own handler; run as a
script, it serves the `Job` requests forkyard-pool's tests send.
"""

import json
import os
import socket
import sys
import time


def serve(handler):
    """Answer tasks with `handler(request) -> response` until drained.

    An exception in the handler answers the task with an error; the worker
    keeps serving. Returns (exits the process) when the parent says Drain or
    closes the channel.
    """
    fd = int(os.environ["FORKYARD_IPC_FD"])
    codec = os.environ.get("FORKYARD_IPC_CODEC", "json-lines")
    if codec != "json-lines":
        sys.exit(f"pool_worker.py speaks json-lines, the parent chose {codec}")
    sock = socket.socket(fileno=fd)
    reader = sock.makefile("rb")
    writer = sock.makefile("wb")

    def send(message):
        writer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")

    hello = json.loads(reader.readline())
    send({
        "forkyard_ipc": hello["forkyard_ipc"],
        "codec": "json-lines",
        "sends": hello["receives"],
        "receives": hello["sends"],
    })
    send("Ready")
    writer.flush()
    for line in reader:
        message = json.loads(line)
        if message == "Drain":
            break
        task = message["Task"]
        try:
            result = {"Ok": handler(task["req"])}
        except Exception as error:  # the task fails, the worker lives on
            result = {"Err": f"{type(error).__name__}: {error}"}
        send({"Done": {"id": task["id"], "result": result}})
        writer.flush()
    writer.flush()
    sys.exit(0)


def job(request):
    """The `Job` enum of forkyard-pool's tests (serde's external tagging)."""
    if request == "Pid":
        return os.getpid()
    if request == "Crash":
        os.abort()
    if request == "Panic":
        raise RuntimeError("the job asked for a panic")
    (kind, value), = request.items()
    if kind == "Echo":
        return value
    if kind == "Sleep":
        time.sleep(value["ms"] / 1000)
        return value["value"]
    if kind == "Fail":
        raise ValueError(value)
    raise ValueError(f"unsupported job {request!r}")


if __name__ == "__main__":
    serve(job)
