#!/usr/bin/env python3
"""The `Job` worker of forkyard-pool's tests, on the forkyard_pool package.

Kept at this path for those who run it as a script (`python3
crates/pool/python/pool_worker.py`): it imports the package from the
directory beside it, so it needs no install. Your own workers import the
installed package instead (`pip install ./crates/pool/python`; see README.md):

    import forkyard_pool
    forkyard_pool.serve(handler)

`serve` is re-exported here for scripts written against the old example
(`from pool_worker import serve`).
"""

import os
import time

from forkyard_pool import serve

__all__ = ["serve", "job"]


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
