"""Model lifecycle through Triton's repository API: load, serve, unload, and unload when idle.

Every use of a model goes through `async with control.serving(model)`: it loads the model if
it is not ready (lazily, when allowed), counts the request as in flight while it runs, and
refreshes the model's idle clock when it ends. Every load goes through here too (the lazy load,
preloading at start, the admin API with an optional config override that places instances on
GPUs), so concurrent callers join the load already running. Unloads never drop a request the
adapter is serving: they are refused while the model has requests in flight (Triton itself also
lets in-flight requests finish before it unloads a model). `run_idle_unloads` applies the idle
TTL: a model unused for its TTL, by the adapter or by Triton's own clients, is unloaded.

In-flight counts and idle clocks sit behind `LifecycleState`: in-flight counts add up every worker
process (a metrics gauge in prometheus-client's multiprocess files), idle clocks come from Triton.
Load records are shared records (`passerelle.core.shared`), so every worker reports the same.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from passerelle.core.config import Settings
from passerelle.core.errors import APIError, Conflict, FailureKind, TritonFailure, Unavailable, from_triton, in_words
from passerelle.core.observability import Metrics
from passerelle.core.shared import FileLock, SharedState
from passerelle.triton.metrics import parse_metrics
from passerelle.triton.upstreams import Tritons

log = logging.getLogger("passerelle.models")
SYSTEM_MODEL = "system"  # the facts model: never unloaded for idleness


class LifecycleState(Protocol):
    """How many requests each model is serving, and when each was last used."""

    def enter(self, model: str) -> None: ...
    def leave(self, model: str) -> None: ...
    def in_flight(self, model: str) -> int: ...
    def touch(self, model: str, at: float) -> None: ...
    def last_used(self, model: str) -> float | None: ...


class WorkersState:
    """In-flight counts in a metrics gauge, which adds up every worker process; the last use as this
    process saw it. The idle TTL also reads Triton's own last-inference time, which covers every
    worker and every adapter pod, and the requests running in Triton's engines."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._last_used: dict[str, float] = {}

    def enter(self, model: str) -> None:
        self.metrics.model_in_flight.labels(model=model).inc()

    def leave(self, model: str) -> None:
        self.metrics.model_in_flight.labels(model=model).dec()

    def in_flight(self, model: str) -> int:
        return self.metrics.model_requests_in_flight(model)

    def touch(self, model: str, at: float) -> None:
        self._last_used[model] = max(at, self._last_used.get(model, 0.0))

    def last_used(self, model: str) -> float | None:
        return self._last_used.get(model)


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
    override: dict[str, Any] | None
    replica: str | None = None


