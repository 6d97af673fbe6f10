"""Structured outputs through Triton's vLLM backend contract, with the official SDK.

The tiny model's weights are random, so the constraint alone makes the answers valid: each must
parse and validate against the request's schema (jsonschema), finish with "stop" (a "length" finish
fails: the bounded schemas and `disable_any_whitespace` let a random model terminate), match the
regular expression, or be one of the choices.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

SCHEMAS: dict[str, dict[str, Any]] = {
    "flat": {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 8}, "age": {"type": "integer", "minimum": 0, "maximum": 120}},
        "required": ["name", "age"],
        "additionalProperties": False,
    },
    "enum": {
        "type": "object",
        "properties": {"mood": {"enum": ["happy", "sad", "calm"]}, "ok": {"type": "boolean"}},
        "required": ["mood", "ok"],
        "additionalProperties": False,
    },
    "nested-array": {
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "maxItems": 3,
                "items": {
                    "type": "object",
                    "properties": {"id": {"type": "integer", "minimum": 0, "maximum": 9}, "tag": {"enum": ["a", "b"]}},
                    "required": ["id", "tag"],
                    "additionalProperties": False,
                },
            },
            "owner": {
                "type": "object",
                "properties": {"label": {"type": "string", "maxLength": 5}},
                "required": ["label"],
                "additionalProperties": False,
            },
        },
        "required": ["items", "owner"],
        "additionalProperties": False,
    },
}
NO_WHITESPACE = {"structured_outputs": {"disable_any_whitespace": True}}


def _format(name: str) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name.replace("-", "_"), "schema": SCHEMAS[name], "strict": True}}


@pytest.mark.parametrize("name", list(SCHEMAS))
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_json_schema_answers_validate(client: openai.OpenAI, name: str, stream: bool) -> None:
    request: dict[str, Any] = {
        "model": "qwen",
        "messages": [{"role": "user", "content": "Describe it as JSON"}],
        "response_format": _format(name),
        "max_tokens": 400,
        "temperature": 1.0,
        "seed": 11,
        "extra_body": NO_WHITESPACE,
    }
    if stream:
        text, reason = "", None
        for chunk in client.chat.completions.create(stream=True, **request):
            for choice in chunk.choices:
                text += choice.delta.content or ""
                reason = choice.finish_reason or reason
    else:
        answer = client.chat.completions.create(**request).choices[0]
        text, reason = answer.message.content or "", answer.finish_reason
    assert reason == "stop", (reason, text)
    jsonschema.validate(json.loads(text), SCHEMAS[name])


def test_choice_and_regex(client: openai.OpenAI) -> None:
    hello: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Pick one"}]
    for seed in (1, 2, 3):
        choice = client.chat.completions.create(
            model="qwen", messages=hello, max_tokens=20, seed=seed, extra_body={"structured_outputs": {"choice": ["red", "green", "blue"]}}
        )
        assert choice.choices[0].message.content in ("red", "green", "blue")
        regex = client.chat.completions.create(
            model="qwen", messages=hello, max_tokens=20, seed=seed, extra_body={"structured_outputs": {"regex": "[a-c]{3}-[0-9]{2}"}}
        )
        assert re.fullmatch("[a-c]{3}-[0-9]{2}", regex.choices[0].message.content or "")


def test_completions_take_the_extension_too(client: openai.OpenAI) -> None:
    answer = client.completions.create(
        model="qwen", prompt="The answer is", max_tokens=10, extra_body={"structured_outputs": {"choice": ["yes", "no"]}}
    )
    assert answer.choices[0].text in ("yes", "no")


def test_an_invalid_schema_never_reaches_triton(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(
            model="qwen",
            messages=[{"role": "user", "content": "hi"}],
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "required": "a"}}},
        )
    assert raised.value.param == "response_format.json_schema.schema" and raised.value.code == "invalid_json_schema"
    assert "not a valid JSON Schema" in raised.value.message
