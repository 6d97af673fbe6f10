"""The whole error taxonomy: the API's errors, Triton's failures and how one becomes the other.

Every error a client sees has OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`,
built by `ErrorResponse` alone; `from_triton()` is the one place a Triton failure becomes an API error.
"""

from __future__ import annotations

import enum
import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

log = logging.getLogger("passerelle.errors")


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error body; the admin and seed routes answer in the same shape."""

    error: ErrorDetail

    @classmethod
    def of(cls, message: str, *, type: str, param: str | None = None, code: str | None = None) -> ErrorResponse:
        return cls(error=ErrorDetail(message=message, type=type, param=param, code=code))

    def json_response(self, status: int, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
        return JSONResponse({**self.model_dump(), **extra}, status_code=status, headers=headers)


# What every route may answer besides its success, for OpenAPI (it also keeps FastAPI from listing a
# 422 that the adapter never sends: validation errors are 400 in this shape).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorResponse, "description": "The request was refused; `error.param` and `error.code` say why."},
    503: {"model": ErrorResponse, "description": "Triton or the model cannot serve now; retry after `Retry-After` seconds."},
}


class APIError(Exception):
    status = 500
    type = "server_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    def response(self) -> ErrorResponse:
        return ErrorResponse.of(self.message, type=self.type, param=self.param, code=self.code)

    def body(self) -> dict[str, Any]:
        return self.response().model_dump()


class InvalidRequest(APIError):
    status = 400
    type = "invalid_request_error"


class Unauthorized(APIError):
    status = 401
    type = "invalid_request_error"


class Forbidden(APIError):
    status = 403
    type = "invalid_request_error"


class NotFound(APIError):
    status = 404
    type = "invalid_request_error"


class Conflict(APIError):
    status = 409
    type = "invalid_request_error"


class PayloadTooLarge(APIError):
    status = 413
    type = "invalid_request_error"


class TooManyRequests(APIError):
    """Over a per-key cap; OpenAI's shape for rate limits (the SDK retries after `Retry-After`)."""

    status = 429
    type = "requests"

    def __init__(self, message: str, *, retry_after_s: int, code: str = "rate_limit_exceeded") -> None:
        super().__init__(message, code=code, headers={"Retry-After": str(retry_after_s)})


class Unavailable(APIError):
    """A known model or Triton itself cannot serve now; the client should retry later."""

    status = 503
    type = "service_unavailable"

    def __init__(self, message: str, *, retry_after_s: int, code: str = "model_unavailable", param: str | None = None):
        super().__init__(message, code=code, param=param, headers={"Retry-After": str(retry_after_s)})


class ClientGone(Exception):
    """The HTTP client disconnected; the work was cancelled."""


# Triton's failures ------------------------------------------------------------------------


class FailureKind(enum.Enum):
    SERVER_UNAVAILABLE = "server_unavailable"
    MODEL_NOT_READY = "model_not_ready"
    BAD_REQUEST = "bad_request"
    CANCELLED = "cancelled"
    MODEL_CRASHED = "model_crashed"
    INTERNAL = "internal"


