"""Loading models through Triton's repository API, one load per model at a time.

Every load goes through `ensure_loaded`: the lazy load on a first request, preloading at
start, and (later) the admin API. Concurrent callers join the load already running.
"""

from __future__ import annotations

import asyncio
import logging
import time

from passerelle.config import Settings
from passerelle.errors import Unavailable
from passerelle.services.triton import FailureKind, TritonClient, TritonFailure

log = logging.getLogger("passerelle.models")


class ModelControl:
    def __init__(self, triton: TritonClient, settings: Settings) -> None:
        self.triton = triton
        self.settings = settings
        self._loads: dict[str, asyncio.Task[None]] = {}
        self.last_error: dict[str, str] = {}

    def how_to_load(self, model: str) -> str:
        return (
            f"Load it with Triton's repository API (POST {self.settings.triton_http_url}/v2/repository/models/{model}/load), "
            "or set LAZY_LOAD_MODELS=true to load models on their first request."
        )

    def _unavailable(self, message: str, code: str = "model_unavailable") -> Unavailable:
        return Unavailable(message, retry_after_s=self.settings.unavailable_retry_after_s, code=code)

    async def ensure_loaded(self, model: str, *, lazy: bool | None = None) -> None:
        try:
            if await self.triton.model_ready(model):
                return
        except TritonFailure as failure:
            raise self._unavailable(failure.message, code="triton_unavailable") from failure
        if not (self.settings.lazy_load_models if lazy is None else lazy):
            raise self._unavailable(f"Model '{model}' is not loaded. {self.how_to_load(model)}")
        task = self._loads.get(model)
        if task is None:
            task = asyncio.create_task(self._load(model), name=f"load-{model}")
            self._loads[model] = task
            task.add_done_callback(lambda _: self._loads.pop(model, None))
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=self.settings.model_load_timeout_s)
        except TimeoutError as exc:
            raise self._unavailable(f"Model '{model}' is still loading; retry shortly.", code="model_loading") from exc
        except TritonFailure as failure:
            if failure.kind is FailureKind.SERVER_UNAVAILABLE:
                raise self._unavailable(failure.message, code="triton_unavailable") from failure
            raise self._unavailable(f"Model '{model}' failed to load: {failure.message}") from failure

    async def _load(self, model: str) -> None:
        started = time.perf_counter()
        log.info("loading model %s through Triton", model)
        try:
            await self.triton.load_model(model)
        except TritonFailure as failure:
            self.last_error[model] = failure.message
            log.error("loading %s failed: %s", model, failure.message)
            raise
        self.last_error.pop(model, None)
        log.info("model %s ready in %.1f s", model, time.perf_counter() - started)

    async def preload(self, models: list[str]) -> None:
        for model in models:
            try:
                await self.ensure_loaded(model, lazy=True)
            except Unavailable as exc:
                log.error("preloading %s failed: %s", model, exc.message)
