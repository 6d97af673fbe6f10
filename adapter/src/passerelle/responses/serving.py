"""The Responses API: translate (to a chat request) → prepare and run (chat's path, the same engine)
→ format (a `Response`, or its typed events as the answer streams)."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncGenerator, Iterator
from contextlib import aclosing
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import Response

from passerelle.chat.hermes import CallDelta, HermesStream, StreamDelta, ToolCall, extract
from passerelle.chat.images import ImageLoader
from passerelle.chat.serving import LLMEngine, prepare
from passerelle.chat.structured import ControlEscaper, constrains_to_json
from passerelle.chat.tools import ToolPlan, new_call_id
from passerelle.core.catalog import Catalog
from passerelle.core.errors import APIError
from passerelle.core.streaming import drained, primed, sse_response, until_disconnect
from passerelle.core.workers import PreparePool
from passerelle.responses.protocol import (
    ResponseObject,
    ResponsesRequest,
    function_call_item,
    item_id,
    message_item,
    response_id,
    response_object,
    to_chat,
    usage,
)
from passerelle.triton.vllm import Delta


def _frame(event: str) -> str:
    return event  # the builder frames its own events (an `event:` line and a `data:` line)


class ResponseBuilder:
    """One answer (n = 1) accumulated into a `Response`; while streaming, its typed events."""

    def __init__(self, request: ResponsesRequest, model: str, tools: ToolPlan | None, json_answer: bool = False) -> None:
        self.request = request
        self.model = model
        self.id = response_id()
        self.parser = HermesStream(new_call_id) if tools is not None and tools.parse else None
        self.escape = ControlEscaper() if json_answer else None
        self.pieces: list[str] = []
        self.input_tokens = 0
        self.output_tokens = 0
        self.reason: str | None = None
        self.sequence = itertools.count()
        self.output: list[dict[str, Any]] = []  # items, in their output_index order
        self.message: dict[str, Any] | None = None  # the open message item, while its text streams
        self.call: dict[str, Any] | None = None  # the open function call item

    def add(self, delta: Delta) -> str:
        if delta.prompt_tokens is not None:
            self.input_tokens = delta.prompt_tokens
        self.output_tokens += sum(delta.output_tokens)
        self.reason = delta.finish_reasons[0] or self.reason
        text = delta.texts[0] if self.escape is None else self.escape(delta.texts[0])
        self.pieces.append(text)
        return text

    @property
    def status(self) -> str:
        return "incomplete" if self.reason == "length" else "completed"

    def response(self, status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
        final = status != "in_progress"
        return response_object(
            self.request, self.id, self.model, status, output, usage(self.input_tokens, self.output_tokens) if final else None
        )

    def whole(self) -> dict[str, Any]:
        text: str | None = "".join(self.pieces)
        calls: list[ToolCall] = []
        if self.parser is not None and text is not None:
            found = extract(text, new_call_id)
            text, calls = found.content, found.calls
        content = text or ""
        output = [message_item(item_id("msg"), content, self.status)] if content or not calls else []
        output += [function_call_item(item_id("fc"), call.id, call.name, call.arguments, "completed") for call in calls]
        return self.response(self.status, output)

    # Streaming ---------------------------------------------------------------------------------

    def event(self, type_: str, **fields: Any) -> str:
        body = json.dumps({"type": type_, "sequence_number": next(self.sequence), **fields}, ensure_ascii=False)
        return f"event: {type_}\ndata: {body}\n\n"

    def error_event(self, error: APIError) -> str:
        detail = error.response().error
        return self.event("error", code=detail.code, message=detail.message, param=detail.param)

    async def events(self, deltas: AsyncGenerator[Delta]) -> AsyncGenerator[str]:
        started = self.response("in_progress", [])
        yield self.event("response.created", response=started)
        yield self.event("response.in_progress", response=started)
        async with aclosing(deltas):
            async for delta in deltas:
                text = self.add(delta)
                parsed = self.parser.feed(text) if self.parser is not None else StreamDelta(content=text)
                for event in self._parsed(parsed):
                    yield event
        if self.parser is not None:
            for event in self._parsed(self.parser.finish()):
                yield event
        if not self.output:
            for event in self._text(""):
                yield event
        for event in self._close():
            yield event
        done = "response.incomplete" if self.status == "incomplete" else "response.completed"
        yield self.event(done, response=self.response(self.status, self.output))

    def _parsed(self, parsed: StreamDelta) -> Iterator[str]:
        if parsed.content:
            yield from self._text(parsed.content)
        for call in parsed.calls:
            yield from self._call(call)

    def _text(self, text: str) -> Iterator[str]:
        if self.message is None:
            yield from self._close()
            self.message = message_item(item_id("msg"), "", "in_progress")
            self.output.append(self.message)
            index = len(self.output) - 1
            yield self.event("response.output_item.added", output_index=index, item={**self.message, "content": []})
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            yield self.event("response.content_part.added", item_id=self.message["id"], output_index=index, content_index=0, part=part)
        self.message["content"][0]["text"] += text
        if text:
            index = self.output.index(self.message)
            yield self.event(
                "response.output_text.delta", item_id=self.message["id"], output_index=index, content_index=0, delta=text, logprobs=[]
            )

    def _call(self, call: CallDelta) -> Iterator[str]:
        if call.name is not None:
            yield from self._close()
            self.call = function_call_item(item_id("fc"), call.id or new_call_id(), call.name, "", "in_progress")
            self.output.append(self.call)
            yield self.event("response.output_item.added", output_index=len(self.output) - 1, item=dict(self.call))
        elif self.call is not None and call.arguments:
            self.call["arguments"] += call.arguments
            index = len(self.output) - 1
            yield self.event("response.function_call_arguments.delta", item_id=self.call["id"], output_index=index, delta=call.arguments)

    def _close(self) -> Iterator[str]:
        """End the open item: its text or arguments are complete."""
        index = len(self.output) - 1
        if self.message is not None:
            item, self.message = self.message, None
            item["status"] = self.status
            part = item["content"][0]
            where = {"item_id": item["id"], "output_index": index, "content_index": 0}
            yield self.event("response.output_text.done", **where, text=part["text"], logprobs=[])
            yield self.event("response.content_part.done", **where, part=part)
            yield self.event("response.output_item.done", output_index=index, item=item)
        if self.call is not None:
            item, self.call = self.call, None
            item["status"] = "completed"
            yield self.event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                name=item["name"],
                arguments=item["arguments"],
            )
            yield self.event("response.output_item.done", output_index=index, item=item)


class ResponsesServing:
    def __init__(self, catalog: Catalog, engine: LLMEngine, images: ImageLoader, pool: PreparePool) -> None:
        self.catalog = catalog
        self.engine = engine
        self.images = images
        self.pool = pool

    async def create(self, body: ResponsesRequest, request: Request) -> Response | ResponseObject:
        chat = to_chat(body)
        model = self.catalog.require(chat.model, task="chat")
        request.state.model = model.key
        generation, tools = await prepare(chat, model, await self.catalog.renderer(model), self.images, self.pool)
        builder = ResponseBuilder(body, model.root, tools, constrains_to_json(chat.response_format, chat.structured_outputs))
        deltas = self.engine.generate(model.key, generation, request.state.request_id)
        to_error = self.engine.to_error(model.key)
        if body.stream:
            events = builder.events(self.engine.coalesced(model.key, await primed(deltas, to_error)))
            return sse_response(events, to_error, frame=_frame, error_frame=builder.error_event, end=None)

        async def collect() -> ResponseObject:
            await drained(deltas, builder.add, to_error)
            return ResponseObject.model_validate(builder.whole())

        return await until_disconnect(request, collect())


async def get_responses_serving(request: Request) -> ResponsesServing:
    serving: ResponsesServing = request.app.state.responses
    return serving


ResponsesServingDep = Annotated[ResponsesServing, Depends(get_responses_serving)]
