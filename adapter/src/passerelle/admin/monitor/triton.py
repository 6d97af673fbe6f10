"""Collector: Triton's health, metadata, repository index, per-model statistics and its Prometheus page."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import httpx

from passerelle.admin.protocol import ModelStatistics
from passerelle.core.errors import TritonFailure
from passerelle.triton.metrics import Samples, parse_metrics
from passerelle.triton.upstreams import Tritons

log = logging.getLogger("passerelle.monitor")


@dataclass
class TritonSample:
    live: bool = False
    ready: bool = False
    index: list[dict[str, str]] = field(default_factory=list)
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)  # by model
    metadata: dict[str, Any] = field(default_factory=dict)
    metrics: Samples = field(default_factory=dict)


async def collect_triton(triton: Tritons, http: httpx.AsyncClient, metrics_url: str) -> TritonSample:
    sample = TritonSample(live=await triton.server_live())
    if not sample.live:
        return sample
    sample.ready = await triton.server_ready()
    try:
        index, stats, sample.metadata = await asyncio.gather(triton.repository_index(), triton.statistics(), triton.server_metadata())
        sample.index, sample.stats = index, {entry["name"]: entry for entry in stats}
    except TritonFailure as failure:
        log.warning("Triton statistics unavailable: %s", failure.message)
    try:
        response = await http.get(metrics_url)
        text = response.text if response.status_code == 200 else ""
    except httpx.HTTPError:
        text = ""
    sample.metrics = await asyncio.to_thread(parse_metrics, text) if text else {}
    return sample


def counts(stats: dict[str, Any], name: str) -> tuple[int, int]:
    """(count, total ns) of one of Triton's inference statistics (success, fail, queue, compute_infer...)."""
    entry = stats.get("inference_stats", {}).get(name, {})
    return int(entry.get("count", 0)), int(entry.get("ns", 0))


def model_statistics(stats: dict[str, Any]) -> ModelStatistics:
    success, success_ns = counts(stats, "success")
    failure, _ = counts(stats, "fail")
    queue, queue_ns = counts(stats, "queue")
    infer, infer_ns = counts(stats, "compute_infer")
    return ModelStatistics(
        success=success,
        failure=failure,
        avg_queue_ms=queue_ns / queue / 1e6 if queue else None,
        avg_compute_ms=infer_ns / infer / 1e6 if infer else None,
        avg_request_ms=success_ns / success / 1e6 if success else None,
        last_inference=int(stats.get("last_inference", 0)) / 1000 or None,
    )


def vllm_gauges(metrics: Samples, model: str) -> dict[str, float]:
    return {
        name.split(":", 1)[1]: value
        for name, samples in metrics.items()
        if name.startswith("vllm:")
        for labels, value in samples
        if labels.get("model") == model
    }
