"""vLLM engine statistics exported as Triton custom metrics (part of passerelle's vLLM stand-in).

Names follow NVIDIA's vLLM backend (``vllm:prompt_tokens_total``, ``vllm:generation_tokens_total``,
``vllm:time_to_first_token_seconds``, ...), plus the scheduler gauges that operators ask for
(running and waiting requests, KV-cache usage) and finished requests by reason (``abort``
shows cancellations). Each update is an IPC call to the Triton server, so updates are handed
to a thread and never slow down the engine's output loop.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

import triton_python_backend_utils as pb_utils
from vllm.v1.metrics.loggers import StatLoggerBase

_LATENCY_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0]
_TOKEN_LATENCY_BUCKETS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5]
_REQUEST_LATENCY_BUCKETS = [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0]

# One queued update: (a pb_utils Metric, the method to call on it, its argument); None stops the thread.
_Update = tuple[Any, str, float]


def _one_two_five(limit: int) -> list[float]:
    buckets: list[float] = []
    scale = 1
    while True:
        for step in (1, 2, 5):
            value = step * scale
            if value > limit:
                return buckets
            buckets.append(float(value))
        scale *= 10


class _Metrics:
    def __init__(self, labels: dict[str, str], max_model_len: int) -> None:
        counter, gauge, histogram = pb_utils.MetricFamily.COUNTER, pb_utils.MetricFamily.GAUGE, pb_utils.MetricFamily.HISTOGRAM
        self.labels = labels
        # A MetricFamily must outlive its Metrics, so every family is kept here.
        self.families: list[Any] = []

        def _family(name: str, description: str, kind: Any) -> Any:
            family = pb_utils.MetricFamily(name=name, description=description, kind=kind)
            self.families.append(family)
            return family

        self.prompt_tokens = _family("vllm:prompt_tokens_total", "Number of prefill tokens processed.", counter).Metric(labels=labels)
        self.generation_tokens = _family("vllm:generation_tokens_total", "Number of generation tokens processed.", counter).Metric(
            labels=labels
        )
        self.success_family = _family("vllm:request_success_total", "Finished requests by finish reason.", counter)
        self.success: dict[str, Any] = {}
        self.running = _family("vllm:num_requests_running", "Requests running in the engine.", gauge).Metric(labels=labels)
        self.waiting = _family("vllm:num_requests_waiting", "Requests waiting in the engine.", gauge).Metric(labels=labels)
        self.kv_usage = _family("vllm:kv_cache_usage_perc", "KV-cache usage (1 = full).", gauge).Metric(labels=labels)
        token_buckets = _one_two_five(max_model_len)
        self.ttft = _family("vllm:time_to_first_token_seconds", "Time to first token in seconds.", histogram).Metric(
            labels=labels, buckets=_LATENCY_BUCKETS
        )
        self.itl = _family("vllm:time_per_output_token_seconds", "Time per output token in seconds.", histogram).Metric(
            labels=labels, buckets=_TOKEN_LATENCY_BUCKETS
        )
        self.e2e = _family("vllm:e2e_request_latency_seconds", "End-to-end request latency in seconds.", histogram).Metric(
            labels=labels, buckets=_REQUEST_LATENCY_BUCKETS
        )
        self.request_prompt = _family("vllm:request_prompt_tokens", "Prompt tokens per request.", histogram).Metric(
            labels=labels, buckets=token_buckets
        )
        self.request_generation = _family("vllm:request_generation_tokens", "Generated tokens per request.", histogram).Metric(
            labels=labels, buckets=token_buckets
        )
        self.request_n = _family("vllm:request_params_n", "The n parameter of requests.", histogram).Metric(
            labels=labels, buckets=[1, 2, 5, 10, 20]
        )

    def close(self) -> None:
        """Drop every Metric, then the families, while the stub can still talk to the server.

        Left to interpreter shutdown, Triton 2.51's stub deletes them after its shared memory is gone
        and crashes. Note that a family is shared by name across models in one server: deleting it
        also drops the series of another vLLM model still loaded (a Triton limitation).
        """
        self.success.clear()
        for name in [name for name, value in vars(self).items() if hasattr(value, "increment") or hasattr(value, "observe")]:
            delattr(self, name)
        vars(self).clear()  # the families last

    def success_for(self, reason: str) -> Any:
        if reason not in self.success:
            self.success[reason] = self.success_family.Metric(labels={**self.labels, "finished_reason": reason})
        return self.success[reason]


class StandinStatLogger(StatLoggerBase):  # type: ignore[misc]  # vLLM is not installed where mypy runs: an Any base
    def __init__(self, vllm_config: Any, engine_index: int = 0, *, labels: dict[str, str]) -> None:
        self.metrics = _Metrics(labels, vllm_config.model_config.max_model_len)
        self.updates: queue.Queue[_Update | None] = queue.Queue()
        self.thread = threading.Thread(target=self._apply, name="vllm-standin-metrics", daemon=True)
        self.thread.start()

    def record(self, scheduler_stats: Any, iteration_stats: Any, mm_cache_stats: Any = None, engine_idx: int = 0) -> None:
        m, put = self.metrics, self.updates.put_nowait
        if scheduler_stats is not None:
            put((m.running, "set", scheduler_stats.num_running_reqs))
            put((m.waiting, "set", scheduler_stats.num_waiting_reqs))
            put((m.kv_usage, "set", scheduler_stats.kv_cache_usage))
        if iteration_stats is None:
            return
        if iteration_stats.num_prompt_tokens:
            put((m.prompt_tokens, "increment", iteration_stats.num_prompt_tokens))
        if iteration_stats.num_generation_tokens:
            put((m.generation_tokens, "increment", iteration_stats.num_generation_tokens))
        for value in iteration_stats.time_to_first_tokens_iter:
            put((m.ttft, "observe", value))
        for value in iteration_stats.inter_token_latencies_iter:
            put((m.itl, "observe", value))
        for value in iteration_stats.n_params_iter:
            put((m.request_n, "observe", value))
        for finished in iteration_stats.finished_requests:
            put((m.e2e, "observe", finished.e2e_latency))
            put((m.request_prompt, "observe", finished.num_prompt_tokens))
            put((m.request_generation, "observe", finished.num_generation_tokens))
            put((m.success_for(str(finished.finish_reason)), "increment", 1))

    def log_engine_initialized(self) -> None:
        pass

    def _apply(self) -> None:
        while (item := self.updates.get()) is not None:
            metric, action, value = item
            getattr(metric, action)(value)

    def finalize(self) -> None:
        self.updates.put(None)
        self.thread.join(timeout=10)
        self.metrics.close()


class stat_logger_factory:  # noqa: N801 - vLLM calls it like a class: factory(vllm_config, engine_index)
    def __init__(self, labels: dict[str, str]) -> None:
        self.labels = labels
        self.loggers: list[StandinStatLogger] = []

    def __call__(self, vllm_config: Any, engine_index: int = 0) -> StandinStatLogger:
        logger = StandinStatLogger(vllm_config, engine_index, labels=self.labels)
        self.loggers.append(logger)
        return logger

    def finalize(self) -> None:
        for logger in self.loggers:
            logger.finalize()
