"""OpenAI's Responses API (`POST /v1/responses`) for the chat model: the request, its translation
into a chat completion request (one capability: the chat path prepares and runs it), and the
response and its typed stream events.

This gateway keeps no responses: `store` must be false or left out, and `previous_response_id`
is refused. A conversation goes back in `input` (messages, `function_call` and
`function_call_output` items), as stateless clients send it. A store would have to be shared by
every adapter worker and pod to be correct; an in-process one would answer "not found" whenever
the next request lands elsewhere.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from passerelle.chat.protocol import ChatCompletionRequest
from passerelle.chat.structured import JSONSchemaFormat, StructuredOutputs
from passerelle.chat.tools import FUNCTION_NAME
from passerelle.core.errors import InvalidRequest

# Requests: unknown fields are refused, and types are strict as OpenAI's are ("stream": "yes" is not true).
Strict = ConfigDict(extra="forbid", strict=True)


class InputText(BaseModel):
    model_config = Strict
    type: Literal["input_text", "output_text"]
    text: str
    annotations: list[Any] | None = None  # accepted on output_text, ignored
    logprobs: list[Any] | None = None  # accepted on output_text, ignored


class InputImage(BaseModel):
    model_config = Strict
    type: Literal["input_image"]
    image_url: str | None = None
    file_id: str | None = None
    detail: Literal["auto", "low", "high"] | None = None  # accepted, ignored


class InputOther(BaseModel):
    """Parts this model cannot take (files, audio, refusals): refused by name."""

    model_config = ConfigDict(extra="allow")
    type: Literal["input_file", "input_audio", "refusal"]


InputPart = Annotated[InputText | InputImage | InputOther, Field(discriminator="type")]


class MessageItem(BaseModel):
    model_config = Strict
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[InputPart]
    id: str | None = None  # accepted, ignored
    status: str | None = None  # accepted, ignored


class FunctionCallItem(BaseModel):
    model_config = Strict
    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: str
    id: str | None = None
    status: str | None = None


class FunctionCallOutputItem(BaseModel):
    model_config = Strict
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: str
    id: str | None = None
    status: str | None = None


def _item_type(item: Any) -> str:
    """A message may leave its type out (the SDK's "easy" input messages)."""
    kind = item.get("type", "message") if isinstance(item, dict) else getattr(item, "type", "message")
    return str(kind)


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")],
    Discriminator(_item_type),
]


class FunctionTool(BaseModel):
    model_config = Strict
    type: Literal["function"]
    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class NamedFunction(BaseModel):
    model_config = Strict
    type: Literal["function"]
    name: str = Field(pattern=FUNCTION_NAME)


class TextFormat(JSONSchemaFormat):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    type: Literal["json_schema"]


class PlainFormat(BaseModel):
    model_config = Strict
    type: Literal["text", "json_object"]


class TextConfig(BaseModel):
    model_config = Strict
    format: Annotated[TextFormat | PlainFormat, Field(discriminator="type")] | None = None
    verbosity: str | None = None  # accepted, ignored


class ResponsesRequest(BaseModel):
    model_config = Strict
    model: str = Field(min_length=1)
    input: str | list[InputItem] = Field(min_length=1)
    instructions: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedFunction | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    stream: bool = False
    structured_outputs: StructuredOutputs | None = None  # vLLM's extension, as on chat
    store: bool | None = None
    previous_response_id: str | None = None
    # Accepted, ignored: they do not change the answer.
    metadata: dict[str, str] | None = None
    user: str | None = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    truncation: Literal["disabled"] | None = None
    include: list[str] | None = None
    stream_options: dict[str, Any] | None = None
    # Declared so that they are refused by name.
    background: bool | None = None
    reasoning: dict[str, Any] | None = None
    conversation: str | dict[str, Any] | None = None
    prompt: dict[str, Any] | None = None
    max_tool_calls: int | None = None
    top_logprobs: int | None = None


def _refuse(field: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"'{field}' is not supported: {why}", param=field, code="unsupported_parameter")


def check_supported(request: ResponsesRequest) -> None:
    if request.store:
        raise _refuse(
            "store", "this gateway keeps no responses; leave 'store' out or set it to false, and send the conversation in 'input'"
        )
    if request.previous_response_id is not None:
        raise _refuse("previous_response_id", "this gateway keeps no responses; send the earlier turns in 'input'")
    if request.background:
        raise _refuse("background", "responses run in the foreground only")
    if request.conversation is not None:
        raise _refuse("conversation", "this gateway keeps no conversations; send the earlier turns in 'input'")
    if request.prompt is not None:
        raise _refuse("prompt", "this gateway has no stored prompts")
    if request.reasoning is not None:
        raise _refuse("reasoning", "this model has no reasoning mode to configure")
    if request.max_tool_calls is not None:
        raise _refuse("max_tool_calls", "use 'parallel_tool_calls' to allow one call only")
    if request.top_logprobs is not None:
        raise _refuse("top_logprobs", "log probabilities are offered on /v1/chat/completions")


