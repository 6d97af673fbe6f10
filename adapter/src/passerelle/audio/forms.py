"""Multipart audio forms: the upload and its fields, validated by a form schema, and their OpenAPI shape.

Uploads spool to temporary files (Starlette); `close_form` deletes them when the request is done.
"""

from __future__ import annotations

import json
import re
import types
from collections.abc import AsyncIterator
from contextlib import suppress
from typing import Any, TypeVar, Union, get_args, get_origin

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from passerelle.core.errors import InvalidRequest

Form = TypeVar("Form", bound=BaseModel)


async def close_form(request: Request) -> AsyncIterator[None]:
    """Uploads spool to temporary files: close (delete) them when the request is done."""
    try:
        yield
    finally:
        form = getattr(request.state, "form", None)
        if form is not None:
            await form.close()


_LIST_FIELDS = {"timestamp_granularities", "include", "known_speaker_names", "known_speaker_references", "languages", "keywords"}
# Text fields may hold a known speaker's reference clip as a data URL (passerelle.audio.speakers).
_MAX_FIELD_BYTES = 5 * 1024 * 1024


def form_schema(schema: type[BaseModel]) -> dict[str, Any]:
    properties = {"file": {"type": "string", "format": "binary"}, **schema.model_json_schema().get("properties", {})}
    required = ["file", *schema.model_json_schema().get("required", [])]
    schema_body = {"type": "object", "properties": properties, "required": required}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema_body}}}}


def _list_items(value: str) -> list[str]:
    """One value of a list field: `word`, or a JSON array `["word", "segment"]` as some clients send."""
    if value.lstrip().startswith("["):
        with suppress(ValueError):
            parsed = json.loads(value)
            if isinstance(parsed, list) and all(isinstance(item, str) for item in parsed):
                return parsed
    return [value]


_INTEGER = re.compile(r"-?[0-9]+")
_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def _scalar_kind(annotation: Any) -> type | None:
    """bool, int or float when the field holds one (optionally or None), else None."""
    options = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (annotation,)
    kinds = [option for option in options if option in (bool, int, float)]
    return kinds[0] if len(kinds) == 1 else None


def _typed(value: str, kind: type | None) -> Any:
    """Form fields arrive as text: booleans are exactly `true` or `false`, numbers are decimal
    (what OpenAI's SDK sends). Anything else stays text, and strict validation refuses it."""
    if kind is bool and value in ("true", "false"):
        return value == "true"
    if kind is int and _INTEGER.fullmatch(value):
        return int(value)
    if kind is float and _DECIMAL.fullmatch(value):
        return float(value)
    return value


async def read_form(request: Request, schema: type[Form]) -> tuple[Form, UploadFile]:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidRequest("Audio requests must be multipart/form-data, with the audio in the 'file' field.", code="invalid_content_type")
    form = request.state.form = await request.form(max_files=1, max_fields=320, max_part_size=_MAX_FIELD_BYTES)
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise InvalidRequest("The 'file' field is required and must be a file upload.", param="file", code="missing_file")
    fields: dict[str, Any] = {}
    for key in set(form.keys()) - {"file"}:
        name = key.removesuffix("[]")
        values = [value for value in form.getlist(key) if isinstance(value, str)]
        if name in _LIST_FIELDS or key.endswith("[]"):
            fields[name] = [*fields.get(name, []), *(item for value in values for item in _list_items(value))]
        elif len(values) != 1:
            raise InvalidRequest(f"The field '{key}' must be given once, as text.", param=key, code="invalid_value")
        else:
            field = schema.model_fields.get(name)
            fields[name] = _typed(values[0], _scalar_kind(field.annotation) if field else None)
    try:
        return schema.model_validate(fields, strict=True), upload
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from exc
