"""The adapter's own Prometheus metrics (Triton's are scraped from Triton's port 8002 directly).

One registry per app, so that several apps in one process (tests) do not collide. With several
worker processes (ADAPTER_WORKERS > 1), prometheus-client's multiprocess mode keeps each worker's
values in files under PROMETHEUS_MULTIPROC_DIR, and `/metrics` adds them up: any worker answers for
all. Gauges of things in flight are summed over the live workers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("passerelle.observability")
_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_LOAD = (0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
        r = self.registry
        self.requests = Counter(
            "passerelle_requests", "HTTP requests by route, model and status.", ["route", "model", "status"], registry=r
        )
        self.latency = Histogram(
            "passerelle_request_duration_seconds",
            "HTTP request latency (whole response).",
            ["route", "model"],
            buckets=_LATENCY,
            registry=r,
        )
        self.in_flight = Gauge(
            "passerelle_requests_in_flight", "HTTP requests being served.", ["route"], registry=r, multiprocess_mode="livesum"
        )
        self.worker_requests = Gauge(
            "passerelle_worker_requests",
            "HTTP requests served by each worker process (labelled pid when ADAPTER_WORKERS > 1).",
            registry=r,
            multiprocess_mode="all",
        )
        self.model_in_flight = Gauge(
            "passerelle_model_requests_in_flight",
            "Requests using each model, in all workers (unloads wait for zero).",
            ["model"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.ttft = Histogram(
            "passerelle_time_to_first_token_seconds",
            "Time from request to the first generated token.",
            ["model"],
            buckets=_LATENCY,
            registry=r,
        )
        self.tokens = Counter("passerelle_tokens", "Tokens in prompts and completions.", ["model", "kind"], registry=r)
        self.generations_in_flight = Gauge(
            "passerelle_generations_in_flight", "Generations running in Triton.", ["model"], registry=r, multiprocess_mode="livesum"
        )
        self.merged_chunks = Counter(
            "passerelle_stream_merged_chunks",
            "Streamed chunks that carried two or more backend responses, because the client read slower than the engine wrote.",
            ["model"],
            registry=r,
        )
        self.merged_responses = Counter(
            "passerelle_stream_merged_responses", "Backend responses sent inside merged chunks.", ["model"], registry=r
        )
        self.audio_seconds = Counter("passerelle_audio_seconds", "Seconds of audio processed.", ["model"], registry=r)
        self.loop_lag = Histogram(
            "passerelle_event_loop_lag_seconds",
            "How late the adapter's event loop ran a 0.1 s timer (time it was blocked).",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.loop_tasks = Gauge(
            "passerelle_event_loop_tasks",
            "Asyncio tasks alive in the adapter's event loops (a count that keeps growing is a leak).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.load_duration = Histogram(
            "passerelle_model_load_duration_seconds", "Model loads through Triton.", ["model", "outcome"], buckets=_LOAD, registry=r
        )

    def _collected(self) -> CollectorRegistry:
        if self.multiprocess_dir is None:
            return self.registry
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return registry

    def forget_dead_workers(self) -> None:
        """Drop the in-flight values of worker processes that died (uvicorn restarts them under new pids)."""
        if self.multiprocess_dir is None:
            return
        for entry in Path(self.multiprocess_dir).glob("gauge_live*_*.db"):
            pid = int(entry.stem.rpartition("_")[2])
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                mark_process_dead(pid, self.multiprocess_dir)  # type: ignore[no-untyped-call]
            except PermissionError:
                pass

    def exposition(self) -> bytes:
        """The text format of every worker's metrics."""
        return generate_latest(self._collected())

    def model_samples(self) -> dict[str, dict[str, Any]]:
        """Per model, the cumulative series the dashboard's history turns into rates and quantiles:
        latency and time-to-first-token buckets (`le` -> count), completion tokens, requests in flight."""
        models: dict[str, dict[str, Any]] = {}

        def entry(model: str) -> dict[str, Any]:
            return models.setdefault(model, {"latency": {}, "ttft": {}, "completion_tokens": 0.0, "in_flight": 0.0})

        for family in self._collected().collect():
            for sample in family.samples:
                model = sample.labels.get("model")
                if not model:
                    continue
                if sample.name == "passerelle_request_duration_seconds_bucket":
                    buckets = entry(model)["latency"]
                    bound = float(sample.labels["le"])
                    buckets[bound] = buckets.get(bound, 0.0) + sample.value
                elif sample.name == "passerelle_time_to_first_token_seconds_bucket":
                    entry(model)["ttft"][float(sample.labels["le"])] = sample.value
                elif sample.name == "passerelle_tokens_total" and sample.labels.get("kind") == "completion":
                    entry(model)["completion_tokens"] = sample.value
                elif sample.name == "passerelle_model_requests_in_flight":
                    entry(model)["in_flight"] = sample.value
        return models

    def model_requests_in_flight(self, model: str) -> int:
        value = self._collected().get_sample_value("passerelle_model_requests_in_flight", {"model": model})
        return int(value or 0)

    def merges(self, model: str) -> Callable[[int], None]:
        """Counts one merged chunk of `count` backend responses."""
        chunks, responses = self.merged_chunks.labels(model=model), self.merged_responses.labels(model=model)

        def merged(count: int) -> None:
            chunks.inc()
            responses.inc(count)

        return merged

    @contextmanager
    def generation(self, model: str) -> Iterator[Callable[[int | None, int], None]]:
        """Times one generation; the caller reports each response's (prompt tokens, new tokens)."""
        started = time.perf_counter()
        first = True
        in_flight = self.generations_in_flight.labels(model=model)
        completion = self.tokens.labels(model=model, kind="completion")

        def observe(prompt_tokens: int | None, produced: int) -> None:
            nonlocal first
            if first:
                first = False
                self.ttft.labels(model=model).observe(time.perf_counter() - started)
                if prompt_tokens:
                    self.tokens.labels(model=model, kind="prompt").inc(prompt_tokens)
            if produced:
                completion.inc(produced)

        in_flight.inc()
        try:
            yield observe
        finally:
            in_flight.dec()


