"""The vLLM backend's tensor contract: a `Generation` becomes the request's tensors, and each
response's tensors become a `Delta` (text, finish reason, token counts, logprobs). It knows nothing
of OpenAI, and nothing of the transport (`passerelle.triton.client`)."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tritonclient.grpc import InferInput, InferRequestedOutput, InferResult

from passerelle.core.errors import FailureKind, TritonFailure

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

    @property
    def finished(self) -> bool:
        """The final response: every choice has its finish reason."""
        return bool(self.finish_reasons) and all(reason is not None for reason in self.finish_reasons)

    @classmethod
    def merge(cls, deltas: list[Delta]) -> Delta:
        """Consecutive deltas of one request as one: texts joined, token counts summed, logprobs
        concatenated, each choice's finish reason kept (what a slow reader gets in one chunk)."""
        if len(deltas) == 1:
            return deltas[0]
        choices = len(deltas[0].texts)
        return cls(
            texts=["".join(delta.texts[i] for delta in deltas) for i in range(choices)],
            finish_reasons=[next((d.finish_reasons[i] for d in deltas if d.finish_reasons[i] is not None), None) for i in range(choices)],
            output_tokens=[sum(delta.output_tokens[i] for delta in deltas) for i in range(choices)],
            prompt_tokens=next((delta.prompt_tokens for delta in deltas if delta.prompt_tokens is not None), None),
            logprobs=(
                [[position for delta in deltas if delta.logprobs for position in delta.logprobs[i]] for i in range(choices)]
                if any(delta.logprobs for delta in deltas)
                else None
            ),
        )


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


_LENGTH = struct.Struct("<I")
_NUMBERS = {"UINT32": "I", "INT32": "i", "UINT64": "Q", "INT64": "q"}


def _outputs(result: InferResult) -> dict[str, tuple[str, bytes]]:
    """Each output's datatype and raw bytes, straight from the response message: one backend response
    per generated token makes numpy arrays per output a cost worth skipping."""
    response = result.get_response()
    if len(response.raw_output_contents) != len(response.outputs):
        raise TritonFailure(FailureKind.INTERNAL, "Triton sent outputs without raw contents, which this client does not read")
    return {output.name: (output.datatype, raw) for output, raw in zip(response.outputs, response.raw_output_contents, strict=True)}


def _strings(raw: bytes) -> list[str]:
    """A BYTES tensor: each element is a 4-byte little-endian length, then its bytes."""
    items, offset = [], 0
    while offset < len(raw):
        (size,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        items.append(raw[offset : offset + size].decode("utf-8", errors="replace"))
        offset += size
    return items


def _numbers(datatype: str, raw: bytes) -> list[int]:
    code = _NUMBERS.get(datatype)
    if code is None:
        raise TritonFailure(FailureKind.INTERNAL, f"expected an integer tensor, got {datatype}")
    return list(struct.unpack(f"<{len(raw) // struct.calcsize(code)}{code}", raw))


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
    outputs = _outputs(result)
    texts = _strings(outputs["text_output"][1]) if "text_output" in outputs else []
    reasons: list[str | None] = (
        [None if reason in _UNFINISHED else reason for reason in _strings(outputs["finish_reason"][1])]
        if "finish_reason" in outputs
        else [None] * len(texts)
    )
    counts = _numbers(*outputs["num_output_tokens"]) if "num_output_tokens" in outputs else [0] * len(texts)
    prompt = _numbers(*outputs["num_input_tokens"]) if "num_input_tokens" in outputs else []
    raw_logprobs = _strings(outputs["logprobs"][1]) if "logprobs" in outputs else []
    return Delta(
        texts=texts,
        finish_reasons=reasons,
        output_tokens=counts,
        prompt_tokens=prompt[0] if prompt else None,
        logprobs=[_parse_logprobs(item) for item in raw_logprobs] if raw_logprobs else None,
    )
