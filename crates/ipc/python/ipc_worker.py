#!/usr/bin/env python3
"""A forkyard-ipc request-response worker in Python, over the JSON-lines codec.

The parent spawns this script with `forkyard_ipc::spawn_with(..,
Config::new().codec(Codec::JsonLines))`: the socket is at the fd named by
FORKYARD_IPC_FD, and FORKYARD_IPC_CODEC=json-lines. One JSON document per
line, each way (see the crate README for the whole wire format):

    parent -> worker  {"forkyard_ipc":1,"codec":"json-lines","sends":{...},"receives":{...}}
    worker -> parent  the same hello, "sends" and "receives" swapped
    parent -> worker  {"Request":{"id":7,"deadline_ms":30000,"body":<request>}}
    worker -> parent  {"Response":{"id":7,"body":<answer>}}
                      or {"Failed":{"id":7,"message":"..."}}
    parent -> worker  {"Cancel":{"id":7}}      (the caller gave up)
    worker -> parent  {"Request":{...}}        (calls go both ways; the parent
    parent -> worker  {"Response":{...}}        answers with the same id)

A Python worker cannot compute the Rust types' structural fingerprints, so it
declares the ones the parent announced: the parent then trusts it to speak
them. Each request runs in its own thread, so many can be in flight.

Run as a script, it serves the `Job` requests of forkyard-ipc's tests
(tests/it/wire.rs) and calls the parent back with `Ask`s.
"""

import json
import os
import socket
import sys
import threading
import time


class Endpoint:
    """Both directions of a request-response conversation."""

    def __init__(self, handler):
        fd = int(os.environ["FORKYARD_IPC_FD"])
        codec = os.environ.get("FORKYARD_IPC_CODEC", "json-lines")
        if codec != "json-lines":
            sys.exit(f"ipc_worker.py speaks json-lines, the parent chose {codec}")
        self.sock = socket.socket(fileno=fd)
        self.reader = self.sock.makefile("rb")
        self.writer = self.sock.makefile("wb")
        self.write_lock = threading.Lock()
        self.handler = handler
        self.next_id = 1
        self.waiting = {}  # our call id -> [event, envelope]
        self.cancelled = set()  # ids of the parent's requests it gave up on

    def send(self, message):
        line = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        with self.write_lock:
            self.writer.write(line)
            self.writer.flush()

    def call(self, body, deadline_ms=None):
        """Calls the parent; returns its answer or raises with its failure."""
        with self.write_lock:
            call_id = self.next_id
            self.next_id += 1
        slot = [threading.Event(), None]
        self.waiting[call_id] = slot
        self.send({"Request": {"id": call_id, "deadline_ms": deadline_ms, "body": body}})
        slot[0].wait()
        (kind, value), = slot[1].items()
        if kind == "Response":
            return value["body"]
        raise RuntimeError(value["message"])

    def serve(self):
        """Reads until the parent closes the channel, then exits 0."""
        hello = json.loads(self.reader.readline())
        self.send({
            "forkyard_ipc": hello["forkyard_ipc"],
            "codec": "json-lines",
            "sends": hello["receives"],
            "receives": hello["sends"],
        })
        for line in self.reader:
            (kind, value), = json.loads(line).items()
            if kind == "Request":
                threading.Thread(target=self.answer, args=(value,), daemon=True).start()
            elif kind == "Cancel":
                self.cancelled.add(value["id"])
            elif kind in ("Response", "Failed"):
                slot = self.waiting.pop(value["id"], None)
                if slot is not None:
                    slot[1] = {kind: value}
                    slot[0].set()
        os._exit(0)

    def answer(self, request):
        request_id = request["id"]
        try:
            reply = {"Response": {"id": request_id, "body": self.handler(self, request["body"])}}
        except Exception as error:  # the request fails, the worker lives on
            reply = {"Failed": {"id": request_id, "message": f"{type(error).__name__}: {error}"}}
        if request_id not in self.cancelled:
            self.send(reply)


def job(endpoint, request):
    """The `Job` enum of forkyard-ipc's tests, in serde's external tagging."""
    if request == "Pid":
        return os.getpid()
    if request == "Die":
        os._exit(9)
    (kind, value), = request.items()
    if kind == "Echo":
        return value
    if kind == "Sleep":
        time.sleep(value["ms"] / 1000)
        return value["value"]
    if kind == "AskParent":
        return endpoint.call({"Double": value}) + 1
    if kind == "Fail":
        raise ValueError(value)
    if kind == "Hang":
        # Never answers (a Python thread cannot be aborted; the `Cancel` is
        # recorded, and the answer would be suppressed).
        threading.Event().wait()
    if kind == "WasCancelled":
        return len(endpoint.cancelled)
    raise ValueError(f"unknown job {kind}")


if __name__ == "__main__":
    Endpoint(job).serve()
