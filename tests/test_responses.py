"""The Responses API with the official SDK: `client.responses.create` and `client.responses.stream`,
with text, an image and a tool, on the real stack."""

from __future__ import annotations

import base64
import json
from typing import Any

import jsonschema
import openai
import pytest
from openai.types.responses import FunctionToolParam, ResponseInputParam

from conftest import png_bytes

TIME_SCHEMA = {
    "type": "object",
    "properties": {"zone": {"type": "string", "maxLength": 6}},
    "required": ["zone"],
    "additionalProperties": False,
}
TIME_TOOL: FunctionToolParam = {
    "type": "function",
    "name": "get_time",
    "description": "Time in a zone",
    "parameters": TIME_SCHEMA,
    "strict": True,
}
NO_WHITESPACE = {"structured_outputs": {"disable_any_whitespace": True}}


def test_text_with_instructions(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model="qwen", input="Say hello", instructions="Be brief.", max_output_tokens=8, temperature=0.7, top_p=0.9
    )
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.instructions == "Be brief." and response.max_output_tokens == 8 and response.to_dict()["store"] is False
    assert [item.type for item in response.output] == ["message"]
    assert response.usage is not None and 1 <= response.usage.output_tokens <= 8
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    if response.status == "incomplete":
        assert response.usage.output_tokens == 8 and response.incomplete_details is not None
        assert response.incomplete_details.reason == "max_output_tokens"
    else:
        assert response.status == "completed"
    # The instructions are the system turn: the same prompt as chat's.
    chat = client.chat.completions.create(
        model="qwen", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}], max_tokens=1
    )
    assert chat.usage is not None and response.usage.input_tokens == chat.usage.prompt_tokens


def test_an_image_in_the_input(client: openai.OpenAI) -> None:
    url = "data:image/png;base64," + base64.b64encode(png_bytes(96, 64)).decode()
    with_image: ResponseInputParam = [
        {
            "role": "user",
            "content": [{"type": "input_text", "text": "What is this?"}, {"type": "input_image", "image_url": url, "detail": "auto"}],
        }
    ]
    without: ResponseInputParam = [{"role": "user", "content": [{"type": "input_text", "text": "What is this?"}]}]
    seen = client.responses.create(model="qwen", input=with_image, max_output_tokens=2)
    blind = client.responses.create(model="qwen", input=without, max_output_tokens=2)
    assert seen.usage is not None and blind.usage is not None
    # A 96x64 image is 6 image tokens between <|vision_start|> and <|vision_end|> (scripts/build_tiny_qwen.py).
    assert seen.usage.input_tokens - blind.usage.input_tokens == 8


def test_a_forced_tool_call(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model="qwen",
        input="What time is it in Paris?",
        tools=[TIME_TOOL],
        tool_choice={"type": "function", "name": "get_time"},
        max_output_tokens=100,
        extra_body=NO_WHITESPACE,
    )
    calls = [item for item in response.output if item.type == "function_call"]
    assert response.status == "completed" and len(calls) == 1 and calls[0].name == "get_time"
    jsonschema.validate(json.loads(calls[0].arguments), TIME_SCHEMA)
    # The call goes back as input items, with its result, for the next turn (no stored state).
    follow_up: ResponseInputParam = [
        {"role": "user", "content": "What time is it in Paris?"},
        {"type": "function_call", "call_id": calls[0].call_id, "name": "get_time", "arguments": calls[0].arguments},
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "14:05"},
    ]
    answer = client.responses.create(model="qwen", input=follow_up, tools=[TIME_TOOL], max_output_tokens=4)
    assert answer.status in ("completed", "incomplete") and answer.output


def test_streamed_text_events(client: openai.OpenAI) -> None:
    with client.responses.stream(model="qwen", input="Say hello", max_output_tokens=12) as stream:
        events = list(stream)
    # As OpenAI does, an answer cut by max_output_tokens ends with `response.incomplete` (the SDK's
    # get_final_response() wants `response.completed`); both carry the final response.
    last = events[-1]
    assert last.type in ("response.completed", "response.incomplete")
    final = last.response
    assert final.status == ("completed" if last.type == "response.completed" else "incomplete")
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    order = [kinds.index(kind) for kind in ("response.output_item.added", "response.content_part.added", "response.output_text.delta")]
    assert order == sorted(order)
    assert [event.sequence_number for event in events] == list(range(len(events)))
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert text == final.output_text and final.usage is not None and final.usage.output_tokens <= 12


def test_streamed_function_call_events(client: openai.OpenAI) -> None:
    with client.responses.stream(
        model="qwen",
        input="What time is it in Paris?",
        tools=[TIME_TOOL],
        tool_choice="required",
        parallel_tool_calls=False,
        max_output_tokens=100,
        extra_body=NO_WHITESPACE,
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [event.type for event in events]
    assert "response.function_call_arguments.delta" in kinds and kinds[-1] == "response.completed"
    fragments: dict[int, str] = {}
    for event in events:
        if event.type == "response.function_call_arguments.delta":
            fragments[event.output_index] = fragments.get(event.output_index, "") + event.delta
    calls = {index: item for index, item in enumerate(final.output) if item.type == "function_call"}
    assert calls and {call.name for call in calls.values()} == {"get_time"}
    assert fragments == {index: call.arguments for index, call in calls.items()}
    for call in calls.values():
        jsonschema.validate(json.loads(call.arguments), TIME_SCHEMA)
    assert not any(item.type == "message" for item in final.output), "no markup leaks into a message"


@pytest.mark.parametrize(
    ("extra", "param"),
    [({"store": True}, "store"), ({"previous_response_id": "resp_123"}, "previous_response_id"), ({"background": True}, "background")],
)
def test_stored_state_is_refused_clearly(client: openai.OpenAI, extra: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(model="qwen", input="hi", max_output_tokens=2, **extra)
    assert raised.value.param == param and raised.value.code == "unsupported_parameter"
