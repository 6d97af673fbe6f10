"""Tool calling on the real stack, with the official SDK.

The tiny model's weights are random, so the oracles are independent of what it says: a named or
`required` tool choice constrains decoding to a call (an xgrammar structural tag in Hermes markup), so
the call's name must be right and its arguments must validate against the tool's schema (jsonschema);
`auto` is driven end to end by a structured-outputs regex that forces Hermes markup.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import jsonschema
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam
from pydantic import BaseModel, Field

from conftest import Triton
from passerelle.core.catalog import PromptRenderer
from passerelle_stack.launcher import Stack

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"enum": ["Paris", "Rome", "Oslo"]}, "days": {"type": "integer", "minimum": 1, "maximum": 7}},
    "required": ["city", "days"],
    "additionalProperties": False,
}
TIME_SCHEMA = {
    "type": "object",
    "properties": {"zone": {"type": "string", "maxLength": 6}},
    "required": ["zone"],
    "additionalProperties": False,
}
SCHEMAS = {"get_weather": WEATHER_SCHEMA, "get_time": TIME_SCHEMA}
TOOLS: list[ChatCompletionToolParam] = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather forecast", "parameters": WEATHER_SCHEMA}},
    {"type": "function", "function": {"name": "get_time", "description": "Time in a zone", "parameters": TIME_SCHEMA}},
]
ASK: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Weather in Paris, and the time?"}]
NO_WHITESPACE = {"structured_outputs": {"disable_any_whitespace": True}}
TWO_CALLS = (
    r'<tool_call>\n\{"name": "get_weather", "arguments": \{"city": "(Paris|Rome)", "days": [1-7]\}\}\n</tool_call>\n'
    r'<tool_call>\n\{"name": "get_time", "arguments": \{"zone": "(UTC|CET)"\}\}\n</tool_call>'
)


def collect(client: openai.OpenAI, stream: bool, **request: Any) -> tuple[str | None, list[tuple[str, str]], str | None]:
    """(content, [(name, arguments)], finish_reason), whole or assembled from the stream with its order checked."""
    base: dict[str, Any] = {"model": "qwen", "messages": ASK, "tools": TOOLS, "max_tokens": 300, "temperature": 1.0, "seed": 5}
    if not stream:
        choice = client.chat.completions.create(**(base | request)).choices[0]
        calls = [(call.function.name, call.function.arguments) for call in choice.message.tool_calls or [] if call.type == "function"]
        return choice.message.content, calls, choice.finish_reason
    content, reason = "", None
    named: dict[int, list[str]] = {}
    for chunk in client.chat.completions.create(stream=True, **(base | request)):
        for streamed in chunk.choices:
            content += streamed.delta.content or ""
            for call in streamed.delta.tool_calls or []:
                assert call.function is not None
                if call.index not in named:
                    # The first delta of a call carries its id, type and name.
                    assert call.id and call.type == "function" and call.function.name, call
                    named[call.index] = [call.function.name, call.function.arguments or ""]
                else:
                    assert call.id is None and call.function.name is None, call
                    named[call.index][1] += call.function.arguments or ""
            reason = streamed.finish_reason or reason
    return content or None, [(name, arguments) for name, arguments in (named[i] for i in sorted(named))], reason


def assert_valid(calls: list[tuple[str, str]]) -> None:
    for name, arguments in calls:
        jsonschema.validate(json.loads(arguments), SCHEMAS[name])


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_named_tool_choice_gives_a_valid_call(client: openai.OpenAI, stream: bool) -> None:
    choice = {"type": "function", "function": {"name": "get_time"}}
    content, calls, reason = collect(client, stream, tool_choice=choice, extra_body=NO_WHITESPACE)
    assert reason == "tool_calls" and content is None, (reason, content)
    assert [name for name, _ in calls] == ["get_time"]
    assert_valid(calls)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_required_tool_choice_gives_valid_calls(client: openai.OpenAI, stream: bool) -> None:
    content, calls, reason = collect(client, stream, tool_choice="required", parallel_tool_calls=False, extra_body=NO_WHITESPACE)
    assert reason == "tool_calls" and content is None, (reason, content)
    assert len(calls) == 1 and calls[0][0] in SCHEMAS
    assert_valid(calls)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_auto_reads_the_models_hermes_calls(client: openai.OpenAI, stream: bool) -> None:
    """A regex makes the tiny model write two Hermes calls; `auto` reads them out of the text."""
    content, calls, reason = collect(client, stream, extra_body={"structured_outputs": {"regex": TWO_CALLS}})
    assert reason == "tool_calls" and content is None, (reason, content)
    assert [name for name, _ in calls] == ["get_weather", "get_time"]
    assert_valid(calls)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_malformed_markup_is_returned_as_content(client: openai.OpenAI, stream: bool) -> None:
    text = "<tool_call>\nnot json\n</tool_call>"
    content, calls, reason = collect(client, stream, extra_body={"structured_outputs": {"regex": "<tool_call>\nnot json\n</tool_call>"}})
    assert (content, calls, reason) == (text, [], "stop")


def test_tool_choice_none_answers_in_text_without_showing_the_tools(client: openai.OpenAI) -> None:
    forced = {"structured_outputs": {"regex": TWO_CALLS}}
    content, calls, reason = collect(client, False, tool_choice="none", extra_body=forced)
    assert calls == [] and reason == "stop" and content is not None and content.startswith("<tool_call>")
    with_tools = client.chat.completions.create(model="qwen", messages=ASK, tools=TOOLS, tool_choice="none", max_tokens=1)
    without = client.chat.completions.create(model="qwen", messages=ASK, max_tokens=1)
    assert with_tools.usage is not None and without.usage is not None
    assert with_tools.usage.prompt_tokens == without.usage.prompt_tokens


class GetWeather(BaseModel):
    city: Literal["Paris", "Rome", "Oslo"]
    days: int = Field(ge=1, le=7)


def test_the_sdks_strict_pydantic_tools(client: openai.OpenAI) -> None:
    """`pydantic_function_tool` marks the tool strict; the SDK's `parse` checks the arguments itself."""
    completion = client.chat.completions.parse(
        model="qwen",
        messages=ASK,
        tools=[openai.pydantic_function_tool(GetWeather)],
        tool_choice={"type": "function", "function": {"name": "GetWeather"}},
        max_tokens=100,
        seed=3,
        extra_body=NO_WHITESPACE,
    )
    message = completion.choices[0].message
    assert message.tool_calls and isinstance(message.tool_calls[0].function.parsed_arguments, GetWeather)