class TritonFailure(Exception):
    """Whatever went wrong talking to Triton, classified by the client (`passerelle.triton.client`)."""

    def __init__(self, kind: FailureKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


_CONTEXT_ERRORS = re.compile(r"longer than the maximum model length|maximum context length|exceeds the max", re.I)
# vLLM's own checks of a request (VLLMValidationError), which Triton's vLLM backend reports as an
# internal error: an empty prompt, a JSON Schema nested deeper than vLLM's 64 levels.
_ENGINE_REFUSALS = re.compile(r"prompt cannot be empty|is nested too deeply", re.I)


_TRACEBACK = re.compile(r"Traceback \(most recent call last\)|^\s+File \"", re.M)
_PATH = re.compile(r"(?:/[\w.@+-]+){2,}/([\w.@+-]+)")
_ADDRESS = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b|\[[0-9a-f:]+\](?::\d+)?|\b(?:ipv4|ipv6|unix):\S+", re.I)


def in_words(message: str, limit: int = 400) -> str:
    """What a client may read of an engine's refusal: its first line, before any traceback, with
    file paths cut to their names and network addresses removed; the whole goes to the log."""
    head = _TRACEBACK.split(message, maxsplit=1)[0]
    line = next((line.strip() for line in head.splitlines() if line.strip()), "")
    if not line:  # all traceback: its last line names the exception
        line = next((line.strip() for line in reversed(message.splitlines()) if line.strip() and not line[0].isspace()), "")
    line = _ADDRESS.sub("(address)", _PATH.sub(r"\1", line))
    return line[:limit].rstrip() + ("…" if len(line) > limit else "")


def _request_id() -> str:
    from passerelle.core.middleware import request_id_var  # the middleware imports this module

    return request_id_var.get()


def from_triton(failure: TritonFailure, model: str, *, retry_after_s: int, how_to_load: str) -> APIError:
    """The API error for a Triton failure while serving `model`: the same code on every route.
    Clients read it in words; Triton's own text (addresses, tracebacks) goes to the log only."""
    if failure.kind is FailureKind.SERVER_UNAVAILABLE:
        log.warning("Triton unavailable while serving %s: %s", model, failure.message)
        return Unavailable("Triton Inference Server is unavailable; retry later.", retry_after_s=retry_after_s, code="triton_unavailable")
    if failure.kind is FailureKind.MODEL_NOT_READY:
        return Unavailable(f"Model '{model}' is not available. {how_to_load}", retry_after_s=retry_after_s)
    context = _CONTEXT_ERRORS.search(failure.message)
    if failure.kind is FailureKind.BAD_REQUEST or context or _ENGINE_REFUSALS.search(failure.message):
        log.info("model %s refused the request: %s", model, failure.message)
        return InvalidRequest(
            f"The model refused the request: {in_words(failure.message)}", code="context_length_exceeded" if context else "invalid_value"
        )
    if failure.kind is FailureKind.MODEL_CRASHED:
        log.error("model %s: its process in Triton died: %s", model, failure.message)
        return Unavailable(
            f"Model '{model}' cannot serve: its process in Triton has died, and Triton does not restart it. "
            f"An operator reloads it: {how_to_load}",
            retry_after_s=retry_after_s,
            code="model_crashed",
        )
    log.error("model %s failed: %s", model, failure.message)
    return Unavailable(
        f"Model '{model}' failed while serving the request. Quote request id {_request_id()} when reporting it.",
        retry_after_s=retry_after_s,
        code="model_error",
    )


# Handlers -----------------------------------------------------------------------------------


def _location(loc: tuple[Any, ...]) -> str | None:
    parts = [str(part) for part in loc if part not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


def validation_message(exc: RequestValidationError | ValidationError) -> tuple[str, str | None]:
    first = exc.errors()[0]
    param = _location(tuple(first.get("loc", ())))
    kind = first.get("type", "")
    if kind == "extra_forbidden":
        return f"Unrecognized request argument supplied: {param}", param
    if kind == "json_invalid":
        return "The request body is not valid JSON.", None
    message = first.get("msg", "Invalid request")
    return (f"{param}: {message}" if param else message), param


# FastAPI's words when the body fails to parse for any reason but JSON syntax (which is a validation error).
_FASTAPI_BODY_ERROR = "There was an error parsing the body"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return exc.response().json_response(exc.status, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = validation_message(exc)
        return InvalidRequest(message, param=param, code="invalid_value").response().json_response(400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error_type = "invalid_request_error" if exc.status_code < 500 else "server_error"
        message, code = str(exc.detail), getattr(exc, "code", None)
        if exc.status_code == 400 and message == _FASTAPI_BODY_ERROR:
            message, code = "The request body could not be parsed: it is not UTF-8, or it nests too deeply.", "invalid_body"
        body = ErrorResponse.of(message, type=error_type, code=code)
        return body.json_response(exc.status_code, getattr(exc, "headers", None))

    @app.exception_handler(ValidationError)
    async def _derived_validation(request: Request, exc: ValidationError) -> JSONResponse:
        # A model built while serving from the client's fields (the Responses API's request becomes a
        # chat request) refused them: the client's error, named by the field, not a server error.
        message, param = validation_message(exc)
        log.info("request refused while serving: %s", message)  # not the error itself: it quotes the client's values
        return InvalidRequest(message, param=param, code="invalid_value").response().json_response(400)

    @app.exception_handler(RecursionError)
    async def _too_deep(request: Request, exc: RecursionError) -> JSONResponse:
        # Only a client's input nests without bound here (a JSON Schema in `tools` or `response_format`
        # hundreds of levels deep overflows the validator's recursion): a refusal, not a server error.
        log.info("request refused: its input nests too deeply (%s)", exc)
        error = InvalidRequest("The request nests too deeply to be processed; flatten it.", code="nesting_too_deep")
        return error.response().json_response(400)

    @app.exception_handler(ClientGone)
    @app.exception_handler(ClientDisconnect)  # Starlette's, raised while a body is still being read
    async def _client_gone(request: Request, exc: Exception) -> Response:
        log.info("client disconnected; request cancelled")
        return Response(status_code=499)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        request_id = getattr(request.state, "request_id", "-")
        log.exception("unhandled error in %s %s (request %s)", request.method, request.url.path, request_id)
        message = f"Internal server error. Quote request id {request_id} when reporting it."
        return ErrorResponse.of(message, type="server_error", code="internal_error").json_response(500, {"X-Request-ID": request_id})
