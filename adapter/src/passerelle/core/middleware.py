"""ASGI middleware: request ids for logs and errors, and a cap on request body size."""

from __future__ import annotations

import contextvars
import logging
import re
import uuid

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from passerelle.core.errors import PayloadTooLarge

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_VALID_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class RequestIdMiddleware:
    """Takes a sane X-Request-ID from the client or makes one; logs and the response carry it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _VALID_ID.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


class UploadTooLarge(StarletteHTTPException):
    """Raised from `receive` when a streamed upload passes its limit; answered as 413."""

    code = "request_too_large"


class BodyLimitMiddleware:
    """Refuses bodies over their limit with 413, whether declared (Content-Length) or chunked.

    JSON bodies (`limit`): a declared length is checked up front (the server enforces it); a
    chunked body is read up to the limit before the app sees it, then replayed, so the app never
    parses a truncated body. Multipart uploads (`upload_limit`, plus room for the form's other
    fields) can be large: they stream through to the form parser, which spools them to disk, and
    the count stops them with 413 as soon as they pass the limit. Only the upload routes
    (`upload_paths`) get the upload limit; the route decides, not the client's Content-Type.
    """

    FORM_OVERHEAD = 64 * 1024

    def __init__(self, app: ASGIApp, limit: int, upload_limit: int | None = None, upload_paths: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.limit = limit
        self.upload_limit = upload_limit if upload_limit is not None else limit
        self.upload_paths = upload_paths

    def _refusal(self, limit: int) -> bytes:
        error = PayloadTooLarge(f"Request body is larger than the limit of {limit} bytes.", code="request_too_large")
        return error.response().model_dump_json().encode()

    async def _refuse(self, send: Send, limit: int) -> None:
        await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": self._refusal(limit)})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        multipart = scope["path"] in self.upload_paths and headers.get(b"content-type", b"").startswith(b"multipart/form-data")
        limit = self.upload_limit + self.FORM_OVERHEAD if multipart else self.limit
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(send, limit)
            return
        if multipart:
            await self.app(scope, self._counting(receive, limit), send)
        elif declared is not None:
            await self.app(scope, receive, send)
        else:
            await self._buffered(scope, receive, send, limit)

    def _counting(self, receive: Receive, limit: int) -> Receive:
        size = 0

        async def counted() -> Message:
            nonlocal size
            message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > limit:
                    raise UploadTooLarge(413, f"Request body is larger than the limit of {limit} bytes.")
            return message

        return counted

    async def _buffered(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._refuse(send, limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
