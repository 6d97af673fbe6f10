"""The FastAPI application: `create_app(settings)` builds it; `python -m passerelle` serves it.

The lifespan builds each capability's serving object on what it needs (no shared bag of services):
the Triton client, the catalog and the model lifecycle beneath, and the capabilities above them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.types import Message, Receive, Scope, Send

from passerelle.admin import router as admin
from passerelle.admin.downloads.manager import DownloadManager
from passerelle.admin.monitor.monitor import Monitor
from passerelle.admin.serving import AdminServing
from passerelle.admin.tokens import TokenStore
from passerelle.audio import router as audio
from passerelle.audio.decoding import AudioDecoder
from passerelle.audio.inference import SpeechService
from passerelle.audio.serving import AudioServing
from passerelle.chat import router as chat
from passerelle.chat.images import ImageLoader
from passerelle.chat.serving import ChatServing, LLMEngine
from passerelle.completions import router as completions
from passerelle.completions.serving import CompletionServing
from passerelle.core.catalog import Catalog
from passerelle.core.config import Settings
from passerelle.core.errors import NotFound, install_error_handlers
from passerelle.core.memory import trim_when_grown
from passerelle.core.middleware import BodyLimitMiddleware, RequestIdFilter, RequestIdMiddleware
from passerelle.core.observability import Metrics, MetricsMiddleware, route_prefix, watch_event_loop
from passerelle.core.security import (
    API_PREFIXES,
    AdminCheck,
    APIKeyCheck,
    AuthenticationMiddleware,
    BrowserPolicyMiddleware,
    KeyConcurrency,
)
from passerelle.core.shared import SharedState
from passerelle.core.workers import PreparePool
from passerelle.health import router as health
from passerelle.models import router as models
from passerelle.models.serving import ModelsServing
from passerelle.responses import router as responses
from passerelle.responses.serving import ResponsesServing
from passerelle.triton.lifecycle import ModelControl
from passerelle.triton.upstreams import Tritons

log = logging.getLogger("passerelle")


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    root = logging.getLogger("passerelle")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    # HTTP client libraries log full URLs at INFO, signed CDN URLs included.
    for noisy in ("httpx", "httpx2", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    metrics: Metrics = app.state.metrics
    shared = SharedState(settings.model_cache_dir / ".passerelle")
    triton = app.state.triton = Tritons(settings)
    catalog = Catalog.from_repositories(
        settings.model_repository, model_cache_dir=settings.model_cache_dir, retry_after_s=settings.unavailable_retry_after_s
    )
    control = ModelControl(triton, settings, metrics, shared)
    tokens = TokenStore(settings.hf_token_file)
    downloads = DownloadManager(settings.model_cache_dir, tokens.get, offline=settings.hf_hub_offline, shared=shared)
    monitor = Monitor(settings, triton, catalog, control, downloads)
    engine = LLMEngine(triton, control, metrics)
    pool = app.state.prepare_pool = PreparePool(settings.prepare_workers)
    images = ImageLoader(settings)
    app.state.chat = ChatServing(catalog, engine, images, pool)
    app.state.responses = ResponsesServing(catalog, engine, images, pool)
    app.state.completions = CompletionServing(catalog, engine, pool)
    app.state.models = ModelsServing(catalog, triton)
    app.state.audio = AudioServing(
        catalog, AudioDecoder(settings), SpeechService(triton, control, metrics), settings.default_audio_language
    )
    app.state.admin = AdminServing(settings, catalog, triton, control, monitor, downloads, tokens)

    if not app.state.api_keys.enabled:
        log.warning(
            "OPENAI_API_KEYS is empty: the OpenAI API is open to anyone who can reach %s:%s", settings.adapter_host, settings.adapter_port
        )
    if not app.state.admin_check.enabled:
        log.warning("ADMIN_API_KEY is empty: the admin API answers loopback clients only")
    if tokens.get() is not None:
        log.info("Hugging Face token restored from %s; downloads will use it", settings.hf_token_file)
    log.info(
        "serving %s from %s (profile %s)",
        ", ".join(catalog.models) or "no models",
        ", ".join(map(str, settings.model_repository)),
        settings.profile,
    )
    metrics.forget_dead_workers()
    await catalog.warm_up()
    tasks = [
        asyncio.create_task(monitor.run(), name="monitor"),
        asyncio.create_task(watch_event_loop(metrics), name="event-loop-lag"),
    ]
    if settings.memory_trim_growth_bytes > 0:
        tasks.append(
            asyncio.create_task(trim_when_grown(settings.memory_trim_growth_bytes, settings.memory_trim_interval_s), name="memory-trim")
        )
    if control.ttl_enabled(list(catalog.entries)):
        tasks.append(asyncio.create_task(control.run_idle_unloads(), name="idle-unloads"))
    if settings.preload_models:
        tasks.append(asyncio.create_task(control.preload(settings.preload_models), name="preload"))
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await downloads.close()
        await monitor.close()
        await triton.close()
        pool.close()


# The dashboard loads only its own files and talks only to its own origin; nothing may frame it.
DASHBOARD_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
        b"media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


class DashboardFiles(StaticFiles):
    """The built dashboard, with its security headers. Paths of the APIs that no route matched are
    answered 404 in the API's error shape here, not by the files (which would answer 405 to a POST,
    or the app's HTML)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(API_PREFIXES):
            error = NotFound(f"No route {scope['method']} {scope['path'][:200]}.", code="not_found")
            await error.response().json_response(404)(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *DASHBOARD_HEADERS]
            await send(message)

        await super().__call__(scope, receive, with_headers)


