"""Access control: OpenAI API keys, and the separate admin key.

Keys are hashed and compared in constant time against every configured key, so neither the
match nor its position leaks through timing.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress

from fastapi import Request

from passerelle.core.errors import Forbidden, Unauthorized


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8")).digest()


def _matches(presented: str, digests: list[bytes]) -> bool:
    candidate = _digest(presented)
    matched = False
    for digest in digests:
        matched |= hmac.compare_digest(candidate, digest)
    return matched


def _bearer(request: Request) -> str:
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    return presented.strip() if scheme.lower() == "bearer" else ""


class APIKeyCheck:
    def __init__(self, keys: list[str]) -> None:
        self._digests = [_digest(key) for key in keys]

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def __call__(self, request: Request) -> None:
        if not self._digests:
            return
        presented = _bearer(request)
        if not presented:
            raise Unauthorized(
                "You didn't provide an API key. Send it in the Authorization header: 'Authorization: Bearer YOUR_KEY'.",
                code="missing_api_key",
            )
        if not _matches(presented, self._digests):
            raise Unauthorized("Incorrect API key provided.", code="invalid_api_key")


class AdminCheck:
    """ADMIN_API_KEY (Bearer or X-Admin-Key) when set; otherwise loopback clients only."""

    def __init__(self, key: str | None) -> None:
        self._digests = [_digest(key)] if key else []

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def __call__(self, request: Request) -> None:
        if self._digests:
            presented = request.headers.get("x-admin-key", "") or _bearer(request)
            if not presented or not _matches(presented, self._digests):
                raise Unauthorized("The admin API needs the admin key (Authorization: Bearer ADMIN_KEY).", code="invalid_admin_key")
            return
        host = request.client.host if request.client else ""
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise Forbidden("The admin API answers loopback clients only while ADMIN_API_KEY is unset.", code="admin_loopback_only")


async def require_api_key(request: Request) -> None:
    """Route dependency of the OpenAI and seed APIs (the check is built once, in `create_app`).
    Dependencies here are `async`: FastAPI would run plain functions in its thread pool, a thread hop per request."""
    check: APIKeyCheck = request.app.state.api_keys
    check(request)


async def require_admin(request: Request) -> None:
    """Route dependency of the admin API."""
    check: AdminCheck = request.app.state.admin_check
    check(request)
