"""OpenAI's chat completions: request and response shapes, and the sampling fields that chat and
legacy completions share, with their translation into vLLM `SamplingParams` fields.

Requests forbid unknown fields, as OpenAI's API does ("Unrecognized request argument").
Fields that ordinary SDK callers send and that cannot change the answer are accepted and
ignored (docs/openai-api.md, "Accepted but ignored"). Fields that would change the answer and
that we do not implement are declared, so that they are refused by name (400), never dropped.
`max_tokens` always travels explicitly: vLLM's own default is 16 tokens, which would silently
truncate answers.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from passerelle.chat.structured import ResponseFormat, StructuredOutputs, constraint
from passerelle.chat.tools import AssistantToolCall, ChatTool, ToolChoice, ToolPlan
from passerelle.core.catalog import ServedModel
from passerelle.core.errors import InvalidRequest

# Requests: unknown fields are refused, and types are strict as OpenAI's are ("stream": "yes" is not true).
Strict = ConfigDict(extra="forbid", strict=True)
MAX_STOP_SEQUENCES = 4


class ImageURL(BaseModel):
    model_config = Strict
    url: str
    detail: Literal["auto", "low", "high"] | None = None  # accepted, ignored: the model sees the image at its own resolution


class TextPart(BaseModel):
    model_config = Strict
    type: Literal["text"]
    text: str


class ImagePart(BaseModel):
    model_config = Strict
    type: Literal["image_url"]
    image_url: ImageURL


class UnsupportedPart(BaseModel):
    """Parts clients may send (audio, files, refusals) that this model cannot take as input."""

    model_config = ConfigDict(extra="allow")
    type: Literal["input_audio", "file", "refusal", "video_url", "audio_url"]


ContentPart = Annotated[TextPart | ImagePart | UnsupportedPart, Field(discriminator="type")]


class ChatMessage(BaseModel):
    model_config = Strict
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None  # accepted, ignored
    tool_calls: list[AssistantToolCall] | None = None
    tool_call_id: str | None = None
    function_call: dict[str, Any] | None = None
    refusal: str | None = None  # accepted on assistant turns, ignored
    audio: dict[str, Any] | None = None


class StreamOptions(BaseModel):
    model_config = Strict
    include_usage: bool = False
    include_obfuscation: bool | None = None  # accepted, ignored


class SamplingFields(BaseModel):
    """Fields shared by chat and completions, with OpenAI's ranges."""

    model_config = Strict
    model: str = Field(min_length=1)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    n: int = Field(default=1, ge=1, le=16)
    seed: int | None = Field(default=None, ge=-(2**63), le=2**64 - 1)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    user: str | None = None  # accepted, ignored
    # vLLM extensions that SDK users pass through `extra_body`.
    top_k: int | None = Field(default=None, ge=-1)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    repetition_penalty: float | None = Field(default=None, gt=0.0, le=2.0)
    min_tokens: int | None = Field(default=None, ge=0)
    ignore_eos: bool | None = None
    structured_outputs: StructuredOutputs | None = None


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    tools: list[ChatTool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    web_search_options: dict[str, Any] | None = None
    # Accepted, ignored: they do not change the answer.
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    verbosity: str | None = None


# Responses ---------------------------------------------------------------------------------


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> Usage:
        return cls(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, total_tokens=prompt_tokens + completion_tokens)


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None
    refusal: None = None


class ResponseFunction(BaseModel):
    name: str
    arguments: str


class ResponseToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: ResponseFunction


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: None = None
    tool_calls: list[ResponseToolCall] | None = None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str | None = None


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    # {"index", "id", "type", "function": {"name", "arguments"}} first, then {"index", "function": {"arguments"}}
    tool_calls: list[dict[str, Any]] | None = Field(default=None, exclude_if=lambda calls: calls is None)


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChunkDelta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


# Sampling fields -> vLLM SamplingParams -------------------------------------------------------


def refuse(field: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"'{field}' is not supported: {why}", param=field, code="unsupported_parameter")


def stop_list(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else list(stop)
    if len(stops) > MAX_STOP_SEQUENCES:
        raise InvalidRequest(f"'stop' takes at most {MAX_STOP_SEQUENCES} sequences", param="stop", code="invalid_value")
    if any(not item for item in stops):
        raise InvalidRequest("'stop' sequences must not be empty", param="stop", code="invalid_value")
    return stops


def check_common(request: SamplingFields) -> None:
    if request.logit_bias:
        raise refuse(
            "logit_bias",
            "Triton's vLLM backend passes a logit_bias map to vLLM unconverted, so its token ids arrive as JSON strings "
            "where vLLM needs integers",
        )
    if request.stream_options is not None and not request.stream:
        raise InvalidRequest("'stream_options' is only allowed when 'stream' is true", param="stream_options", code="invalid_value")
    if request.n > 1 and request.temperature == 0:
        raise InvalidRequest(
            f"'n' is {request.n}, but greedy sampling ('temperature': 0) gives one answer; use n=1 or a temperature above 0",
            param="n",
            code="invalid_value",
        )


def token_budget(model: ServedModel, requested: int | None, prompt_tokens: int, field: str) -> int:
    """The explicit max_tokens to send: the client's, checked against the context, or what the context allows.

    `prompt_tokens` counts the rendered text; images add tokens that only the engine counts,
    so the engine still stops at the context limit with finish_reason "length".
    """
    context = model.max_model_len
    if context is None:
        if requested is None:
            raise InvalidRequest(f"'{field}' is required for this model", param=field, code="missing_required_parameter")
        return requested
    room = context - prompt_tokens
    if room < 1:
        raise InvalidRequest(
            f"This model's maximum context length is {context} tokens, and the prompt has {prompt_tokens} tokens.",
            param="messages",
            code="context_length_exceeded",
        )
    if requested is not None and requested > room:
        raise InvalidRequest(
            f"This model's maximum context length is {context} tokens. However, you requested {prompt_tokens + requested} tokens "
            f"({prompt_tokens} in the prompt, {requested} for the completion). Please reduce the prompt or '{field}'.",
            param=field,
            code="context_length_exceeded",
        )
    return requested if requested is not None else room


def sampling_parameters(
    request: SamplingFields,
    max_tokens: int,
    logprobs: int | None,
    response_format: ResponseFormat | None = None,
    tools: ToolPlan | None = None,
) -> dict[str, Any]:
    params: dict[str, Any] = {"n": request.n, "max_tokens": max_tokens}
    structured = constraint(response_format, request.structured_outputs, tools.constraint if tools else None)
    if structured is not None:
        params["structured_outputs"] = json.dumps(structured)  # NVIDIA's backend wants this value as a JSON string
    if tools is not None and tools.parse:
        # As vLLM's hermes parser does: some models mark the call tags special, and skipped tags break parsing.
        params["skip_special_tokens"] = False
    optional = {
        "temperature": request.temperature,
        "top_p": request.top_p,
        "seed": request.seed,
        "presence_penalty": request.presence_penalty,
        "frequency_penalty": request.frequency_penalty,
        "top_k": request.top_k,
        "min_p": request.min_p,
        "repetition_penalty": request.repetition_penalty,
        "min_tokens": request.min_tokens,
        "ignore_eos": request.ignore_eos,
        "logprobs": logprobs,
    }
    params.update({key: value for key, value in optional.items() if value is not None})
    stops = stop_list(request.stop)
    if stops:
        params["stop"] = stops
    if request.min_tokens is not None and request.min_tokens > max_tokens:
        raise InvalidRequest("'min_tokens' must not exceed 'max_tokens'", param="min_tokens", code="invalid_value")
    return params
