"""Generation through Triton's vLLM backend contract: a request becomes tensors, responses become deltas.

This module knows the backend's tensors and nothing of OpenAI. The adapter always asks for a
stream (`stream=True`, `exclude_input_in_output=True`), so that every request, streamed to the
client or not, can be cancelled the moment its client goes away.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tritonclient.grpc import InferInput, InferRequestedOutput, InferResult

from passerelle.observability import Metrics
from passerelle.services.model_control import ModelControl
from passerelle.services.triton import FailureKind, TritonClient, TritonFailure

_OUTPUTS = ("text_output", "finish_reason", "num_input_tokens", "num_output_tokens")
_UNFINISHED = ("", "None", "none", "null")


@dataclass
class Generation:
    """One call to the engine: a rendered prompt, base64 images and vLLM sampling parameters."""

    prompt: str
    sampling: dict[str, Any]
    images: list[str] = field(default_factory=list)
    logprobs: bool = False

    @property
    def n(self) -> int:
        return int(self.sampling.get("n", 1))


@dataclass
class TokenChoice:
    """One candidate at one position: the sampled token first, then the top alternatives."""

    token_id: int
    token: str
    logprob: float
    rank: int


@dataclass
class Delta:
    """What one backend response adds, per choice (position i is choice i)."""

    texts: list[str]
    finish_reasons: list[str | None]
    output_tokens: list[int]
    prompt_tokens: int | None
    logprobs: list[list[list[TokenChoice]]] | None


def _bytes_input(name: str, values: list[str]) -> InferInput:
    tensor = InferInput(name, [len(values)], "BYTES")
    tensor.set_data_from_numpy(np.array([value.encode("utf-8") for value in values], dtype=np.object_))
    return tensor


def _bool_input(name: str, value: bool) -> InferInput:
    tensor = InferInput(name, [1], "BOOL")
    tensor.set_data_from_numpy(np.array([value], dtype=bool))
    return tensor


def build_inputs(generation: Generation) -> tuple[list[InferInput], list[InferRequestedOutput]]:
    inputs = [
        _bytes_input("text_input", [generation.prompt]),
        _bool_input("stream", True),
        _bytes_input("sampling_parameters", [json.dumps(generation.sampling)]),
        _bool_input("exclude_input_in_output", True),
        _bool_input("return_finish_reason", True),
        _bool_input("return_num_input_tokens", True),
        _bool_input("return_num_output_tokens", True),
    ]
    if generation.images:
        inputs.append(_bytes_input("image", generation.images))
    names = list(_OUTPUTS)
    if generation.logprobs:
        inputs.append(_bool_input("return_logprobs", True))
        names.append("logprobs")
    return inputs, [InferRequestedOutput(name) for name in names]


def _strings(result: InferResult, name: str) -> list[str]:
    array = result.as_numpy(name)
    if array is None:
        return []
    return [item.decode("utf-8", errors="replace") if isinstance(item, bytes) else str(item) for item in array.reshape(-1)]


def _parse_logprobs(raw: str) -> list[list[TokenChoice]]:
    positions = json.loads(raw)
    if positions is None:
        return []
    parsed = []
    for position in positions:
        # vLLM lists the sampled token first, then the top-k alternatives.
        parsed.append(
            [
                TokenChoice(int(token_id), entry.get("decoded_token") or "", float(entry["logprob"]), int(entry["rank"]))
                for token_id, entry in position.items()
            ]
        )
    return parsed


def parse_response(result: InferResult) -> Delta:
    texts = _strings(result, "text_output")
    reasons = [None if reason in _UNFINISHED else reason for reason in _strings(result, "finish_reason")]
    counts = result.as_numpy("num_output_tokens")
    prompt = result.as_numpy("num_input_tokens")
    raw_logprobs = _strings(result, "logprobs")
    return Delta(
        texts=texts,
        finish_reasons=reasons or [None] * len(texts),
        output_tokens=[int(value) for value in counts.reshape(-1)] if counts is not None else [0] * len(texts),
        prompt_tokens=int(prompt.reshape(-1)[0]) if prompt is not None and prompt.size else None,
        logprobs=[_parse_logprobs(item) for item in raw_logprobs] if raw_logprobs else None,
    )


def _is_last(result: InferResult) -> bool:
    reasons = _strings(result, "finish_reason")
    return bool(reasons) and all(reason not in _UNFINISHED for reason in reasons)


class LLMService:
    def __init__(self, triton: TritonClient, control: ModelControl, metrics: Metrics) -> None:
        self.triton = triton
        self.control = control
        self.metrics = metrics

    async def generate(self, model: str, generation: Generation, request_id: str) -> AsyncGenerator[Delta]:
        """Deltas until every choice has finished. Loads the model first if Triton does not have it."""
        inputs, outputs = build_inputs(generation)
        started = time.perf_counter()
        self.control.in_flight[model] += 1
        in_flight = self.metrics.generations_in_flight.labels(model=model)
        in_flight.inc()
        try:
            for attempt in (1, 2):
                produced = False
                try:
                    async with aclosing(self.triton.stream(model, inputs, outputs, request_id, _is_last)) as results:
                        async for result in results:
                            delta = parse_response(result)
                            self._observe(model, delta, first=not produced, started=started)
                            produced = True
                            yield delta
                    return
                except TritonFailure as failure:
                    if failure.kind is not FailureKind.MODEL_NOT_READY or produced or attempt == 2:
                        raise
                await self.control.ensure_loaded(model)
        finally:
            self.control.in_flight[model] -= 1
            in_flight.dec()

    def _observe(self, model: str, delta: Delta, *, first: bool, started: float) -> None:
        if first:
            self.metrics.ttft.labels(model=model).observe(time.perf_counter() - started)
            if delta.prompt_tokens:
                self.metrics.tokens.labels(model=model, kind="prompt").inc(delta.prompt_tokens)
        produced = sum(delta.output_tokens)
        if produced:
            self.metrics.tokens.labels(model=model, kind="completion").inc(produced)
