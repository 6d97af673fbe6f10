"""Background sampling of Triton and the host, so that /api/admin/status is cheap.

Every STATUS_INTERVAL_S the monitor reads, without blocking the event loop: Triton's health,
metadata, repository index, per-model statistics and configs, Triton's /metrics (vLLM and GPU
families), the `system` model's facts (GPUs through NVML and the dependencies of Triton's own
Python), the host through psutil, and the model cache. It keeps the latest status, a ring
buffer of per-interval rates for the dashboard, and applies the idle TTL policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import deque
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc import InferRequestedOutput

from passerelle.config import Settings
from passerelle.errors import APIError
from passerelle.services.catalog import Catalog, RepositoryModel
from passerelle.services.downloads import DownloadManager
from passerelle.services.model_control import ModelControl
from passerelle.services.triton import TritonClient, TritonFailure

log = logging.getLogger("passerelle.monitor")
SYSTEM_MODEL = "system"
_VLLM_GAUGES = ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc")
_DCGM = ("nv_gpu_utilization", "nv_gpu_memory_used_bytes", "nv_gpu_memory_total_bytes", "nv_gpu_power_usage")


def _ns(stats: dict[str, Any], name: str) -> tuple[int, int]:
    entry = stats.get("inference_stats", {}).get(name, {})
    return int(entry.get("count", 0)), int(entry.get("ns", 0))


def _directory_size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(root, name), follow_symlinks=False).st_size
    return total


def cache_location(source: str | None, cache_dir: Path) -> Path | None:
    if not source:
        return None
    if source.startswith("/"):
        return Path(source)
    return cache_dir / "hub" / ("models--" + source.replace("/", "--"))


def parse_metrics(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """The samples the status needs from Triton's /metrics, by sample name (counters end in _total)."""
    wanted = {*_VLLM_GAUGES, "vllm:generation_tokens", "vllm:prompt_tokens", *_DCGM, "nv_inference_pending_request_count"}
    # prometheus_client's parser walks the text character by character in Python; vLLM's histograms
    # make Triton's page hundreds of kB, which took seconds of the event loop. Only the lines of the
    # wanted families reach it.
    prefixes = tuple(wanted)
    lines = [line for line in text.splitlines() if (line[7:] if line.startswith(("# HELP ", "# TYPE ")) else line).startswith(prefixes)]
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families("\n".join(lines) + "\n"):
        if family.name not in wanted:
            continue
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def host_facts() -> dict[str, Any]:
    memory = psutil.virtual_memory()
    return {
        "cpu_count": psutil.cpu_count(),
        "cpu_percent": psutil.cpu_percent(interval=None),
        "memory_total_bytes": memory.total,
        "memory_used_bytes": memory.total - memory.available,
        "load_average": list(os.getloadavg()),
    }


