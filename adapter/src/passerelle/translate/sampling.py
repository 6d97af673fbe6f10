"""OpenAI request fields -> vLLM `SamplingParams` fields, shared by chat and completions.

Fields that would change the answer and that the stack does not implement are refused by
name (400), never dropped. `max_tokens` always travels explicitly: vLLM's own default is
16 tokens, which would silently truncate answers.
"""

from __future__ import annotations

from typing import Any

from passerelle.errors import InvalidRequest
from passerelle.schemas.openai import SamplingFields
from passerelle.services.catalog import ServedModel

MAX_STOP_SEQUENCES = 4


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
        raise refuse("logit_bias", "the Triton vLLM backend contract has no logit bias input")
    if request.stream_options is not None and not request.stream:
        raise InvalidRequest("'stream_options' is only allowed when 'stream' is true", param="stream_options", code="invalid_value")


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


def sampling_parameters(request: SamplingFields, max_tokens: int, logprobs: int | None) -> dict[str, Any]:
    params: dict[str, Any] = {"n": request.n, "max_tokens": max_tokens}
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
