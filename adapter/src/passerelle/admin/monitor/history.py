"""The dashboard's time series, one point per sampling interval: rates and averages from Triton's
cumulative statistics, latency quantiles, time to first token and tokens/s from the adapter's own
metrics, vLLM's gauges, GPU and host use. The panels of vLLM's and Triton's Grafana boards."""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from passerelle.admin.monitor.triton import counts
from passerelle.admin.protocol import HostFacts, MetricsPoint
from passerelle.triton.metrics import Samples

GPU_KEYS = ("index", "utilization_percent", "memory_used_bytes", "memory_total_bytes", "temperature_c", "power_w")


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus' histogram_quantile over cumulative bucket counts (`le` -> count): linear within
    the bucket that holds the rank; the largest finite bound when the rank falls in +Inf."""
    ordered = sorted(buckets.items())
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * ((rank - below) / (count - below) if count > below else 0.0)
        lower, below = bound, count
    return lower


def _delta(now: dict[float, float], before: dict[float, float] | None) -> dict[float, float]:
    return {bound: count - (before or {}).get(bound, 0.0) for bound, count in now.items()}


class History:
    def __init__(self, length: int) -> None:
        self.points: deque[MetricsPoint] = deque(maxlen=max(2, length))
        self._previous: dict[str, dict[str, int]] = {}
        self._previous_adapter: dict[str, dict[str, Any]] = {}
        self._previous_at = 0.0

    def add(
        self,
        now: float,
        stats: dict[str, dict[str, Any]],
        metrics: Samples,
        facts: dict[str, Any] | None,
        adapter: dict[str, dict[str, Any]] | None = None,
        host: HostFacts | None = None,
    ) -> None:
        elapsed = now - self._previous_at if self._previous_at else None
        models: dict[str, dict[str, float | None]] = {}
        current: dict[str, dict[str, int]] = {}
        for key, entry in stats.items():
            counters = {"success": counts(entry, "success")[0], "fail": counts(entry, "fail")[0]}
            counters["queue_count"], counters["queue_ns"] = counts(entry, "queue")
            counters["infer_count"], counters["infer_ns"] = counts(entry, "compute_infer")
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
        for key, series in (adapter or {}).items():
            before_series = self._previous_adapter.get(key)
            point = models.setdefault(key, {})
            point["in_flight"] = series["in_flight"]
            if before_series is None or not elapsed:
                continue
            latency = _delta(series["latency"], before_series["latency"])
            ttft = _delta(series["ttft"], before_series["ttft"])
            point["latency_p50_s"] = histogram_quantile(0.5, latency)
            point["latency_p95_s"] = histogram_quantile(0.95, latency)
            point["ttft_p50_s"] = histogram_quantile(0.5, ttft)
            point["ttft_p95_s"] = histogram_quantile(0.95, ttft)
            point["tokens_per_s"] = max(0.0, series["completion_tokens"] - before_series["completion_tokens"]) / elapsed
        for name in ("vllm:generation_tokens_total", "vllm:num_requests_running", "vllm:kv_cache_usage_perc"):
            for labels, value in metrics.get(name, []):
                models.setdefault(labels.get("model", "?"), {})[name.split(":", 1)[1]] = value
        # Requests waiting: vLLM's own queue where the engine reports it, else Triton's pending count.
        for labels, value in metrics.get("nv_inference_pending_request_count", []):
            if labels.get("model") in models:
                models[labels["model"]]["queued"] = value
        for labels, value in metrics.get("vllm:num_requests_waiting", []):
            models.setdefault(labels.get("model", "?"), {})["queued"] = value
        self._previous, self._previous_adapter, self._previous_at = current, adapter or {}, now
        gpus = [{key: device.get(key) for key in GPU_KEYS} for device in (facts or {}).get("gpus") or []]
        self.points.append(MetricsPoint(t=now, models=models, gpus=gpus, host=host))
