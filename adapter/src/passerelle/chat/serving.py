"""Chat completions: prepare (check, images, prompt, budget) → run (one generation on Triton's vLLM
backend, under the model's lifecycle) → format (OpenAI's completion or its chunks) → errors."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import Response

from passerelle.chat.hermes import HermesStream, StreamDelta, extract
from passerelle.chat.images import ImageLoader
from passerelle.chat.messages import ImageSources, template_messages
from passerelle.chat.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChoiceLogprobs,
    ChunkDelta,
    ResponseFunction,
    ResponseToolCall,
    TokenLogprob,
    TopLogprob,
    Usage,
    check_common,
    refuse,
    sampling_parameters,
    token_budget,
)
from passerelle.chat.structured import ControlEscaper, constrains_to_json
from passerelle.chat.tools import ToolPlan, new_call_id, plan
from passerelle.core.catalog import Catalog, PromptRenderer, ServedModel
from passerelle.core.errors import InvalidRequest
from passerelle.core.observability import Metrics
from passerelle.core.streaming import ToError, coalesced, drained, primed, sse_response, until_disconnect
from passerelle.core.workers import PreparePool
from passerelle.triton.lifecycle import ModelControl
from passerelle.triton.upstreams import Tritons
from passerelle.triton.vllm import Delta, Generation, TokenChoice

_NOTHING_MORE = '"logprobs":null,"finish_reason":null'


def check_supported(request: ChatCompletionRequest) -> None:
    check_common(request)
    if request.functions or request.function_call is not None:
        raise refuse("functions", "the deprecated functions API is not implemented; use 'tools' and 'tool_choice'")
    if request.modalities and set(request.modalities) != {"text"}:
        raise refuse("modalities", "this model answers in text only")
    if request.audio is not None:
        raise refuse("audio", "this model answers in text only")
    if request.prediction is not None:
        raise refuse("prediction", "predicted outputs are not implemented")
    if request.reasoning_effort is not None:
        raise refuse("reasoning_effort", "this model has no reasoning mode to configure")
    if request.web_search_options is not None:
        raise refuse("web_search_options", "this gateway has no web search")
    if request.top_logprobs is not None and not request.logprobs:
        raise InvalidRequest("'top_logprobs' requires 'logprobs' to be true", param="top_logprobs", code="invalid_value")


def check_prompt_chars(model: ServedModel, renderer: PromptRenderer, chars: int, param: str) -> None:
    """Refuse, before any tokenizing, a text too long in characters for the context to hold."""
    context = model.max_model_len
    if context is not None and chars > renderer.max_prompt_chars(context):
        raise InvalidRequest(
            f"This model's maximum context length is {context} tokens, and the {param} hold {chars} characters, "
            f"more than {context} tokens can (at most {renderer.max_token_chars} characters each). Please reduce the {param}.",
            param=param,
            code="context_length_exceeded",
        )


async def prepare(
    request: ChatCompletionRequest, model: ServedModel, renderer: PromptRenderer, images: ImageLoader, pool: PreparePool
) -> tuple[Generation, ToolPlan | None]:
    """Check the request and fetch its image URLs on the loop; decode the images, render the prompt and
    count its tokens in the preparation pool (one job: one thread per request)."""
    check_supported(request)
    options = request.structured_outputs
    tools = plan(request.tools, request.tool_choice, request.parallel_tool_calls, bool(options and options.disable_any_whitespace))
    messages, sources, chars = await template_messages(request, model, images)
    if tools is not None:
        chars += len(json.dumps(tools.shown, ensure_ascii=False))
    check_prompt_chars(model, renderer, chars, "messages")
    generation = await pool.run(_render, request, model, renderer, images, messages, sources, tools)
    return generation, tools


def _render(
    request: ChatCompletionRequest,
    model: ServedModel,
    renderer: PromptRenderer,
    images: ImageLoader,
    messages: list[dict[str, Any]],
    sources: ImageSources,
    tools: ToolPlan | None,
) -> Generation:
    loaded = [images.prepare(source, param) for source, param in sources]
    prompt = renderer.render_chat(messages, tools.shown if tools and tools.shown else None)
    requested = request.max_completion_tokens if request.max_completion_tokens is not None else request.max_tokens
    field = "max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens"
    max_tokens = token_budget(model, requested, renderer.count_tokens(prompt), field)
    logprobs = (request.top_logprobs or 0) if request.logprobs else None
    sampling = sampling_parameters(request, max_tokens, logprobs, request.response_format, tools)
    return Generation(prompt=prompt, sampling=sampling, images=loaded, logprobs=request.logprobs)


def _token_logprobs(positions: list[list[TokenChoice]], top: int) -> list[TokenLogprob]:
    converted = []
    for candidates in positions:
        sampled = candidates[0]
        alternatives = sorted((c for c in candidates if c.rank <= top), key=lambda c: c.rank)[:top]
        converted.append(
            TokenLogprob(
                token=sampled.token,
                logprob=sampled.logprob,
                bytes=list(sampled.token.encode("utf-8")),
                top_logprobs=[TopLogprob(token=c.token, logprob=c.logprob, bytes=list(c.token.encode("utf-8"))) for c in alternatives],
            )
        )
    return converted


class ChatAccumulator:
    """Accumulates deltas into choices and usage; emits chunks for streaming.

    Plain content chunks (no logprobs), one per token on a busy server, are written from a template
    made once per request: only the text is serialised per chunk. Other chunks go through the models.
    """

    def __init__(self, request: ChatCompletionRequest, request_id: str, model_name: str, tools: ToolPlan | None = None) -> None:
        self.request = request
        # With tools, each choice's text is read for Hermes calls as it streams.
        self.parsers = [HermesStream(new_call_id) for _ in range(request.n)] if tools is not None and tools.parse else None
        json_answer = constrains_to_json(request.response_format, request.structured_outputs)
        self.escapers = [ControlEscaper() for _ in range(request.n)] if json_answer else None
        self.id = f"chatcmpl-{request_id}"
        self.created = int(time.time())
        self.model = model_name
        self.pieces: list[list[str]] = [[] for _ in range(request.n)]  # joined once, at the end
        self.reasons: list[str | None] = [None] * request.n
        self.logprobs: list[list[TokenLogprob]] = [[] for _ in range(request.n)]
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.top = request.top_logprobs or 0
        head = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model}
        self._head = json.dumps(head, separators=(",", ":"))[:-1] + ',"choices":['
        self._tail = '],"usage":null,"system_fingerprint":null}'

    def add(self, delta: Delta) -> tuple[list[tuple[int, str, list[TokenLogprob]]], list[tuple[int, str]]]:
        """Record a delta; return its new content per choice, (index, text, logprobs), and the choices
        it finished, (index, reason)."""
        if delta.prompt_tokens is not None:
            self.prompt_tokens = delta.prompt_tokens
        self.completion_tokens += sum(delta.output_tokens)
        content: list[tuple[int, str, list[TokenLogprob]]] = []
        finished: list[tuple[int, str]] = []
        for index, text in enumerate(delta.texts):
            new_logprobs = _token_logprobs(delta.logprobs[index], self.top) if delta.logprobs else []
            if self.escapers is not None:
                text = self.escapers[index](text)
            self.pieces[index].append(text)
            self.logprobs[index].extend(new_logprobs)
            if text or new_logprobs:
                content.append((index, text, new_logprobs))
            reason = delta.finish_reasons[index]
            if reason is not None:
                self.reasons[index] = reason
                finished.append((index, reason))
        return content, finished

    def usage(self) -> Usage:
        return Usage.of(self.prompt_tokens, self.completion_tokens)

    def completion(self) -> ChatCompletion:
        choices = []
        for index, pieces in enumerate(self.pieces):
            message, reason = AssistantMessage(content="".join(pieces)), self.reasons[index]
            if self.parsers is not None and message.content is not None:
                found = extract(message.content, new_call_id)
                message.content = found.content
                if found.calls:
                    message.tool_calls = [
                        ResponseToolCall(id=c.id, function=ResponseFunction(name=c.name, arguments=c.arguments)) for c in found.calls
                    ]
                    reason = "tool_calls" if reason == "stop" else reason
            logprobs = ChoiceLogprobs(content=self.logprobs[index]) if self.request.logprobs else None
            choices.append(ChatChoice(index=index, message=message, logprobs=logprobs, finish_reason=reason))
        return ChatCompletion(id=self.id, created=self.created, model=self.model, choices=choices, usage=self.usage())

    def chunk(self, choices: list[ChatChunkChoice], usage: Usage | None = None) -> str:
        body = ChatCompletionChunk(id=self.id, created=self.created, model=self.model, choices=choices, usage=usage)
        return body.model_dump_json()

    def content_chunk(self, content: list[tuple[int, str, list[TokenLogprob]]]) -> str:
        if self.request.logprobs:
            return self.chunk(
                [
                    ChatChunkChoice(index=index, delta=ChunkDelta(content=text), logprobs=ChoiceLogprobs(content=logprobs))
                    for index, text, logprobs in content
                ]
            )
        choices = ",".join(
            f'{{"index":{index},"delta":{{"role":null,"content":{json.dumps(text, ensure_ascii=False)}}},{_NOTHING_MORE}}}'
            for index, text, _ in content
        )
        return self._head + choices + self._tail

    def parsed_chunk(self, content: list[tuple[int, str, list[TokenLogprob]]]) -> str | None:
        """Content read for tool calls: the text that is content, and the calls' deltas."""
        assert self.parsers is not None
        choices = []
        for index, text, logprobs in content:
            parsed = self.parsers[index].feed(text)
            if parsed or logprobs:
                choices.append(self._parsed_choice(index, parsed, logprobs))
        return self.chunk(choices) if choices else None

    def _parsed_choice(self, index: int, parsed: StreamDelta, logprobs: list[TokenLogprob]) -> ChatChunkChoice:
        calls: list[dict[str, Any]] = [
            {"index": c.index, "id": c.id, "type": "function", "function": {"name": c.name, "arguments": ""}}
            if c.name is not None
            else {"index": c.index, "function": {"arguments": c.arguments}}
            for c in parsed.calls
        ]
        return ChatChunkChoice(
            index=index,
            delta=ChunkDelta(content=parsed.content or None, tool_calls=calls or None),
            logprobs=ChoiceLogprobs(content=logprobs) if self.request.logprobs else None,
        )

    def finish_chunk(self, finished: list[tuple[int, str]]) -> str:
        return self.chunk([ChatChunkChoice(index=index, delta=ChunkDelta(), finish_reason=reason) for index, reason in finished])

    def finishing(self, finished: list[tuple[int, str]]) -> list[str]:
        """The finish chunks; with tools, first the text that became neither content nor a call, and
        "tool_calls" for a choice that called."""
        if self.parsers is None:
            return [self.finish_chunk(finished)]
        chunks, reasons = [], []
        for index, reason in finished:
            parser = self.parsers[index]
            rest = parser.finish()
            if rest:
                chunks.append(self.chunk([self._parsed_choice(index, rest, [])]))
            reasons.append((index, "tool_calls" if parser.called and reason == "stop" else reason))
        return [*chunks, self.finish_chunk(reasons)]

    async def sse(self, deltas: AsyncGenerator[Delta]) -> AsyncGenerator[str]:
        async with aclosing(deltas):
            yield self.chunk([ChatChunkChoice(index=i, delta=ChunkDelta(role="assistant", content="")) for i in range(self.request.n)])
            async for delta in deltas:
                content, finished = self.add(delta)
                if content:
                    chunk = self.content_chunk(content) if self.parsers is None else self.parsed_chunk(content)
                    if chunk is not None:
                        yield chunk
                if finished:
                    for chunk in self.finishing(finished):
                        yield chunk
        if self.request.stream_options is not None and self.request.stream_options.include_usage:
            yield self.chunk([], usage=self.usage())


