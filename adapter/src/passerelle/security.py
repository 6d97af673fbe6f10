"""API keys: several may be configured; each presented key is compared in constant time against all."""

from __future__ import annotations

import hashlib
import hmac

from fastapi import Request

from passerelle.errors import Unauthorized


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8")).digest()


class APIKeyCheck:
    def __init__(self, keys: list[str]) -> None:
        self._digests = [_digest(key) for key in keys]

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def __call__(self, request: Request) -> None:
        if not self._digests:
            return
        header = request.headers.get("authorization", "")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise Unauthorized(
                "You didn't provide an API key. Send it in the Authorization header: 'Authorization: Bearer YOUR_KEY'.",
                code="missing_api_key",
            )
        candidate = _digest(presented.strip())
        matched = False
        for digest in self._digests:
            matched |= hmac.compare_digest(candidate, digest)
        if not matched:
            raise Unauthorized("Incorrect API key provided.", code="invalid_api_key")
