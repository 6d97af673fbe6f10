"""Background sampling of Triton and the hosts, so that `GET /api/admin/status` is cheap.

Every STATUS_INTERVAL_S the monitor runs its collectors without blocking the event loop: Triton
(health, metadata, repository index, statistics, its /metrics), the `system` model (GPUs through
NVML, the dependencies of Triton's own Python), the adapter's host and the model cache. It keeps
the latest `Status` and a ring buffer of per-interval points for the dashboard. Reading them
changes nothing: the idle TTL belongs to the model lifecycle (`triton/lifecycle.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from typing import Any

import httpx

from passerelle.admin.downloads.manager import DownloadManager
from passerelle.admin.monitor.history import History
from passerelle.admin.monitor.host import cache_states, host_facts
from passerelle.admin.monitor.system import dependencies, gpu_state, system_facts
from passerelle.admin.monitor.triton import TritonSample, collect_triton, model_statistics, vllm_gauges
from passerelle.admin.protocol import (
    CacheState,
    DownloadState,
    HostState,
    ModelRuntime,
    ModelState,
    ReplicaState,
    SettingsView,
    Status,
    TritonState,
)
from passerelle.core.catalog import Catalog, RepositoryModel
from passerelle.core.config import Settings
from passerelle.core.errors import TritonFailure
from passerelle.triton.lifecycle import ModelControl
from passerelle.triton.upstreams import Tritons

log = logging.getLogger("passerelle.monitor")


class Monitor:
    def __init__(self, settings: Settings, triton: Tritons, catalog: Catalog, control: ModelControl, downloads: DownloadManager) -> None:
        self.settings = settings
        self.triton = triton
        self.catalog = catalog
        self.control = control
        self.downloads = downloads
        self.status: Status | None = None
        self.history = History(int(settings.metrics_window_s / settings.status_interval_s))
        self._http = httpx.AsyncClient(timeout=5.0, trust_env=False)

    async def run(self) -> None:
        while True:
            try:
                self.status = await self.sample()
            except Exception:
                log.exception("status sampling failed")
            await asyncio.sleep(self.settings.status_interval_s)

    async def close(self) -> None:
        await self._http.aclose()

    async def current(self) -> Status:
        """The latest sample, or a first one taken now."""
        if self.status is None:
            self.status = await self.sample()
        return self.status

    async def triton_gpus(self) -> list[dict[str, Any]]:
        """The GPUs Triton's host has (NVML facts of the system model), sampled now if no sample has them yet."""
        if self.status is not None and self.status.gpus.devices:
            return self.status.gpus.devices
        try:
            index = await self.triton.repository_index()
        except TritonFailure:
            return []
        facts = await system_facts(self.triton, index)
        return list((facts or {}).get("gpus") or [])

    async def sample(self) -> Status:
        now = time.time()
        triton = await collect_triton(self.triton, self._http, self.settings.triton_metrics_url)
        replicas = [ReplicaState(**dataclasses.asdict(sample)) for sample in await self.triton.replica_samples(rejoin=True)]
        facts = await system_facts(self.triton, triton.index) if triton.live else None
        host, caches, adapter = await asyncio.to_thread(
            lambda: (host_facts(), cache_states(self.catalog.entries, self.settings.model_cache_dir), self.control.metrics.model_samples())
        )
        states = {entry["name"]: entry for entry in triton.index}
        models = {
            key: await self._model_state(entry, states.get(key, {}), triton, caches.get(key), now)
            for key, entry in self.catalog.entries.items()
        }
        self.history.add(now, triton.stats, triton.metrics, facts, adapter, host)
        return Status(
            collected_at=now,
            triton=TritonState(
                live=triton.live,
                ready=triton.ready,
                version=triton.metadata.get("version"),
                extensions=triton.metadata.get("extensions", []),
                grpc_url=self.settings.triton_grpc_url,
                http_url=self.settings.triton_http_url,
                metrics_url=self.settings.triton_metrics_url,
            ),
            replicas=replicas,
            models=models,
            gpus=gpu_state(facts, triton.metrics),
            host=HostState(adapter=host, triton=(facts or {}).get("host")),
            dependencies=dependencies(facts),
            settings=SettingsView(
                profile=self.settings.profile,
                lazy_load_models=self.settings.lazy_load_models,
                preload_models=self.settings.preload_models,
                default_model_ttl_s=self.settings.default_model_ttl_s,
                model_cache_dir=str(self.settings.model_cache_dir),
            ),
        )

    async def _model_state(
        self, entry: RepositoryModel, state: dict[str, str], triton: TritonSample, cache: CacheState | None, now: float
    ) -> ModelState:
        key = entry.key
        triton_state = "LOADING" if self.control.loading(key) else state.get("state") or "UNAVAILABLE"
        record = self.control.observed(key, triton_state == "READY", now)
        placement = list(entry.instance_groups)
        if triton_state == "READY":
            with contextlib.suppress(TritonFailure):
                placement = (await self.triton.model_config(key)).get("instance_group", placement)
        job = self.downloads.job(key)
        vllm = vllm_gauges(triton.metrics, key)
        return ModelState(
            state=triton_state,
            reason=state.get("reason") or None,
            version=state.get("version") or None,
            backend=entry.backend,
            source=entry.artifact_source,
            cache=cache,
            download=DownloadState.model_validate(job.snapshot()) if job else None,
            last_error=record.last_error,
            statistics=model_statistics(triton.stats.get(key, {})),
            placement=placement,
            runtime=ModelRuntime(
                endpoint=f"{self.settings.triton_grpc_url} model={key}",
                loaded_at=record.loaded_at,
                load_duration_s=record.load_duration_s,
                config_override=record.override,
                engine_args=entry.engine_args or None,
                in_flight=self.control.state.in_flight(key),
                ttl_s=self.settings.ttl_for(key),
            ),
            vllm=vllm or None,
        )
