"""Triton's Prometheus page (port 8002): the few families the adapter reads from it."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

VLLM_GAUGES = ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc")
DCGM = ("nv_gpu_utilization", "nv_gpu_memory_used_bytes", "nv_gpu_memory_total_bytes", "nv_gpu_power_usage")
WANTED = (*VLLM_GAUGES, "vllm:generation_tokens", "vllm:prompt_tokens", *DCGM, "nv_inference_pending_request_count")

Samples = dict[str, list[tuple[dict[str, str], float]]]


def parse_metrics(text: str) -> Samples:
    """The wanted samples of Triton's /metrics, by sample name (counters end in _total)."""
    # prometheus_client's parser walks the text character by character in Python; vLLM's histograms
    # make Triton's page hundreds of kB, which took seconds of the event loop. Only the lines of the
    # wanted families reach it.
    lines = [line for line in text.splitlines() if (line[7:] if line.startswith(("# HELP ", "# TYPE ")) else line).startswith(WANTED)]
    found: Samples = {}
    for family in text_string_to_metric_families("\n".join(lines) + "\n"):
        if family.name not in WANTED:
            continue
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found
