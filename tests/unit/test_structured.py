"""response_format and structured_outputs → the engine's constraint, and the refusals (no Triton)."""

from __future__ import annotations

import json

import pytest

from passerelle.chat.protocol import ChatCompletionRequest, sampling_parameters
from passerelle.chat.structured import ControlEscaper, ResponseFormat, StructuredOutputs, constrains_to_json, constraint
from passerelle.core.errors import InvalidRequest

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


def test_free_text_has_no_constraint() -> None:
    assert constraint(None, None) is None
    assert constraint(ResponseFormat(type="text"), None) is None


def test_json_modes_and_options() -> None:
    schema = ResponseFormat.model_validate({"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA, "strict": True}})
    assert constraint(schema, None) == {"json": SCHEMA}
    assert constraint(ResponseFormat(type="json_object"), None) == {"json_object": True}
    options = StructuredOutputs.model_validate({"disable_any_whitespace": True})
    assert constraint(schema, options) == {"json": SCHEMA, "disable_any_whitespace": True}


@pytest.mark.parametrize(
    "given",
    [{"choice": ["yes", "no"]}, {"regex": "[a-c]{3}"}, {"grammar": 'root ::= "a"'}, {"json": SCHEMA}, {"json": json.dumps(SCHEMA)}],
)
def test_vllm_constraints_pass_through(given: dict[str, object]) -> None:
    fields = constraint(None, StructuredOutputs.model_validate(given))
    assert fields is not None
    key = next(iter(given))
    assert fields[key] == (SCHEMA if key == "json" else given[key])


@pytest.mark.parametrize(
    ("response_format", "extension", "param", "code"),
    [
        (
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}},
            None,
            "response_format.json_schema.schema",
            "invalid_json_schema",
        ),
        (
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"minLength": -1}}},
            None,
            "response_format.json_schema.schema",
            "invalid_json_schema",
        ),
        ({"type": "json_schema", "json_schema": {"name": "x"}}, None, "response_format.json_schema.schema", "missing_required_parameter"),
        (None, {"json": "{not json"}, "structured_outputs.json", "invalid_json_schema"),
        (None, {"json": "[1, 2]"}, "structured_outputs.json", "invalid_json_schema"),
        (None, {"regex": "(a"}, "structured_outputs.regex", "invalid_regex"),
        (None, {"choice": ["a"], "regex": "a"}, "structured_outputs", "invalid_value"),
        ({"type": "json_object"}, {"choice": ["a"]}, "structured_outputs", "invalid_value"),
        (None, {"whitespace_pattern": " "}, "structured_outputs", "invalid_value"),
    ],
)
def test_refusals_name_the_field(
    response_format: dict[str, object] | None, extension: dict[str, object] | None, param: str, code: str
) -> None:
    with pytest.raises(InvalidRequest) as raised:
        constraint(
            ResponseFormat.model_validate(response_format) if response_format else None,
            StructuredOutputs.model_validate(extension) if extension else None,
        )
    assert (raised.value.param, raised.value.code) == (param, code)


def test_the_backend_gets_a_json_string_under_structured_outputs() -> None:
    """NVIDIA's backend builds StructuredOutputsParams(**json.loads(value)) from this key (after 25.11)."""
    request = ChatCompletionRequest.model_validate(
        {"model": "qwen", "messages": [{"role": "user", "content": "hi"}], "structured_outputs": {"choice": ["a", "b"]}}
    )
    params = sampling_parameters(request, 8, None)
    assert isinstance(params["structured_outputs"], str)
    assert json.loads(params["structured_outputs"]) == {"choice": ["a", "b"]}


def test_control_characters_in_json_strings_are_escaped_wherever_the_text_is_cut() -> None:
    """xgrammar lets a raw control character into a JSON string; strict parsers refuse it."""
    text = '{"a": "x\x1ay\\"\x03", "b":\n[1, "\t"]}'
    expected = '{"a": "x\\u001ay\\"\\u0003", "b":\n[1, "\\u0009"]}'
    for cut in range(len(text) + 1):
        escape = ControlEscaper()
        assert escape(text[:cut]) + escape(text[cut:]) == expected
    assert json.loads(expected) == json.loads(text, strict=False)


def test_which_answers_are_json_by_constraint() -> None:
    assert constrains_to_json(ResponseFormat(type="json_object"), None)
    assert constrains_to_json(None, StructuredOutputs.model_validate({"json": SCHEMA}))
    assert not constrains_to_json(ResponseFormat(type="text"), StructuredOutputs.model_validate({"regex": "a+"}))
