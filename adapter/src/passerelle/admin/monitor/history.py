"""The dashboard's time series: per-interval rates from Triton's cumulative statistics, vLLM gauges and GPU use."""

from __future__ import annotations

from collections import deque
from typing import Any

from passerelle.admin.monitor.triton import counts
from passerelle.admin.protocol import MetricsPoint
from passerelle.triton.metrics import Samples


class History:
    def __init__(self, length: int) -> None:
        self.points: deque[MetricsPoint] = deque(maxlen=max(2, length))
        self._previous: dict[str, dict[str, int]] = {}
        self._previous_at = 0.0

    def add(self, now: float, stats: dict[str, dict[str, Any]], metrics: Samples, facts: dict[str, Any] | None) -> None:
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
        for name in ("vllm:generation_tokens_total", "vllm:num_requests_running", "vllm:kv_cache_usage_perc"):
            for labels, value in metrics.get(name, []):
                models.setdefault(labels.get("model", "?"), {})[name.split(":", 1)[1]] = value
        self._previous, self._previous_at = current, now
        gpus = [
            {key: device.get(key) for key in ("index", "utilization_percent", "memory_used_bytes", "memory_total_bytes")}
            for device in (facts or {}).get("gpus") or []
        ]
        self.points.append(MetricsPoint(t=now, models=models, gpus=gpus))
