"""Legacy completions: prepare (one generation per prompt) → run (on Triton's vLLM backend, under the
model's lifecycle) → format (OpenAI's text completion or its chunks) → errors."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import Response

from passerelle.chat.protocol import Usage, check_common, refuse, sampling_parameters, token_budget
from passerelle.chat.serving import LLMEngine, check_prompt_chars
from passerelle.completions.protocol import Completion, CompletionChoice, CompletionLogprobs, CompletionRequest
from passerelle.core.catalog import Catalog, PromptRenderer, ServedModel
from passerelle.core.errors import InvalidRequest, TritonFailure
from passerelle.core.streaming import primed, sse_response, until_disconnect
from passerelle.core.workers import PreparePool
from passerelle.triton.vllm import Delta, Generation

MAX_PROMPTS = 16


def prompts_of(request: CompletionRequest) -> list[str]:
    prompt = request.prompt
    if isinstance(prompt, str):
        return [prompt]
    if prompt and all(isinstance(item, str) for item in prompt):
        if len(prompt) > MAX_PROMPTS:
            raise InvalidRequest(f"at most {MAX_PROMPTS} prompts per request", param="prompt", code="invalid_value")
        return [str(item) for item in prompt]
    if not prompt:
        raise InvalidRequest("'prompt' must not be empty", param="prompt", code="invalid_value")
    raise refuse("prompt", "token-id prompts are not supported by the Triton vLLM backend contract; send text")


async def prepare(request: CompletionRequest, model: ServedModel, renderer: PromptRenderer, pool: PreparePool) -> list[Generation]:
    """Check the request on the loop; count each prompt's tokens in the preparation pool (one job)."""
    check_common(request)
    if request.suffix:
        raise refuse("suffix", "insertion (suffix) is not supported by this model")
    if request.best_of is not None and request.best_of != request.n:
        raise refuse("best_of", "vLLM's engine no longer implements best_of; use n")
    if request.echo and request.logprobs is not None:
        raise refuse("echo", "echo together with logprobs needs prompt logprobs, which the backend contract does not return")
    prompts = prompts_of(request)
    check_prompt_chars(model, renderer, max(map(len, prompts)), "prompt")
    counts = await pool.run(lambda: [renderer.count_tokens(prompt) for prompt in prompts])
    generations = []
    for prompt, prompt_tokens in zip(prompts, counts, strict=True):
        max_tokens = token_budget(model, request.max_tokens, prompt_tokens, "max_tokens")
        generations.append(
            Generation(
                prompt=prompt, sampling=sampling_parameters(request, max_tokens, request.logprobs), logprobs=request.logprobs is not None
            )
        )
    return generations