def route_prefix(path: str) -> str:
    """A path's first two segments ("/v1/chat"): the label of the in-flight gauge."""
    return "/".join(path.split("/")[:3]) or "/"


class MetricsMiddleware:
    """Counts and times every HTTP request by its route template and the model it named.

    The in-flight gauge is labelled before routing (so it counts requests still being read), with
    the path's first two segments when they are those of a route of the app, else "other": a
    client sending random paths cannot create new series."""

    def __init__(self, app: ASGIApp, metrics: Metrics, prefixes: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.metrics = metrics
        self.prefixes = prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/metrics":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        path = scope["path"]
        prefix = route_prefix(path)
        gauge = self.metrics.in_flight.labels(route=prefix if prefix in self.prefixes else "other")
        gauge.inc()

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.worker_requests.inc()
        try:
            await self.app(scope, receive, capture)
        finally:
            gauge.dec()
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            model = scope.get("state", {}).get("model", "")
            self.metrics.requests.labels(route=route, model=model, status=str(status)).inc()
            self.metrics.latency.labels(route=route, model=model).observe(time.perf_counter() - started)


async def watch_event_loop(metrics: Metrics, interval_s: float = 0.1, warn_after_s: float = 1.0) -> None:
    """Measures how late a periodic timer fires: anything blocking the loop delays every request,
    including the detection of clients that went away."""
    loop = asyncio.get_running_loop()
    while True:
        expected = loop.time() + interval_s
        await asyncio.sleep(interval_s)
        lag = max(0.0, loop.time() - expected)
        metrics.loop_lag.observe(lag)
        metrics.loop_tasks.set(len(asyncio.all_tasks(loop)))
        if lag > warn_after_s:
            log.warning("the event loop was blocked for %.1f s", lag)
