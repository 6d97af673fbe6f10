"""Access control: OpenAI API keys, the separate admin key, and a cap on each key's requests in flight.

Keys are hashed and compared in constant time against every configured key, so neither the
match nor its position leaks through timing. A key is known to the rest of the adapter by its
SHA-256 digest only; the key itself is never stored or logged.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging

from fastapi import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from passerelle.core.errors import APIError, Forbidden, TooManyRequests, Unauthorized

log = logging.getLogger("passerelle.security")


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8")).digest()


def _matches(candidate: bytes, digests: list[bytes]) -> bool:
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
        self.identify(request)

    def identify(self, request: Request) -> bytes | None:
        """The digest of the request's valid key (None when no keys are configured); 401 otherwise."""
        if not self._digests:
            return None
        presented = _bearer(request)
        if not presented:
            raise Unauthorized(
                "You didn't provide an API key. Send it in the Authorization header: 'Authorization: Bearer YOUR_KEY'.",
                code="missing_api_key",
            )
        candidate = _digest(presented)
        if not _matches(candidate, self._digests):
            raise Unauthorized("Incorrect API key provided.", code="invalid_api_key")
        return candidate


class KeyConcurrency:
    """At most `limit` requests in flight per API key (0: no cap), counted in this process: each
    uvicorn worker keeps its own counts, so a key may have `limit` requests in each worker.

    Keys are known by their digest. One event loop per process runs every acquire and release, and
    nothing awaits between the test and the count, so no lock is needed."""

    RETRY_AFTER_S = 1

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._in_flight: dict[bytes, int] = {}

    def acquire(self, identity: bytes) -> None:
        held = self._in_flight.get(identity, 0)
        if held >= self.limit:
            log.info("API key sha256:%s… is at its cap of %d requests in flight; refused with 429", identity.hex()[:8], self.limit)
            raise TooManyRequests(
                f"This API key already has {self.limit} requests in flight, the most allowed at once "
                "(MAX_CONCURRENT_REQUESTS_PER_KEY). Retry when one has finished.",
                retry_after_s=self.RETRY_AFTER_S,
            )
        self._in_flight[identity] = held + 1

    def release(self, identity: bytes) -> None:
        held = self._in_flight.pop(identity, 0) - 1
        if held > 0:
            self._in_flight[identity] = held


_FORWARDING_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip", "x-forwarded-host")


class AdminCheck:
    """ADMIN_API_KEY (Bearer or X-Admin-Key) when set; otherwise loopback clients only.

    "Loopback" is the peer address, which a reverse proxy on the same host shares with everyone it
    forwards (and which uvicorn rewrites from X-Forwarded-For when FORWARDED_ALLOW_IPS trusts the
    peer, so `*` would let any client claim 127.0.0.1). Without a key, a request that carries any
    forwarding header is therefore not a local client, whatever its address."""

    def __init__(self, key: str | None) -> None:
        self._digests = [_digest(key)] if key else []

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def __call__(self, request: Request) -> None:
        if self._digests:
            presented = request.headers.get("x-admin-key", "") or _bearer(request)
            if not presented or not _matches(_digest(presented), self._digests):
                raise Unauthorized("The admin API needs the admin key (Authorization: Bearer ADMIN_KEY).", code="invalid_admin_key")
            return
        host = request.client.host if request.client else ""
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if loopback and any(name in request.headers for name in _FORWARDING_HEADERS):
            raise Forbidden(
                "The admin API without ADMIN_API_KEY answers local clients only, and this request came through a proxy "
                "(it has forwarding headers). Set ADMIN_API_KEY to use the admin API through a proxy.",
                code="admin_loopback_only",
            )
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


# Paths a browser policy never applies to: probes, scrapes and the APIs that programs call, which
# arrive with whatever Host their network gives them (a pod's IP, a service name).
API_PREFIXES = ("/v1/", "/v1", "/health", "/metrics", "/api/", "/docs", "/redoc", "/openapi.json")
_SIMPLE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# A header that no cross-site "simple request" can carry: sending it needs a CORS preflight.
_NON_SIMPLE_HEADERS = (b"x-requested-with", b"x-admin-key", b"authorization")


