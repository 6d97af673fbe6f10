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
import re
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

P = ParamSpec("P")
T = TypeVar("T")
OFF_LOOP_JSON_BYTES = 256 * 1024  # below this, parsing takes less than the hop to a thread costs


# A \uD800-\uDFFF escape: JSON allows it, but alone (not as half of a pair) it is not Unicode text,
# and tokenizers, templates and UTF-8 encoders fail on it.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


class InvalidText(HTTPException):
    code = "invalid_unicode"


def _strings(value: Any) -> Any:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def parse_json(body: bytes) -> Any:
    """json.loads, refusing strings that hold a lone UTF-16 surrogate (only checked when the body
    has a surrogate escape at all: valid pairs, as in an escaped emoji, pass)."""
    value = json.loads(body)
    if _SURROGATE_ESCAPE.search(body):
        for text in _strings(value):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as error:
                raise InvalidText(
                    400,
                    f"The request body holds a string with a lone UTF-16 surrogate escape ({text[error.start]!r}): "
                    "text must be valid Unicode.",
                ) from error
    return value


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
                self._json = await pool.run(parse_json, body)
            else:
                self._json = parse_json(body)
        return self._json


class OffLoopJSONRoute(APIRoute):
    """Routes whose bodies can be large (chat, completions): FastAPI parses them through `OffLoopJSONRequest`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            return await handler(OffLoopJSONRequest(request.scope, request.receive))

        return route
