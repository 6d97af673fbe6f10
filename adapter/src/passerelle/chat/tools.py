"""Tool calling: a request's `tools` and `tool_choice` → what the prompt shows the model, how the
engine's decoding is constrained, and whether the answer is read for calls.

Qwen3-VL writes Hermes calls (`chat/hermes.py`). As vLLM does by default for its `hermes` parser,
`required` and a named `tool_choice` constrain decoding with an xgrammar structural tag in that same
markup: `<tool_call>\\n{"name": "<tool>", "arguments": ` + the tool's parameter schema + `}\\n</tool_call>`.
The answer is then a valid call by construction, and is read by the same parser as `auto`. In `auto`,
tools marked `strict: true` are constrained once the model opens a `<tool_call>` (a triggered tag).
`none` neither shows the tools nor reads calls: the model answers in text.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from passerelle.chat.hermes import END, START
from passerelle.chat.structured import checked_schema
from passerelle.core.errors import InvalidRequest

Strict = ConfigDict(extra="forbid")
# OpenAI's rule for function names (both the chat and the Responses API take it).
FUNCTION_NAME = r"^[A-Za-z0-9_.-]{1,64}$"
_CALL_FORMATS = ((START + '\n{"name": "', "}\n" + END), (START + '{"name": "', "}" + END))


class FunctionDefinition(BaseModel):
    model_config = Strict
    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ChatTool(BaseModel):
    model_config = Strict
    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(BaseModel):
    model_config = Strict
    name: str


class NamedToolChoice(BaseModel):
    model_config = Strict
    type: Literal["function"]
    function: FunctionName


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class CalledFunction(BaseModel):
    model_config = Strict
    name: str = Field(min_length=1)
    arguments: str


class AssistantToolCall(BaseModel):
    """A call in an assistant message of the history, as OpenAI's clients send it back."""

    model_config = Strict
    id: str = Field(min_length=1)
    type: Literal["function"] = "function"
    function: CalledFunction


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass(frozen=True)
class ToolPlan:
    shown: list[dict[str, Any]] = field(default_factory=list)  # the tools the chat template renders
    parse: bool = False  # read the answer for calls (and keep the markup tokens)
    constraint: dict[str, Any] | None = None  # a structural tag for StructuredOutputsParams


def _schema(tool: ChatTool, index: int) -> dict[str, Any]:
    parameters = tool.function.parameters
    if parameters is None:
        return {"type": "object"}
    return checked_schema(parameters, f"tools[{index}].function.parameters")


def _tags(tools: Sequence[tuple[ChatTool, dict[str, Any] | bool]], whitespace: int | None) -> list[dict[str, Any]]:
    content = {"type": "json_schema", "style": "json", "any_order": False, "max_whitespace_cnt": whitespace, "excludes": []}
    return [
        {
            "type": "tag",
            "begin": begin + tool.function.name + '", "arguments": ',
            "content": {**content, "json_schema": schema},
            "end": end,
        }
        for tool, schema in tools
        for begin, end in _CALL_FORMATS
    ]


def plan(tools: list[ChatTool] | None, choice: ToolChoice | None, parallel: bool | None, limited_whitespace: bool) -> ToolPlan | None:
    """Check the tools and the choice; None when the request has no tools."""
    if not tools:
        if choice not in (None, "none"):
            raise InvalidRequest("'tool_choice' is only allowed when 'tools' are given", param="tool_choice", code="invalid_value")
        return None
    names: set[str] = set()
    schemas: list[dict[str, Any]] = []
    for index, tool in enumerate(tools):
        if tool.function.name in names:
            raise InvalidRequest(
                f"tools[{index}]: the function name '{tool.function.name}' is given twice",
                param=f"tools[{index}].function.name",
                code="invalid_value",
            )
        names.add(tool.function.name)
        schemas.append(_schema(tool, index))
    if choice == "none":
        return ToolPlan()
    shown = [tool.model_dump(exclude_none=True) for tool in tools]
    whitespace = 1 if limited_whitespace else None
    if isinstance(choice, NamedToolChoice):
        chosen = [(tool, schema) for tool, schema in zip(tools, schemas, strict=True) if tool.function.name == choice.function.name]
        if not chosen:
            raise InvalidRequest(
                f"tool_choice names the function '{choice.function.name}', which is not in 'tools'",
                param="tool_choice.function.name",
                code="invalid_value",
            )
        format_ = {
            "type": "tags_with_separator",
            "tags": _tags(chosen, whitespace),
            "separator": "",
            "at_least_one": True,
            "stop_after_first": True,
        }
    elif choice == "required":
        format_ = {
            "type": "tags_with_separator",
            "tags": _tags(list(zip(tools, schemas, strict=True)), whitespace),
            "separator": "",
            "at_least_one": True,
            "stop_after_first": parallel is False,
        }
    elif any(tool.function.strict for tool in tools):
        constrained: list[tuple[ChatTool, dict[str, Any] | bool]] = [
            (tool, schema if tool.function.strict else True) for tool, schema in zip(tools, schemas, strict=True)
        ]
        format_ = {
            "type": "triggered_tags",
            "triggers": [START],
            "tags": _tags(constrained, whitespace),
            "at_least_one": False,
            "stop_after_first": parallel is False,
            "excludes": [],
        }
    else:
        return ToolPlan(shown=shown, parse=True)
    return ToolPlan(shown=shown, parse=True, constraint={"type": "structural_tag", "format": format_})
