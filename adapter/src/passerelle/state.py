"""The services one adapter process owns, built in the lifespan and kept on `app.state.services`."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from passerelle.config import Settings
from passerelle.errors import NotFound, Unavailable
from passerelle.observability import Metrics
from passerelle.security import AdminCheck, APIKeyCheck
from passerelle.services.audio import AudioDecoder
from passerelle.services.catalog import Catalog, ServedModel
from passerelle.services.downloads import DownloadManager
from passerelle.services.images import ImageLoader
from passerelle.services.llm import LLMService
from passerelle.services.model_control import ModelControl
from passerelle.services.monitor import Monitor
from passerelle.services.prompts import ModelFilesMissing, PromptRenderer
from passerelle.services.speech import SpeechService
from passerelle.services.token_store import TokenStore
from passerelle.services.triton import TritonClient

log = logging.getLogger("passerelle.state")


@dataclass
class Services:
    settings: Settings
    triton: TritonClient
    catalog: Catalog
    control: ModelControl
    llm: LLMService
    speech: SpeechService
    audio: AudioDecoder
    images: ImageLoader
    api_keys: APIKeyCheck
    admin: AdminCheck
    metrics: Metrics
    tokens: TokenStore
    downloads: DownloadManager
    monitor: Monitor
    renderers: dict[str, PromptRenderer] = field(default_factory=dict)
    _renderer_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @classmethod
    def build(cls, settings: Settings, metrics: Metrics) -> Services:
        triton = TritonClient(settings.triton_grpc_url, settings.triton_http_url)
        control = ModelControl(triton, settings, metrics)
        catalog = Catalog.from_repositories(settings.model_repository)
        tokens = TokenStore(settings.hf_token_file)
        downloads = DownloadManager(settings.model_cache_dir, tokens.get, offline=settings.hf_hub_offline)
        admin_key = settings.admin_api_key.get_secret_value() if settings.admin_api_key else None
        return cls(
            settings=settings,
            triton=triton,
            catalog=catalog,
            control=control,
            llm=LLMService(triton, control, metrics),
            speech=SpeechService(triton, control, metrics),
            audio=AudioDecoder(settings),
            images=ImageLoader(settings),
            api_keys=APIKeyCheck([key.get_secret_value() for key in settings.openai_api_keys]),
            admin=AdminCheck(admin_key),
            metrics=metrics,
            tokens=tokens,
            downloads=downloads,
            monitor=Monitor(settings, triton, catalog, control, downloads),
        )

    def model(self, name: str, *, task: str) -> ServedModel:
        model = self.catalog.resolve(name)
        if model is None or model.task != task:
            known = ", ".join(m.key for m in self.catalog.models.values() if m.task == task) or "none"
            raise NotFound(f"The model '{name}' does not exist. Models for this endpoint: {known}.", param="model", code="model_not_found")
        return model

    async def renderer(self, model: ServedModel) -> PromptRenderer:
        """The model's chat template and tokenizer, loaded once from the model cache."""
        if model.key not in self.renderers:
            async with self._renderer_lock:
                if model.key not in self.renderers:
                    try:
                        self.renderers[model.key] = await asyncio.to_thread(
                            PromptRenderer.load, model.tokenizer_source, self.settings.model_cache_dir
                        )
                    except ModelFilesMissing as exc:
                        raise Unavailable(
                            f"The tokenizer of '{model.key}' is not available: {exc}.",
                            retry_after_s=self.settings.unavailable_retry_after_s,
                            code="model_files_missing",
                        ) from exc
        return self.renderers[model.key]

    async def warm_up(self) -> None:
        for model in self.catalog.models.values():
            if model.task == "chat":
                try:
                    await self.renderer(model)
                except Unavailable as exc:
                    log.warning("%s: %s (will retry on first request)", model.key, exc.message)


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def require_api_key(request: Request) -> None:
    get_services(request).api_keys(request)