class LLMEngine:
    """Generations on Triton's vLLM backend, each under its model's lifecycle and metrics (chat and completions)."""

    def __init__(self, triton: Tritons, control: ModelControl, metrics: Metrics) -> None:
        self.triton = triton
        self.control = control
        self.metrics = metrics

    async def generate(self, model: str, generation: Generation, request_id: str) -> AsyncGenerator[Delta]:
        async with self.control.serving(model):
            with self.metrics.generation(model) as observe:
                async with aclosing(self.triton.generate(model, generation, request_id)) as deltas:
                    async for delta in deltas:
                        observe(delta.prompt_tokens, sum(delta.output_tokens))
                        yield delta

    def coalesced(self, model: str, deltas: AsyncGenerator[Delta]) -> AsyncGenerator[Delta]:
        """For streaming: the responses that wait while the client is slow go out as one chunk."""
        return coalesced(deltas, Delta.merge, self.metrics.merges(model))

    def to_error(self, model: str) -> ToError:
        return lambda failure: self.control.api_error(failure, model)


class ChatServing:
    def __init__(self, catalog: Catalog, engine: LLMEngine, images: ImageLoader, pool: PreparePool) -> None:
        self.catalog = catalog
        self.engine = engine
        self.images = images
        self.pool = pool

    async def create(self, body: ChatCompletionRequest, request: Request) -> Response | ChatCompletion:
        model = self.catalog.require(body.model, task="chat")
        request.state.model = model.key
        generation, tools = await prepare(body, model, await self.catalog.renderer(model), self.images, self.pool)
        request_id = request.state.request_id
        accumulator = ChatAccumulator(body, request_id, model.root, tools)
        deltas = self.engine.generate(model.key, generation, request_id)
        to_error = self.engine.to_error(model.key)
        if body.stream:
            return sse_response(accumulator.sse(self.engine.coalesced(model.key, await primed(deltas, to_error))), to_error)

        async def collect() -> ChatCompletion:
            await drained(deltas, accumulator.add, to_error)
            return accumulator.completion()

        return await until_disconnect(request, collect())


async def get_chat_serving(request: Request) -> ChatServing:
    serving: ChatServing = request.app.state.chat
    return serving


ChatServingDep = Annotated[ChatServing, Depends(get_chat_serving)]