class Monitor:
    def __init__(
        self, settings: Settings, triton: TritonClient, catalog: Catalog, control: ModelControl, downloads: DownloadManager
    ) -> None:
        self.settings = settings
        self.triton = triton
        self.catalog = catalog
        self.control = control
        self.downloads = downloads
        self.status: dict[str, Any] = {}
        self.history: deque[dict[str, Any]] = deque(maxlen=max(2, int(settings.metrics_window_s / settings.status_interval_s)))
        self._previous: dict[str, dict[str, int]] = {}
        self._previous_at = 0.0
        self._ready_since: dict[str, float] = {}
        self._http = httpx.AsyncClient(timeout=5.0, trust_env=False)

    async def run(self) -> None:
        while True:
            try:
                await self.sample()
            except Exception:
                log.exception("status sampling failed")
            await asyncio.sleep(self.settings.status_interval_s)

    async def close(self) -> None:
        await self._http.aclose()

    async def sample(self) -> dict[str, Any]:
        now = time.time()
        live = await self.triton.server_live()
        ready = live and await self.triton.server_ready()
        index, stats, metadata, metrics_text, facts = [], [], {}, "", None
        if live:
            try:
                index, stats, metadata = await asyncio.gather(
                    self.triton.repository_index(), self.triton.statistics(), self.triton.server_metadata()
                )
            except TritonFailure as failure:
                log.warning("Triton statistics unavailable: %s", failure.message)
            metrics_text = await self._metrics_text()
            facts = await self._system_facts(index)
        metrics = await asyncio.to_thread(parse_metrics, metrics_text) if metrics_text else {}
        host, caches = await asyncio.to_thread(self._local_facts)
        states = {entry["name"]: entry for entry in index}
        by_model = {entry["name"]: entry for entry in stats}
        models = {}
        for key, entry in self.catalog.entries.items():
            models[key] = await self._model_status(entry, states.get(key, {}), by_model.get(key, {}), metrics, caches.get(key), now)
        point = self._history_point(now, by_model, metrics, facts)
        self.status = {
            "collected_at": now,
            "triton": {
                "live": live,
                "ready": ready,
                "version": metadata.get("version"),
                "extensions": metadata.get("extensions", []),
                "grpc_url": self.settings.triton_grpc_url,
                "http_url": self.settings.triton_http_url,
                "metrics_url": self.settings.triton_metrics_url,
            },
            "models": models,
            "gpus": self._gpus(facts, metrics),
            "host": {"adapter": host, "triton": (facts or {}).get("host")},
            "dependencies": self._dependencies(facts),
            "settings": {
                "profile": self.settings.profile,
                "lazy_load_models": self.settings.lazy_load_models,
                "preload_models": self.settings.preload_models,
                "default_model_ttl_s": self.settings.default_model_ttl_s,
                "model_cache_dir": str(self.settings.model_cache_dir),
            },
        }
        self.history.append(point)
        await self._apply_ttl(models, now)
        return self.status

    async def _metrics_text(self) -> str:
        try:
            response = await self._http.get(self.settings.triton_metrics_url)
            return response.text if response.status_code == 200 else ""
        except httpx.HTTPError:
            return ""

    async def _system_facts(self, index: list[dict[str, str]]) -> dict[str, Any] | None:
        if not any(entry.get("name") == SYSTEM_MODEL and entry.get("state") == "READY" for entry in index):
            return None
        try:
            result = await self.triton.infer(SYSTEM_MODEL, [], [InferRequestedOutput("facts")])
        except TritonFailure as failure:
            log.warning("the system model did not answer: %s", failure.message)
            return None
        raw = result.as_numpy("facts")
        if raw is None:
            return None
        value = np.asarray(raw).reshape(-1)[0]
        facts: dict[str, Any] = json.loads(value.decode() if isinstance(value, bytes) else str(value))
        return facts

    def _local_facts(self) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        caches = {}
        for key, entry in self.catalog.entries.items():
            location = cache_location(entry.artifact_source, self.settings.model_cache_dir)
            if location is None:
                continue
            exists = location.exists()
            caches[key] = {"path": str(location), "cached": exists, "size_bytes": _directory_size(location) if exists else 0}
        return host_facts(), caches

    async def _model_status(
        self,
        entry: RepositoryModel,
        state: dict[str, str],
        stats: dict[str, Any],
        metrics: dict[str, list[tuple[dict[str, str], float]]],
        cache: dict[str, Any] | None,
        now: float,
    ) -> dict[str, Any]:
        key = entry.key
        triton_state = "LOADING" if self.control.loading(key) else state.get("state") or "UNAVAILABLE"
        if triton_state == "READY":
            self._ready_since.setdefault(key, now)
        else:
            self._ready_since.pop(key, None)
        placement = list(entry.instance_groups)
        if triton_state == "READY":
            with contextlib.suppress(TritonFailure):
                placement = (await self.triton.model_config(key)).get("instance_group", placement)
        success, success_ns = _ns(stats, "success")
        failure, _ = _ns(stats, "fail")
        queue, queue_ns = _ns(stats, "queue")
        infer, infer_ns = _ns(stats, "compute_infer")
        record = self.control.record(key)
        job = self.downloads.job(key)
        vllm = {
            name.split(":", 1)[1]: value
            for name, samples in metrics.items()
            if name.startswith("vllm:")
            for labels, value in samples
            if labels.get("model") == key
        }
        return {
            "state": triton_state,
            "reason": state.get("reason") or None,
            "version": state.get("version") or None,
            "backend": entry.backend,
            "source": entry.artifact_source,
            "cache": cache,
            "download": job.snapshot() if job else None,
            "last_error": record.last_error,
            "statistics": {
                "success": success,
                "failure": failure,
                "avg_queue_ms": queue_ns / queue / 1e6 if queue else None,
                "avg_compute_ms": infer_ns / infer / 1e6 if infer else None,
                "avg_request_ms": success_ns / success / 1e6 if success else None,
                "last_inference": int(stats.get("last_inference", 0)) / 1000 or None,
            },
            "placement": placement,
            "runtime": {
                "endpoint": f"{self.settings.triton_grpc_url} model={key}",
                "loaded_at": record.loaded_at or self._ready_since.get(key),
                "load_duration_s": record.load_duration_s,
                "config_override": record.override,
                "engine_args": entry.engine_args or None,
                "in_flight": self.control.in_flight[key],
                "ttl_s": self.settings.ttl_for(key),
            },
            "vllm": vllm or None,
        }

    def _gpus(self, facts: dict[str, Any] | None, metrics: dict[str, list[tuple[dict[str, str], float]]]) -> dict[str, Any]:
        devices = list((facts or {}).get("gpus") or [])
        dcgm = {name: samples for name, samples in metrics.items() if name.startswith("nv_gpu_")}
        if facts is None:
            note = f"the '{SYSTEM_MODEL}' model is not loaded, so NVML facts from Triton's host are unavailable"
        elif not devices:
            note = (facts or {}).get("gpu_error") or "no GPU is visible to Triton"
        else:
            note = None
        return {"available": bool(devices), "devices": devices, "note": note, "dcgm": dcgm or None}

    @staticmethod
    def _dependencies(facts: dict[str, Any] | None) -> dict[str, Any] | None:
        if facts is None:
            return None
        return {"python": facts.get("python"), "packages": facts.get("packages"), "torch": facts.get("torch")}

    def _history_point(
        self,
        now: float,
        stats: dict[str, dict[str, Any]],
        metrics: dict[str, list[tuple[dict[str, str], float]]],
        facts: dict[str, Any] | None,
    ) -> dict[str, Any]:
        elapsed = now - self._previous_at if self._previous_at else None
        models = {}
        current: dict[str, dict[str, int]] = {}
        for key, entry in stats.items():
            counters = {"success": _ns(entry, "success")[0], "fail": _ns(entry, "fail")[0]}
            counters["queue_count"], counters["queue_ns"] = _ns(entry, "queue")
            counters["infer_count"], counters["infer_ns"] = _ns(entry, "compute_infer")
            current[key] = counters
            before = self._previous.get(key)
            if before is None or not elapsed:
                continue
            done = counters["infer_count"] - before["infer_count"]
            queued = counters["queue_count"] - before["queue_count"]
            models[key] = {
                "requests_per_s": (counters["success"] - before["success"]) / elapsed,
                "failures_per_s": (counters["fail"] - before["fail"]) / elapsed,
                "avg_compute_ms": (counters["infer_ns"] - before["infer_ns"]) / done / 1e6 if done > 0 else None,
                "avg_queue_ms": (counters["queue_ns"] - before["queue_ns"]) / queued / 1e6 if queued > 0 else None,
            }
        for name in ("vllm:generation_tokens_total", "vllm:num_requests_running", "vllm:kv_cache_usage_perc"):
            for labels, value in metrics.get(name, []):
                models.setdefault(labels.get("model", "?"), {})[name.split(":", 1)[1]] = value
        self._previous, self._previous_at = current, now
        gpus = [
            {key: device.get(key) for key in ("index", "utilization_percent", "memory_used_bytes", "memory_total_bytes")}
            for device in (facts or {}).get("gpus") or []
        ]
        return {"t": now, "models": models, "gpus": gpus}

    async def _apply_ttl(self, models: dict[str, dict[str, Any]], now: float) -> None:
        for key, status in models.items():
            ttl = self.settings.ttl_for(key)
            if key == SYSTEM_MODEL or ttl < 0 or status["state"] != "READY":
                continue
            running = (status.get("vllm") or {}).get("num_requests_running", 0)
            if self.control.in_flight[key] or running:
                continue
            last_used = max(filter(None, [status["statistics"]["last_inference"], status["runtime"]["loaded_at"]]), default=now)
            if now - last_used < ttl:
                continue
            log.info("unloading %s: idle for %.0f s (TTL %d s)", key, now - last_used, ttl)
            try:
                await self.control.unload(key)
            except (APIError, TritonFailure) as exc:
                log.warning("idle unload of %s refused: %s", key, exc)
