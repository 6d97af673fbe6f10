"""The FastAPI application: `create_app(settings)` builds it; `python -m passerelle` serves it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from passerelle.config import Settings
from passerelle.errors import install_error_handlers
from passerelle.middleware import BodyLimitMiddleware, RequestIdFilter, RequestIdMiddleware
from passerelle.observability import Metrics, MetricsMiddleware, watch_event_loop
from passerelle.routers import admin, audio, chat, completions, health, metrics, models
from passerelle.state import Services
from passerelle.streaming import ClientGone

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
    services = Services.build(settings, app.state.metrics)
    app.state.services = services
    if not services.api_keys.enabled:
        log.warning(
            "OPENAI_API_KEYS is empty: the OpenAI API is open to anyone who can reach %s:%s", settings.adapter_host, settings.adapter_port
        )
    if not services.admin.enabled:
        log.warning("ADMIN_API_KEY is empty: the admin API answers loopback clients only")
    if services.tokens.get() is not None:
        log.info("Hugging Face token restored from %s; downloads will use it", settings.hf_token_file)
    log.info(
        "serving %s from %s (profile %s)",
        ", ".join(services.catalog.models) or "no models",
        ", ".join(map(str, settings.model_repository)),
        settings.profile,
    )
    await services.warm_up()
    tasks = [
        asyncio.create_task(services.monitor.run(), name="monitor"),
        asyncio.create_task(watch_event_loop(app.state.metrics), name="event-loop-lag"),
    ]
    if settings.preload_models:
        tasks.append(asyncio.create_task(services.control.preload(settings.preload_models), name="preload"))
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await services.downloads.close()
        await services.monitor.close()
        await services.triton.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.log_level)
    app = FastAPI(title="passerelle", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.metrics = Metrics()
    install_error_handlers(app)

    @app.exception_handler(ClientGone)
    async def _client_gone(request: Request, exc: ClientGone) -> Response:
        log.info("client disconnected; request cancelled")
        return Response(status_code=499)

    for router in (health.router, metrics.router, models.router, chat.router, completions.router, audio.router, admin.router):
        app.include_router(router)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"], allow_headers=["*"], expose_headers=["X-Request-ID"]
        )
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_request_body_bytes, upload_limit=settings.max_audio_upload_bytes)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.add_middleware(RequestIdMiddleware)
    if settings.frontend_dist is not None and (settings.frontend_dist / "index.html").is_file():
        app.mount("/", StaticFiles(directory=settings.frontend_dist, html=True), name="dashboard")
    return app