def test_a_tool_round_trip_reaches_the_template(client: openai.OpenAI, tiny_model_dir: Path) -> None:
    """History with the assistant's calls and the tools' results: the prompt the engine counted is
    the one the model's template renders from them."""
    calls = [
        {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris", "days": 1}'}},
        {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": '{"zone": "CET"}'}},
    ]
    history: list[ChatCompletionMessageParam] = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": calls},  # type: ignore[typeddict-item]
        {"role": "tool", "tool_call_id": "call_a", "content": "18 C, sunny"},
        {"role": "tool", "tool_call_id": "call_b", "content": "14:05"},
    ]
    answer = client.chat.completions.create(model="qwen", messages=history, tools=TOOLS, max_tokens=1)
    renderer = PromptRenderer.load(str(tiny_model_dir), tiny_model_dir.parent)
    text = [{"type": "text", "text": "Weather in Paris, and the time?"}]
    prompt = renderer.render_chat(
        [
            {"role": "user", "content": text},
            {"role": "assistant", "content": [], "tool_calls": calls},
            {"role": "tool", "content": [{"type": "text", "text": "18 C, sunny"}]},
            {"role": "tool", "content": [{"type": "text", "text": "14:05"}]},
        ],
        [dict(tool) for tool in TOOLS],
    )
    assert "<tool_response>\n14:05\n</tool_response>" in prompt
    assert answer.usage is not None and answer.usage.prompt_tokens == renderer.count_tokens(prompt)


def test_the_markup_tokens_are_kept_in_the_engine(client: openai.OpenAI, stack: Stack) -> None:
    """With tools, `skip_special_tokens: false` reaches Triton in `sampling_parameters` (as vLLM's hermes
    parser asks), and `required` sends its structural tag; seen in Triton's own request trace."""
    traced = Triton(stack)
    with traced.tensors("qwen"):
        client.chat.completions.create(model="qwen", messages=ASK, tools=TOOLS, max_tokens=2)
        client.chat.completions.create(model="qwen", messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=2)
        client.chat.completions.create(model="qwen", messages=ASK, max_tokens=2)
    auto, required, plain = traced.sampling_parameters()[-3:]
    assert auto["skip_special_tokens"] is False and "structured_outputs" not in auto
    tag = json.loads(json.loads(required["structured_outputs"])["structural_tag"])
    assert required["skip_special_tokens"] is False and tag["format"]["type"] == "tags_with_separator"
    assert {item["begin"] for item in tag["format"]["tags"]} >= {'<tool_call>\n{"name": "get_weather", "arguments": '}
    assert "skip_special_tokens" not in plain