class ModelControl:
    def __init__(
        self, triton: Tritons, settings: Settings, metrics: Metrics, shared: SharedState, state: LifecycleState | None = None
    ) -> None:
        self.triton = triton
        self.settings = settings
        self.metrics = metrics
        self.shared = shared
        self.state: LifecycleState = state or WorkersState(metrics)
        self._loads: dict[str, _Load] = {}
        # One worker of this adapter applies the idle TTL: whichever holds the lock in the workers' shared folder.
        folder = metrics.multiprocess_dir
        self._idle_unloads = FileLock(Path(folder) / "idle-unloads.lock") if folder else None
        self._ready_checked: dict[str, float] = {}  # when Triton last said the model is ready (monotonic)

    def record(self, model: str) -> LoadRecord:
        """The model's load record, shared by every worker (the last to load or unload it wrote it)."""
        return LoadRecord(**(self.shared.read("loads", model) or {}))

    def _publish(self, model: str, record: LoadRecord) -> None:
        self.shared.write("loads", model, dataclasses.asdict(record))

    def observed(self, model: str, ready: bool, at: float) -> LoadRecord:
        """The model's record, kept in line with Triton: a model found ready with no load time (loaded by
        Triton's own clients, or before the adapter started) is taken as loaded at `at`; a model found
        not ready has none. Every worker then reports the same time."""
        record = self.record(model)
        if ready and record.loaded_at is None:
            record.loaded_at = at
            self._publish(model, record)
        elif not ready and record.loaded_at is not None and not self.loading(model):
            record.loaded_at = None
            self._publish(model, record)
        return record

    def loading(self, model: str) -> bool:
        return model in self._loads

    def how_to_load(self, model: str) -> str:
        return (
            f"Load it with POST /api/admin/models/{model}/load, or Triton's repository API "
            f"(POST {self.settings.triton_http_url}/v2/repository/models/{model}/load), "
            "or set LAZY_LOAD_MODELS=true to load models on their first request."
        )

    def api_error(self, failure: TritonFailure, model: str) -> APIError:
        """The API's answer to a Triton failure while serving `model` (one mapping for every route)."""
        if failure.kind is FailureKind.MODEL_NOT_READY:
            self._ready_checked.pop(model, None)
        if failure.kind is FailureKind.MODEL_CRASHED:
            # Triton still calls the model ready; the status shows why it cannot serve until reloaded.
            record = self.record(model)
            record.last_error = f"its process in Triton died ({in_words(failure.message)}); reload the model"
            self._publish(model, record)
        return from_triton(failure, model, retry_after_s=self.settings.unavailable_retry_after_s, how_to_load=self.how_to_load(model))

    def _unavailable(self, message: str, code: str) -> Unavailable:
        return Unavailable(message, retry_after_s=self.settings.unavailable_retry_after_s, code=code)

    @asynccontextmanager
    async def serving(self, *models: str) -> AsyncIterator[None]:
        """Serve one request with `models` (a pipeline names all it calls): loaded, counted, clocked."""
        for model in models:
            await self.ensure_loaded(model)
        for model in models:
            self.state.enter(model)
        try:
            yield
        finally:
            now = time.time()
            for model in models:
                self.state.leave(model)
                self.state.touch(model, now)

    async def ensure_loaded(self, model: str, *, lazy: bool | None = None) -> None:
        """Make sure Triton serves `model`, loading it if allowed; raises Unavailable otherwise.

        A model that Triton called ready less than MODEL_READY_RECHECK_S ago is not asked about again:
        a request per token-stream would otherwise pay one more round trip. A model unloaded behind
        the adapter's back within that window fails its request with 503 (Triton's "not ready"),
        which also drops the remembered answer.
        """
        checked = self._ready_checked.get(model)
        if checked is not None and time.monotonic() - checked < self.settings.model_ready_recheck_s:
            return
        try:
            if await self.triton.model_ready(model):
                self._ready_checked[model] = time.monotonic()
                return
        except TritonFailure as failure:
            raise self.api_error(failure, model) from failure
        if not (self.settings.lazy_load_models if lazy is None else lazy):
            raise self._unavailable(f"Model '{model}' is not loaded. {self.how_to_load(model)}", "model_unavailable")
        await self.load(model)

    async def load(self, model: str, override: dict[str, Any] | None = None, replica: str | None = None) -> None:
        """Load (or join the running load of) `model`; `override` replaces fields of its config. On every
        replica of the model's upstream that lacks it (with an override: on each), or on `replica` only."""
        running = self._loads.get(model)
        if running is not None and (running.override != override or running.replica != replica):
            raise Conflict(
                f"Model '{model}' is already loading with another configuration; retry when it is done.", code="load_in_progress"
            )
        if running is None:
            running = _Load(asyncio.create_task(self._load(model, override, replica), name=f"load-{model}"), override, replica)
            self._loads[model] = running
            running.task.add_done_callback(lambda _: self._loads.pop(model, None))
        try:
            await asyncio.wait_for(asyncio.shield(running.task), timeout=self.settings.model_load_timeout_s)
        except TimeoutError as exc:
            raise self._unavailable(f"Model '{model}' is still loading; retry shortly.", "model_loading") from exc
        except TritonFailure as failure:
            if failure.kind is FailureKind.SERVER_UNAVAILABLE:
                raise self.api_error(failure, model) from failure
            raise self._unavailable(f"Model '{model}' failed to load: {in_words(failure.message)}", "model_load_failed") from failure

    async def _load(self, model: str, override: dict[str, Any] | None, replica: str | None = None) -> None:
        record = self.record(model)
        started = time.time()
        log.info("loading model %s through Triton%s", model, " with a config override" if override else "")
        try:
            await self.triton.load_model(model, json.dumps(override) if override else None, replica)
        except TritonFailure as failure:
            record.last_error = failure.message
            self._publish(model, record)
            self.metrics.load_duration.labels(model=model, outcome="failed").observe(time.time() - started)
            log.error("loading %s failed: %s", model, failure.message)
            raise
        record.loaded_at = time.time()
        record.load_duration_s = record.loaded_at - started
        record.override = override
        record.last_error = None
        self._publish(model, record)
        self.state.touch(model, record.loaded_at)
        self.metrics.load_duration.labels(model=model, outcome="loaded").observe(record.load_duration_s)
        log.info("model %s ready in %.1f s", model, record.load_duration_s)

    async def unload(self, model: str, replica: str | None = None) -> None:
        """Unload `model` from every replica of its upstream, or from `replica` only."""
        in_flight = self.state.in_flight(model)
        if in_flight > 0:
            raise Conflict(f"Model '{model}' is serving {in_flight} request(s); unload it when they are done.", code="model_busy")
        if model in self._loads:
            raise Conflict(f"Model '{model}' is loading; unload it when the load is done.", code="load_in_progress")
        self._ready_checked.pop(model, None)
        try:
            await self.triton.unload_model(model, replica)
        except TritonFailure as failure:
            raise self.api_error(failure, model) from failure
        if replica is None:
            record = self.record(model)
            record.loaded_at = None
            self._publish(model, record)
        log.info("model %s unloaded%s", model, f" from replica {replica}" if replica else "")

    async def preload(self, models: list[str]) -> None:
        for model in models:
            try:
                await self.ensure_loaded(model, lazy=True)
            except APIError as exc:
                log.error("preloading %s failed: %s", model, exc.message)

    # Idle TTL -----------------------------------------------------------------------------

    def ttl_enabled(self, models: list[str]) -> bool:
        return any(self.settings.ttl_for(model) >= 0 for model in models if model != SYSTEM_MODEL)

    async def run_idle_unloads(self) -> None:
        """Every STATUS_INTERVAL_S, unload the models idle for longer than their TTL. One worker process
        of the adapter does it (whichever holds the lock; another takes over if it dies). Several
        adapter pods each do it: their decisions come from Triton's own clocks and counts, and
        unloading twice is harmless."""
        try:
            async with httpx.AsyncClient(timeout=5.0, trust_env=False) as http:
                while True:
                    if self._idle_unloads is None or self._idle_unloads.acquire():
                        try:
                            await self.unload_idle(http)
                        except Exception:
                            log.exception("idle-unload check failed")
                    await asyncio.sleep(self.settings.status_interval_s)
        finally:
            if self._idle_unloads is not None:
                self._idle_unloads.release()

    async def unload_idle(self, http: httpx.AsyncClient) -> None:
        now = time.time()
        try:
            index, stats = await asyncio.gather(self.triton.repository_index(), self.triton.statistics())
        except TritonFailure:
            return
        ready = {entry["name"] for entry in index if entry.get("state") == "READY"}
        candidates = [model for model in ready if model != SYSTEM_MODEL and self.settings.ttl_for(model) >= 0]
        if not candidates:
            return
        running = await self._running_in_engines(http)
        last_inference = {entry["name"]: int(entry.get("last_inference", 0)) / 1000 for entry in stats}
        for model in candidates:
            loaded_at = self.observed(model, True, now).loaded_at
            if self.state.in_flight(model) or running.get(model) or self.loading(model):
                continue
            clocks = [last_inference.get(model), self.state.last_used(model), loaded_at]
            last_used = max(filter(None, clocks), default=now)
            ttl = self.settings.ttl_for(model)
            if now - last_used < ttl:
                continue
            log.info("unloading %s: idle for %.0f s (TTL %d s)", model, now - last_used, ttl)
            try:
                await self.unload(model)
            except APIError as exc:
                log.warning("idle unload of %s refused: %s", model, exc.message)

    async def _running_in_engines(self, http: httpx.AsyncClient) -> dict[str, float]:
        """Requests that Triton's own clients are running in vLLM engines (Triton's metrics)."""
        try:
            response = await http.get(self.settings.triton_metrics_url)
        except httpx.HTTPError:
            return {}
        if response.status_code != 200:
            return {}
        samples = (await asyncio.to_thread(parse_metrics, response.text)).get("vllm:num_requests_running", [])
        return {labels.get("model", ""): value for labels, value in samples}
