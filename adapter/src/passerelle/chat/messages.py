"""The request's messages as the model's chat template takes them: roles, text and image parts, the
assistant's tool calls and the tools' results, checked against each other (a tool result answers
a call made earlier)."""

from __future__ import annotations

import json
from typing import Any

from passerelle.chat.images import ImageLoader
from passerelle.chat.protocol import ChatCompletionRequest, ChatMessage, ImagePart, TextPart, refuse
from passerelle.core.catalog import ServedModel
from passerelle.core.errors import InvalidRequest

_ROLES = {"developer": "system"}

ImageSources = list[tuple[str | bytes, str]]  # (a data: URL or fetched bytes, its param)


async def template_messages(
    request: ChatCompletionRequest, model: ServedModel, images: ImageLoader
) -> tuple[list[dict[str, Any]], ImageSources, int]:
    """The messages as the chat template takes them, the images' sources and the characters of text."""
    count = sum(
        isinstance(part, ImagePart) for message in request.messages if isinstance(message.content, list) for part in message.content
    )
    if count > model.image_limit:
        raise InvalidRequest(
            f"this model accepts at most {model.image_limit} images per request; got {count}", param="messages", code="too_many_images"
        )
    messages: list[dict[str, Any]] = []
    sources: ImageSources = []
    chars = 0
    calls_made: set[str] = set()
    for index, message in enumerate(request.messages):
        where = f"messages[{index}]"
        _check_turn(message, index, calls_made)
        content = message.content
        if content is None:
            if message.role != "assistant":
                raise InvalidRequest(f"{where}.content is required", param=f"{where}.content", code="invalid_value")
            content = []
        parts: list[dict[str, Any]] = []
        if isinstance(content, str):
            parts.append({"type": "text", "text": content})
            chars += len(content)
        else:
            for part_index, part in enumerate(content):
                param = f"{where}.content[{part_index}]"
                if isinstance(part, TextPart):
                    parts.append({"type": "text", "text": part.text})
                    chars += len(part.text)
                elif isinstance(part, ImagePart):
                    if message.role != "user":
                        raise InvalidRequest(f"{param}: images are only allowed in user messages", param=param, code="invalid_value")
                    url_param = f"{param}.image_url.url"
                    sources.append((await images.fetch(part.image_url.url, url_param), url_param))
                    parts.append({"type": "image"})
                elif part.type == "refusal" and message.role == "assistant":
                    continue
                else:
                    raise InvalidRequest(
                        f"{param}: content parts of type '{part.type}' are not supported by this model",
                        param=param,
                        code="unsupported_content",
                    )
        entry: dict[str, Any] = {"role": _ROLES.get(message.role, message.role), "content": parts}
        if message.tool_calls:
            entry["tool_calls"] = [call.model_dump() for call in message.tool_calls]
            chars += sum(len(call.function.name) + len(call.function.arguments) for call in message.tool_calls)
        messages.append(entry)
    return messages, sources, chars


def _check_turn(message: ChatMessage, index: int, calls_made: set[str]) -> None:
    """Roles and tool turns as the model's chat template takes them; records the calls an assistant turn made."""
    where = f"messages[{index}]"
    if message.role == "function" or message.function_call is not None:
        raise refuse(f"{where}.role", "the deprecated function messages are not implemented; use 'tool_calls' and 'tool' messages")
    if message.audio is not None:
        raise refuse(f"{where}.audio", "audio in messages is not supported by this model")
    if message.role in ("system", "developer") and index > 0:
        raise InvalidRequest(
            f"{where}: this model's chat template takes a {message.role} message only as the first message",
            param=f"{where}.role",
            code="invalid_value",
        )
    if message.tool_calls is not None and message.role != "assistant":
        raise InvalidRequest(
            f"{where}.tool_calls: only assistant messages carry tool calls", param=f"{where}.tool_calls", code="invalid_value"
        )
    for call_index, call in enumerate(message.tool_calls or []):
        param = f"{where}.tool_calls[{call_index}].function.arguments"
        try:
            json.loads(call.function.arguments)
        except ValueError as exc:
            raise InvalidRequest(f"{param} is not valid JSON: {exc}", param=param, code="invalid_value") from exc
        calls_made.add(call.id)
    if message.role == "tool":
        if not message.tool_call_id:
            raise InvalidRequest(
                f"{where}.tool_call_id is required for tool messages", param=f"{where}.tool_call_id", code="missing_required_parameter"
            )
        if message.tool_call_id not in calls_made:
            raise InvalidRequest(
                f"{where}.tool_call_id '{message.tool_call_id}' answers no tool call of an earlier assistant message",
                param=f"{where}.tool_call_id",
                code="invalid_value",
            )
    elif message.tool_call_id is not None:
        raise InvalidRequest(f"{where}.tool_call_id is only for tool messages", param=f"{where}.tool_call_id", code="invalid_value")
