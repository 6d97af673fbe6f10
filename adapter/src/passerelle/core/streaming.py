"""Running generations for HTTP clients: errors before the first token become HTTP errors,
errors after it become an SSE error event, and a client that goes away cancels the work."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import aclosing
from dataclasses import dataclass
from typing import TypeVar

from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from passerelle.core.errors import APIError, ClientGone, TritonFailure

log = logging.getLogger("passerelle.streaming")
T = TypeVar("T")
ToError = Callable[[TritonFailure], APIError]


async def primed(items: AsyncGenerator[T], to_error: ToError) -> AsyncGenerator[T]:
    """Wait for the first item, so that failures before it surface as HTTP errors."""
    try:
        first = await anext(items)
    except StopAsyncIteration:
        first = None
    except TritonFailure as failure:
        raise to_error(failure) from failure

    async def chained() -> AsyncGenerator[T]:
        async with aclosing(items):
            if first is not None:
                yield first
            async for item in items:
                yield item

    return chained()


@dataclass
class _End:
    error: BaseException | None = None


async def coalesced(items: AsyncGenerator[T], merge: Callable[[list[T]], T], merged: Callable[[int], None]) -> AsyncGenerator[T]:
    """`items`, with what piled up while the consumer was busy merged into one item.

    A task pulls `items` into a queue as they come; each step yields everything waiting, merged
    (and reports how many items were merged). A consumer that keeps up waits on the queue and
    gets each item as it arrives, with no added latency; a slow client gets fewer, larger SSE
    chunks instead of a backlog of tiny ones. The queue holds at most one request's responses.
    """
    queue: asyncio.Queue[T | _End] = asyncio.Queue()

    async def pump() -> None:
        try:
            async with aclosing(items):
                async for item in items:
                    queue.put_nowait(item)
        except Exception as error:  # noqa: BLE001 - handed to the consumer, raised there after what came before it
            queue.put_nowait(_End(error))
        else:
            queue.put_nowait(_End())

    task = asyncio.create_task(pump())
    try:
        while True:
            waiting = [await queue.get()]
            while not queue.empty():
                waiting.append(queue.get_nowait())
            last = waiting[-1]
            end = last if isinstance(last, _End) else None
            batch = [item for item in waiting if not isinstance(item, _End)]
            if len(batch) > 1:
                merged(len(batch))
            if batch:
                yield merge(batch)
            if end is not None:
                if end.error is not None:
                    raise end.error
                return
    finally:
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class ClosingStreamingResponse(StreamingResponse):
    """Closes its body generator however the response ends.

    When the client disconnects while Starlette is writing, the body generator is left suspended at
    a `yield` and would only be finalised by the garbage collector, keeping the Triton request (and
    the engine) running until then. Closing it here runs every `finally` down to the gRPC stream.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            body = self.body_iterator
            if isinstance(body, AsyncGenerator):
                await body.aclose()


def _chat_frame(event: str) -> str:
    return f"data: {event}\n\n"


def _chat_error(error: APIError) -> str:
    return f"data: {error.response().model_dump_json()}\n\n"


def sse_response(
    events: AsyncGenerator[str],
    to_error: ToError,
    *,
    frame: Callable[[str], str] = _chat_frame,
    error_frame: Callable[[APIError], str] = _chat_error,
    end: str | None = "data: [DONE]\n\n",
) -> StreamingResponse:
    """Server-sent events: by default chat's (`data:` lines, an error object, `[DONE]`); the Responses
    API frames its own typed events and ends without a sentinel."""

    async def body() -> AsyncIterator[str]:
        try:
            async with aclosing(events):
                async for event in events:
                    yield frame(event)
        except TritonFailure as failure:
            yield error_frame(to_error(failure))
        except APIError as error:
            yield error_frame(error)
        if end is not None:
            yield end

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return ClosingStreamingResponse(body(), media_type="text/event-stream", headers=headers)


async def drained(items: AsyncGenerator[T], add: Callable[[T], object], to_error: ToError) -> None:
    """Feed every item to `add` (a non-streamed answer); a Triton failure becomes its API error."""
    try:
        async with aclosing(items):
            async for item in items:
                add(item)
    except TritonFailure as failure:
        raise to_error(failure) from failure


_cleanups: set[asyncio.Task[None]] = set()


async def to_completion(cleanup: Coroutine[object, object, None]) -> None:
    """Run `cleanup` to its end even if the caller is being cancelled.

    When a streaming client disconnects, Starlette cancels the response through an anyio cancel
    scope, and such a cancellation is raised again at every `await` inside the scope: an `await`
    in a `finally` of the body's generators would be cut at once. The cleanup runs in a task of
    its own instead; a cancelled caller stops waiting for it, and it finishes all the same."""
    task = asyncio.ensure_future(cleanup)
    _cleanups.add(task)
    task.add_done_callback(_cleanups.discard)
    await asyncio.shield(task)


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it if the client disconnects first (for non-streamed answers)."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        raise ClientGone
    return task.result()
