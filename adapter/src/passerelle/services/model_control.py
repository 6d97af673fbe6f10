"""Loading and unloading models through Triton's repository API, one operation per model at a time.

Every load goes through here: the lazy load on a first request, preloading at start, the admin
API (optionally with a config override that places instances on GPUs), so concurrent callers
join the load already running. Unloads never drop a request the adapter is serving: they are
refused while the model has generations in flight (Triton itself also lets in-flight requests
finish before it unloads a model).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from passerelle.config import Settings
from passerelle.errors import APIError, Unavailable
from passerelle.observability import Metrics
from passerelle.services.triton import FailureKind, TritonClient, TritonFailure

log = logging.getLogger("passerelle.models")


class Conflict(APIError):
    status = 409
    type = "invalid_request_error"


@dataclass
class LoadRecord:
    """What the adapter knows of a model's runtime: when and how it was last loaded, its last error."""

    loaded_at: float | None = None
    load_duration_s: float | None = None
    override: dict[str, Any] | None = None
    last_error: str | None = None


@dataclass
class _Load:
    task: asyncio.Task[None]
    override: dict[str, Any] | None = field(default=None)


class ModelControl:
    def __init__(self, triton: TritonClient, settings: Settings, metrics: Metrics) -> None:
        self.triton = triton
        self.settings = settings
        self.metrics = metrics
        self._loads: dict[str, _Load] = {}
        self.records: dict[str, LoadRecord] = {}
        self.in_flight: Counter[str] = Counter()

    def record(self, model: str) -> LoadRecord:
        return self.records.setdefault(model, LoadRecord())

    def how_to_load(self, model: str) -> str:
        return (
            f"Load it with POST /api/admin/models/{model}/load, or Triton's repository API "
            f"(POST {self.settings.triton_http_url}/v2/repository/models/{model}/load), "
            "or set LAZY_LOAD_MODELS=true to load models on their first request."
        )

    def _unavailable(self, message: str, code: str = "model_unavailable") -> Unavailable:
        return Unavailable(message, retry_after_s=self.settings.unavailable_retry_after_s, code=code)

    async def ensure_loaded(self, model: str, *, lazy: bool | None = None) -> None:
        """Make sure Triton serves `model`, loading it if allowed; raises Unavailable otherwise."""
        try:
            if await self.triton.model_ready(model):
                return
        except TritonFailure as failure:
            raise self._unavailable(failure.message, code="triton_unavailable") from failure
        if not (self.settings.lazy_load_models if lazy is None else lazy):
            raise self._unavailable(f"Model '{model}' is not loaded. {self.how_to_load(model)}")
        await self.load(model)

    async def load(self, model: str, override: dict[str, Any] | None = None) -> None:
        """Load (or join the running load of) `model`; `override` replaces fields of its config."""
        running = self._loads.get(model)
        if running is not None and running.override != override:
            raise Conflict(
                f"Model '{model}' is already loading with another configuration; retry when it is done.", code="load_in_progress"
            )
        if running is None:
            running = _Load(asyncio.create_task(self._load(model, override), name=f"load-{model}"), override)
            self._loads[model] = running
            running.task.add_done_callback(lambda _: self._loads.pop(model, None))
        try:
            await asyncio.wait_for(asyncio.shield(running.task), timeout=self.settings.model_load_timeout_s)
        except TimeoutError as exc:
            raise self._unavailable(f"Model '{model}' is still loading; retry shortly.", code="model_loading") from exc
        except TritonFailure as failure:
            if failure.kind is FailureKind.SERVER_UNAVAILABLE:
                raise self._unavailable(failure.message, code="triton_unavailable") from failure
            raise self._unavailable(f"Model '{model}' failed to load: {failure.message}", code="model_load_failed") from failure

    def loading(self, model: str) -> bool:
        return model in self._loads

    async def _load(self, model: str, override: dict[str, Any] | None) -> None:
        record = self.record(model)
        started = time.time()
        log.info("loading model %s through Triton%s", model, " with a config override" if override else "")
        try:
            await self.triton.load_model(model, json.dumps(override) if override else None)
        except TritonFailure as failure:
            record.last_error = failure.message
            self.metrics.load_duration.labels(model=model, outcome="failed").observe(time.time() - started)
            log.error("loading %s failed: %s", model, failure.message)
            raise
        record.loaded_at = time.time()
        record.load_duration_s = record.loaded_at - started
        record.override = override
        record.last_error = None
        self.metrics.load_duration.labels(model=model, outcome="loaded").observe(record.load_duration_s)
        log.info("model %s ready in %.1f s", model, record.load_duration_s)

    async def unload(self, model: str) -> None:
        if self.in_flight[model] > 0:
            raise Conflict(
                f"Model '{model}' is serving {self.in_flight[model]} request(s); unload it when they are done.", code="model_busy"
            )
        if model in self._loads:
            raise Conflict(f"Model '{model}' is loading; unload it when the load is done.", code="load_in_progress")
        try:
            await self.triton.unload_model(model)
        except TritonFailure as failure:
            if failure.kind is FailureKind.SERVER_UNAVAILABLE:
                raise self._unavailable(failure.message, code="triton_unavailable") from failure
            raise
        record = self.record(model)
        record.loaded_at = None
        log.info("model %s unloaded", model)

    async def preload(self, models: list[str]) -> None:
        for model in models:
            try:
                await self.ensure_loaded(model, lazy=True)
            except APIError as exc:
                log.error("preloading %s failed: %s", model, exc.message)