def host_name(header: str) -> str:
    """The name in a Host header, lower-cased, without port or IPv6 brackets."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class BrowserPolicyMiddleware:
    """The admin API and the dashboard are for the operator's browser, which other web pages share.

    - `Host` must be one of the adapter's names (ALLOWED_HOSTS, PUBLIC_HOSTNAME): a page that
      rebinds its own DNS name to this address still sends its own name, and is refused.
    - Admin writes need `Content-Type: application/json` or a header that only a preflighted
      request can carry, so no cross-site form or body-less `POST` can load or unload a model.

    `/health`, `/metrics` and the APIs (`/v1/*`, the seed's `/api/audio`, ...) are exempt.
    """

    def __init__(self, app: ASGIApp, hosts: frozenset[str], dashboard_prefix: str | None) -> None:
        self.app = app
        self.hosts = hosts
        self.dashboard_prefix = dashboard_prefix  # None when no dashboard is served

    def _guarded(self, path: str) -> bool:
        if path == "/api/admin" or path.startswith("/api/admin/"):
            return True
        if self.dashboard_prefix is None or path.startswith(API_PREFIXES):
            return False
        return path == self.dashboard_prefix or path.startswith(self.dashboard_prefix + "/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._guarded(scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        refusal = self._refusal(scope, headers)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        body = refusal.response().model_dump_json().encode()
        await send({"type": "http.response.start", "status": refusal.status, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    def _refusal(self, scope: Scope, headers: dict[bytes, bytes]) -> APIError | None:
        name = host_name(headers.get(b"host", b"").decode("latin-1"))
        if name not in self.hosts:
            shown = name[:80] or "(none)"
            return Forbidden(
                f"Host '{shown}' is not a name of this gateway: the admin API and the dashboard answer only to "
                "ALLOWED_HOSTS and PUBLIC_HOSTNAME (this stops DNS rebinding). Add the name you browse to there.",
                code="host_not_allowed",
            )
        if scope["method"] in _SIMPLE_METHODS or not scope["path"].startswith("/api/admin"):
            return None
        media_type = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
        if media_type == b"application/json" or any(name in headers for name in _NON_SIMPLE_HEADERS):
            return None
        return Forbidden(
            "Admin changes need 'Content-Type: application/json' (or an X-Requested-With header): another web page "
            "cannot send those without the browser asking this gateway first.",
            code="cross_site_request_refused",
        )


class AuthenticationMiddleware:
    """Checks the API key (or the admin key) from the headers before anything reads the body: an
    unauthenticated client cannot make the adapter buffer or parse a request. The routes keep their
    own dependency as well.

    An API key's request then takes one of the key's slots (`KeyConcurrency`) until its response
    has been sent, the last event of a stream included; with none free it gets 429. The admin API
    and keyless mode (no key to tell clients apart) have no cap."""

    def __init__(self, app: ASGIApp, api_keys: APIKeyCheck, admin: AdminCheck, concurrency: KeyConcurrency | None = None) -> None:
        self.app = app
        self.api_keys = api_keys
        self.admin = admin
        self.concurrency = concurrency if concurrency is not None and concurrency.limit > 0 else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS":  # CORS preflights carry no credentials
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        identity: bytes | None = None
        try:
            if path == "/api/admin" or path.startswith("/api/admin/"):
                self.admin(Request(scope))
            elif path.startswith(("/v1/", "/api/")):
                identity = self.api_keys.identify(Request(scope))
                if identity is not None and self.concurrency is not None:
                    self.concurrency.acquire(identity)
                else:
                    identity = None
        except APIError as refusal:
            body = refusal.response().model_dump_json().encode()
            headers = [(b"content-type", b"application/json"), *((k.encode(), v.encode()) for k, v in refusal.headers.items())]
            await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        if identity is None:
            await self.app(scope, receive, send)
            return
        assert self.concurrency is not None
        try:
            await self.app(scope, receive, send)
        finally:
            self.concurrency.release(identity)
