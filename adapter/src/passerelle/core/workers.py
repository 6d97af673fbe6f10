"""A bounded pool of threads for the CPU-bound part of preparing a request, off the event loop.

Large JSON bodies, chat templates, tokenizers and image decoding run here. Each request submits one job at a time,
so it holds at most one thread, and a heavy request cannot take every worker. The tokenizer and
the image decoders release the GIL while they work; template rendering is Python, which the
interpreter interrupts every few milliseconds, so the event loop keeps serving other requests.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from fastapi import Request, Response
from fastapi.routing import APIRoute

P = ParamSpec("P")
T = TypeVar("T")
OFF_LOOP_JSON_BYTES = 256 * 1024  # below this, parsing takes less than the hop to a thread costs


class PreparePool:
    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prepare")

    async def run(self, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(work, *args, **kwargs))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class OffLoopJSONRequest(Request):
    """A request whose large JSON body is parsed in the preparation pool, not on the event loop."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            pool: PreparePool | None = getattr(self.app.state, "prepare_pool", None)
            if pool is not None and len(body) >= OFF_LOOP_JSON_BYTES:
                self._json = await pool.run(json.loads, body)
            else:
                self._json = json.loads(body)
        return self._json


class OffLoopJSONRoute(APIRoute):
    """Routes whose bodies can be large (chat, completions): FastAPI parses them through `OffLoopJSONRequest`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            return await handler(OffLoopJSONRequest(request.scope, request.receive))

        return route
