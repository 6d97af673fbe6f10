"""A bounded pool of threads for the CPU-bound part of preparing a request, off the event loop.

Chat templates, tokenizers and image decoding run here. Each request submits one job at a time,
so it holds at most one thread, and a heavy request cannot take every worker. The tokenizer and
the image decoders release the GIL while they work; template rendering is Python, which the
interpreter interrupts every few milliseconds, so the event loop keeps serving other requests.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class PreparePool:
    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prepare")

    async def run(self, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(work, *args, **kwargs))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