class CompletionAccumulator:
    def __init__(self, request: CompletionRequest, request_id: str, model_name: str, prompts: list[str]) -> None:
        self.request = request
        self.id = f"cmpl-{request_id}"
        self.created = int(time.time())
        self.model = model_name
        self.prompts = prompts
        count = len(prompts) * request.n
        self.pieces: list[list[str]] = [[prompts[i // request.n]] if request.echo else [] for i in range(count)]
        self.lengths = [sum(map(len, pieces)) for pieces in self.pieces]
        self.reasons: list[str | None] = [None] * count
        self.logprobs = [CompletionLogprobs(tokens=[], token_logprobs=[], top_logprobs=[], text_offset=[]) for _ in range(count)]
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def add(self, prompt_index: int, delta: Delta, *, first: bool) -> list[CompletionChoice]:
        if delta.prompt_tokens is not None and first:
            self.prompt_tokens += delta.prompt_tokens
        self.completion_tokens += sum(delta.output_tokens)
        choices = []
        for offset, text in enumerate(delta.texts):
            index = prompt_index * self.request.n + offset
            logprobs = None
            if delta.logprobs is not None:
                logprobs = CompletionLogprobs(tokens=[], token_logprobs=[], top_logprobs=[], text_offset=[])
                position = self.lengths[index]
                for candidates in delta.logprobs[offset]:
                    sampled = candidates[0]
                    logprobs.tokens.append(sampled.token)
                    logprobs.token_logprobs.append(sampled.logprob)
                    logprobs.top_logprobs.append({c.token: c.logprob for c in candidates if c.rank <= (self.request.logprobs or 0)})
                    logprobs.text_offset.append(position)
                    position += len(sampled.token)
                target = self.logprobs[index]
                for name in ("tokens", "token_logprobs", "top_logprobs", "text_offset"):
                    getattr(target, name).extend(getattr(logprobs, name))
            echo = self.prompts[prompt_index] if first and self.request.echo else ""
            self.pieces[index].append(text)
            self.lengths[index] += len(text)
            reason = delta.finish_reasons[offset]
            if reason is not None:
                self.reasons[index] = reason
            if echo or text or reason is not None or logprobs is not None:
                choices.append(CompletionChoice(index=index, text=echo + text, logprobs=logprobs, finish_reason=reason))
        return choices

    def usage(self) -> Usage:
        return Usage.of(self.prompt_tokens, self.completion_tokens)

    def completion(self) -> Completion:
        choices = [
            CompletionChoice(
                index=index,
                text=text,
                logprobs=self.logprobs[index] if self.request.logprobs is not None else None,
                finish_reason=self.reasons[index],
            )
            for index, text in enumerate("".join(pieces) for pieces in self.pieces)
        ]
        return Completion(id=self.id, created=self.created, model=self.model, choices=choices, usage=self.usage())

    def chunk(self, choices: list[CompletionChoice], usage: Usage | None = None) -> str:
        body = Completion(id=self.id, created=self.created, model=self.model, choices=choices, usage=usage)
        return body.model_dump_json()

    async def sse(self, streams: list[AsyncGenerator[Delta]]) -> AsyncGenerator[str]:
        try:
            for prompt_index, deltas in enumerate(streams):
                first = True
                async for delta in deltas:
                    choices = self.add(prompt_index, delta, first=first)
                    first = False
                    if choices:
                        yield self.chunk(choices)
        finally:
            for deltas in streams:
                await deltas.aclose()
        if self.request.stream_options is not None and self.request.stream_options.include_usage:
            yield self.chunk([], usage=self.usage())


class CompletionServing:
    def __init__(self, catalog: Catalog, engine: LLMEngine, pool: PreparePool) -> None:
        self.catalog = catalog
        self.engine = engine
        self.pool = pool

    async def create(self, body: CompletionRequest, request: Request) -> Response | Completion:
        model = self.catalog.require(body.model, task="chat")
        request.state.model = model.key
        generations = await prepare(body, model, await self.catalog.renderer(model), self.pool)
        request_id = request.state.request_id
        accumulator = CompletionAccumulator(body, request_id, model.root, [g.prompt for g in generations])
        streams = [self.engine.generate(model.key, g, f"{request_id}-{i}") for i, g in enumerate(generations)]
        to_error = self.engine.to_error(model.key)
        if body.stream:
            streams[0] = await primed(streams[0], to_error)
            streams = [self.engine.coalesced(model.key, stream) for stream in streams]
            return sse_response(accumulator.sse(streams), to_error)

        async def collect(index: int) -> None:
            first = True
            async with aclosing(streams[index]) as deltas:
                async for delta in deltas:
                    accumulator.add(index, delta, first=first)
                    first = False

        async def collect_all() -> Completion:
            try:
                await asyncio.gather(*(collect(i) for i in range(len(streams))))
            except TritonFailure as failure:
                raise to_error(failure) from failure
            return accumulator.completion()

        return await until_disconnect(request, collect_all())


async def get_completion_serving(request: Request) -> CompletionServing:
    serving: CompletionServing = request.app.state.completions
    return serving


CompletionServingDep = Annotated[CompletionServing, Depends(get_completion_serving)]