def _message_content(item: MessageItem, where: str) -> str | list[dict[str, Any]]:
    if isinstance(item.content, str):
        return item.content
    parts: list[dict[str, Any]] = []
    for index, part in enumerate(item.content):
        param = f"{where}.content[{index}]"
        if isinstance(part, InputText):
            parts.append({"type": "text", "text": part.text})
        elif isinstance(part, InputImage):
            if part.image_url is None:
                raise InvalidRequest(f"{param}: give the image as 'image_url' (a URL or a data: URL)", param=param, code="invalid_value")
            parts.append({"type": "image_url", "image_url": {"url": part.image_url}})
        else:
            raise InvalidRequest(
                f"{param}: parts of type '{part.type}' are not supported by this model", param=param, code="unsupported_content"
            )
    return parts


def _messages(request: ResponsesRequest) -> list[dict[str, Any]]:
    """`instructions` and `input` as chat messages: consecutive function calls become one assistant turn."""
    messages: list[dict[str, Any]] = []
    if request.instructions is not None:
        messages.append({"role": "system", "content": request.instructions})
    if isinstance(request.input, str):
        messages.append({"role": "user", "content": request.input})
        return messages
    for index, item in enumerate(request.input):
        where = f"input[{index}]"
        if isinstance(item, MessageItem):
            messages.append({"role": item.role, "content": _message_content(item, where)})
        elif isinstance(item, FunctionCallItem):
            call = {"id": item.call_id, "type": "function", "function": {"name": item.name, "arguments": item.arguments}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and last.get("tool_calls") is not None:
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        else:
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": item.output})
    return messages


def to_chat(request: ResponsesRequest) -> ChatCompletionRequest:
    """The same generation, asked as a chat completion (validated by the chat request's own rules)."""
    check_supported(request)
    fields: dict[str, Any] = {
        "model": request.model,
        "messages": _messages(request),
        "max_completion_tokens": request.max_output_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "stream": request.stream,
        "parallel_tool_calls": request.parallel_tool_calls,
        "structured_outputs": options.model_dump(by_alias=True, exclude_none=True) if (options := request.structured_outputs) else None,
    }
    if request.tools:
        fields["tools"] = [{"type": "function", "function": tool.model_dump(exclude={"type"}, exclude_none=True)} for tool in request.tools]
    if isinstance(request.tool_choice, NamedFunction):
        fields["tool_choice"] = {"type": "function", "function": {"name": request.tool_choice.name}}
    elif request.tool_choice is not None:
        fields["tool_choice"] = request.tool_choice
    text_format = request.text.format if request.text else None
    if isinstance(text_format, TextFormat):
        schema = text_format.model_dump(by_alias=True, exclude={"type"}, exclude_none=True)
        fields["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif text_format is not None:
        fields["response_format"] = {"type": text_format.type}
    return ChatCompletionRequest.model_validate({key: value for key, value in fields.items() if value is not None})


# The response and its events ------------------------------------------------------------------


class ResponseObject(BaseModel):
    """OpenAI's `Response` (its other fields echo the request's settings)."""

    model_config = ConfigDict(extra="allow")
    id: str
    object: Literal["response"] = "response"
    created_at: int
    model: str
    status: Literal["completed", "incomplete", "in_progress"]
    output: list[dict[str, Any]]
    usage: dict[str, Any] | None


def response_id() -> str:
    return f"resp_{uuid.uuid4().hex}"


def item_id(kind: str) -> str:
    return f"{kind}_{uuid.uuid4().hex}"


def response_object(
    request: ResponsesRequest, id_: str, model: str, status: str, output: list[dict[str, Any]], usage: dict[str, Any] | None
) -> dict[str, Any]:
    """OpenAI's `Response`, echoing the request's settings."""
    text_format = request.text.format if request.text and request.text.format else None
    return {
        "id": id_,
        "object": "response",
        "created_at": int(time.time()),
        "model": model,
        "status": status,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "output": output,
        "parallel_tool_calls": request.parallel_tool_calls is not False,
        "previous_response_id": None,
        "store": False,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "text": {"format": text_format.model_dump(by_alias=True, exclude_none=True) if text_format else {"type": "text"}},
        "tool_choice": request.tool_choice.model_dump() if isinstance(request.tool_choice, BaseModel) else request.tool_choice or "auto",
        "tools": [tool.model_dump(exclude_none=True) for tool in request.tools or []],
        "truncation": "disabled",
        "metadata": request.metadata or {},
        "usage": usage,
    }


def usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


def message_item(id_: str, text: str, status: str) -> dict[str, Any]:
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"type": "message", "id": id_, "role": "assistant", "status": status, "content": [part]}


def function_call_item(id_: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {"type": "function_call", "id": id_, "call_id": call_id, "name": name, "arguments": arguments, "status": status}
