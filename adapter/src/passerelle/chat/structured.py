"""Structured outputs: OpenAI's `response_format` and vLLM's `structured_outputs` → one constraint for the engine.

The vLLM backend reads the constraint from `sampling_parameters` under the key `structured_outputs`,
as a JSON string of vLLM's `StructuredOutputsParams` (NVIDIA's backend after 25.11; before, the key
was `guided_decoding`). A constraint the engine cannot build is only logged by NVIDIA's backend, and
the request then runs unconstrained, so everything checkable is checked here first: a JSON Schema
against its metaschema, a regular expression by compiling it, exactly one kind of constraint.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from jsonschema import SchemaError
from jsonschema.validators import validator_for
from pydantic import BaseModel, ConfigDict, Field

from passerelle.core.errors import InvalidRequest

Strict = ConfigDict(extra="forbid")
_CONSTRAINTS = ("json", "regex", "choice", "grammar", "json_object")


class JSONSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    model_config = Strict
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None


class StructuredOutputs(BaseModel):
    """vLLM's extension (`extra_body={"structured_outputs": {...}}`): one constraint, and its options."""

    model_config = Strict
    json_: dict[str, Any] | str | None = Field(default=None, alias="json")
    regex: str | None = Field(default=None, min_length=1)
    choice: list[str] | None = Field(default=None, min_length=1)
    grammar: str | None = Field(default=None, min_length=1)
    json_object: bool | None = None
    disable_any_whitespace: bool | None = None
    disable_additional_properties: bool | None = None
    whitespace_pattern: str | None = None


def checked_schema(schema: dict[str, Any] | str, param: str) -> dict[str, Any]:
    """The schema as an object, refused with 400 unless it is a valid JSON Schema."""
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"{param} is not valid JSON: {exc}", param=param, code="invalid_json_schema") from exc
    if not isinstance(schema, dict):
        raise InvalidRequest(f"{param} must be a JSON Schema object", param=param, code="invalid_json_schema")
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(part) for part in exc.path) or "the top level"
        raise InvalidRequest(
            f"{param} is not a valid JSON Schema: {exc.message} (at {where})", param=param, code="invalid_json_schema"
        ) from exc
    return schema


def constraint(
    response_format: ResponseFormat | None, extension: StructuredOutputs | None, tool_calls: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """The `StructuredOutputsParams` fields for the engine, or None when the output is free.

    `tool_calls` is the structural tag that tool calling asks for (`chat/tools.py`); it is one
    constraint like the others, so it cannot be combined with them.
    """
    fields: dict[str, Any] = {}
    if tool_calls is not None:
        if response_format is not None and response_format.type != "text":
            raise InvalidRequest(
                "this tool_choice constrains the answer to tool calls, so it cannot be combined with response_format",
                param="response_format",
                code="invalid_value",
            )
        fields["structural_tag"] = json.dumps(tool_calls)
    if response_format is not None and response_format.type == "json_schema":
        given = response_format.json_schema
        if given is None or given.schema_ is None:
            raise InvalidRequest(
                "response_format of type 'json_schema' needs json_schema.schema",
                param="response_format.json_schema.schema",
                code="missing_required_parameter",
            )
        fields["json"] = checked_schema(given.schema_, "response_format.json_schema.schema")
    elif response_format is not None and response_format.type == "json_object":
        fields["json_object"] = True
    if extension is not None:
        given_fields = extension.model_dump(by_alias=True, exclude_none=True)
        kinds = [kind for kind in _CONSTRAINTS if given_fields.get(kind) not in (None, False)]
        if len(kinds) + len(fields) > 1:
            raise InvalidRequest(
                "give one output constraint: response_format, a constraining tool_choice, or one of structured_outputs' "
                f"{', '.join(_CONSTRAINTS)} (got {', '.join([*fields, *kinds])})",
                param="structured_outputs",
                code="invalid_value",
            )
        if "json" in given_fields:
            given_fields["json"] = checked_schema(given_fields["json"], "structured_outputs.json")
        if "regex" in given_fields:
            try:
                re.compile(given_fields["regex"])
            except re.error as exc:
                message = f"structured_outputs.regex is not a valid regular expression: {exc}"
                raise InvalidRequest(message, param="structured_outputs.regex", code="invalid_regex") from exc
        if not kinds and not fields:
            raise InvalidRequest(
                f"structured_outputs needs one constraint: {', '.join(_CONSTRAINTS)}", param="structured_outputs", code="invalid_value"
            )
        fields.update(given_fields)
    return fields or None


def constrains_to_json(response_format: ResponseFormat | None, extension: StructuredOutputs | None) -> bool:
    """Whether the answer is JSON by constraint (its strings' control characters are then escaped)."""
    if response_format is not None and response_format.type in ("json_object", "json_schema"):
        return True
    return extension is not None and (extension.json_ is not None or bool(extension.json_object))


@dataclass
class ControlEscaper:
    """Escapes raw control characters inside the JSON strings of text that arrives in pieces.

    xgrammar's JSON grammar lets the engine write a raw control character (U+0000 to U+001F)
    inside a string, which strict JSON forbids (Python's json.loads, JavaScript's JSON.parse).
    Escaped as `\\u001a`, the text is the same JSON value, and strict parsers accept it.
    """

    in_string: bool = False
    escaped: bool = False

    def __call__(self, text: str) -> str:
        out = []
        for char in text:
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif char == "\\":
                    self.escaped = True
                elif char == '"':
                    self.in_string = False
                elif char < " ":
                    out.append(f"\\u{ord(char):04x}")
                    continue
            elif char == '"':
                self.in_string = True
            out.append(char)
        return "".join(out)