CAPABILITIES = (health, models, chat, responses, completions, audio, admin)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.log_level)
    # /docs and /redoc take Swagger UI's and ReDoc's assets from the fastapi-offline package, not a CDN.
    app = FastAPIOffline(title="passerelle", version="0.1.0", lifespan=lifespan, static_url="/docs/assets")
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.state.api_keys = APIKeyCheck([key.get_secret_value() for key in settings.openai_api_keys])
    app.state.admin_check = AdminCheck(settings.admin_api_key.get_secret_value() if settings.admin_api_key else None)
    install_error_handlers(app)
    for module in CAPABILITIES:
        app.include_router(module.router)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"], allow_headers=["*"], expose_headers=["X-Request-ID"]
        )
    app.add_middleware(
        BodyLimitMiddleware,
        limit=settings.max_request_body_bytes,
        upload_limit=settings.max_audio_upload_bytes,
        upload_paths=audio.UPLOAD_PATHS,
    )
    dashboard = settings.frontend_dist is not None and (settings.frontend_dist / "index.html").is_file()
    guarded_dashboard = settings.dashboard_prefix if dashboard else None
    app.add_middleware(BrowserPolicyMiddleware, hosts=settings.browser_hosts, dashboard_prefix=guarded_dashboard)
    # Credentials first: a request without them gets 401 before anything reads its body; then each
    # key's cap on requests in flight (MAX_CONCURRENT_REQUESTS_PER_KEY).
    app.add_middleware(
        AuthenticationMiddleware,
        api_keys=app.state.api_keys,
        admin=app.state.admin_check,
        concurrency=KeyConcurrency(settings.max_concurrent_requests_per_key),
    )
    routes = [*app.routes, *(route for module in CAPABILITIES for route in module.router.routes)]
    prefixes = frozenset(route_prefix(path) for route in routes if isinstance(path := getattr(route, "path", None), str))
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics, prefixes=prefixes)
    app.add_middleware(RequestIdMiddleware)
    if dashboard:
        assert settings.frontend_dist is not None
        # The seed served its dashboard at /dashboard: that address still leads to it.
        for alias in {"/", "/dashboard", "/dashboard/"} - {settings.dashboard_prefix or "/", settings.dashboard_prefix + "/"}:
            app.add_api_route(alias, lambda: RedirectResponse((settings.dashboard_prefix or "") + "/"), include_in_schema=False)
        app.mount(settings.dashboard_prefix or "/", DashboardFiles(directory=settings.frontend_dist, html=True), name="dashboard")
    elif settings.frontend_dist is not None:
        log.warning("FRONTEND_DIST=%s has no index.html: the dashboard is not served", settings.frontend_dist)
    return app
