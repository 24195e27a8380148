"""Python workers for forkyard-pool.

A forkyard-pool (Rust) starts worker processes and sends them tasks over a
Unix socket; a Python worker is a handler and one call::

    import forkyard_pool

    async def handle(request):
        return request["x"] * 2

    forkyard_pool.serve(handle)

The parent builds its pool with the JSON-lines codec
(``.codec(forkyard_ipc::Codec::JsonLines)``) and a command that runs this
script. See ``serve`` for the options and the README for the whole story.
"""

from ._worker import DETAIL_MAX, UNSENDABLE, TaskError, describe_error, error_kind, serve

__all__ = ["serve", "TaskError", "describe_error", "error_kind", "DETAIL_MAX", "UNSENDABLE"]
__version__ = "0.2.0"
