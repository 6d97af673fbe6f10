"""A real Prometheus server (Debian's package) scrapes Triton's /metrics and the adapter's /metrics."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from deployment_promql import TRITON_GPU_METRICS_FROM_DOCS, all_expressions, autoscaling_queries, metric_names
from passerelle_stack.launcher import Stack, free_port
from speech import reference_clip

PROMETHEUS = shutil.which("prometheus")


@pytest.fixture(scope="module")
def prometheus(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if PROMETHEUS is None:
        pytest.fail("prometheus is not installed; scripts/test installs Debian's 'prometheus' package")
    folder = tmp_path_factory.mktemp("prometheus")
    adapter = stack.adapter_url.removeprefix("http://")
    config = folder / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n"
        "scrape_configs:\n"
        f"  - job_name: triton\n    static_configs:\n      - targets: ['127.0.0.1:{stack.config.metrics_port}']\n"
        f"  - job_name: adapter\n    static_configs:\n      - targets: ['{adapter}']\n"
    )
    port = free_port()
    log = (folder / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            raise AssertionError(f"prometheus did not start; see {Path(log.name)}")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def query(url: str, promql: str, timeout: float = 30) -> float:
    """Poll until the PromQL query returns a non-zero value (scrapes happen every second)."""
    deadline = time.monotonic() + timeout
    value = 0.0
    while time.monotonic() < deadline:
        result = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=10).json()["data"]["result"]
        value = sum(float(item["value"][1]) for item in result)
        if value > 0:
            return value
        time.sleep(1)
    return value


def target_health(url: str, timeout: float = 30) -> dict[str, str]:
    """Each scrape job's health, once every job has been scraped (or the timeout passed)."""
    deadline = time.monotonic() + timeout
    health: dict[str, str] = {}
    while time.monotonic() < deadline:
        targets = httpx.get(f"{url}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        health = {target["labels"]["job"]: target["health"] for target in targets}
        if len(health) == 2 and "unknown" not in health.values():
            break
        time.sleep(1)
    return health


def test_prometheus_scrapes_triton_and_the_adapter(prometheus: str, client: openai.OpenAI) -> None:
    for _ in range(2):
        client.chat.completions.create(model="qwen", messages=[{"role": "user", "content": "hi"}], max_tokens=4, stream=False)
    list(client.chat.completions.create(model="qwen", messages=[{"role": "user", "content": "hi"}], max_tokens=4, stream=True))
    assert target_health(prometheus) == {"triton": "up", "adapter": "up"}
    assert query(prometheus, 'nv_inference_request_success{model="qwen"}') > 0
    assert query(prometheus, 'vllm:generation_tokens_total{model="qwen"}') > 0
    assert query(prometheus, 'passerelle_requests_total{route="/v1/chat/completions",model="qwen",status="200"}') >= 3
    assert query(prometheus, 'passerelle_time_to_first_token_seconds_count{model="qwen"}') >= 3
    p50 = query(prometheus, 'histogram_quantile(0.5, sum by (le) (passerelle_time_to_first_token_seconds_bucket{model="qwen"}))')
    assert p50 > 0
    healthy = {
        target["labels"]["job"]: target["health"] for target in httpx.get(f"{prometheus}/api/v1/targets").json()["data"]["activeTargets"]
    }
    assert healthy == {"triton": "up", "adapter": "up"}


def exported_names(url: str, needed: set[str], timeout: float = 60) -> set[str]:
    """The metric names Prometheus holds, once all of `needed` are among them (or the timeout passed)."""
    deadline = time.monotonic() + timeout
    while True:
        names = set(httpx.get(f"{url}/api/v1/label/__name__/values", timeout=10).json()["data"])
        if needed <= names or time.monotonic() > deadline:
            return names
        time.sleep(1)


def samples(url: str, promql: str, timeout: float = 60) -> list[dict[str, object]]:
    """The query's result, once it has at least one sample (or the timeout passed)."""
    deadline = time.monotonic() + timeout
    while True:
        reply = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=10).json()
        assert reply["status"] == "success", f"{promql}: {reply}"
        if reply["data"]["result"] or time.monotonic() > deadline:
            result: list[dict[str, object]] = reply["data"]["result"]
            return result
        time.sleep(1)


@pytest.fixture(scope="module")
def traffic(prometheus: str, client: openai.OpenAI, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Chat and audio through the stack, then the Prometheus that scraped it."""
    list(client.chat.completions.create(model="qwen", messages=[{"role": "user", "content": "hi"}], max_tokens=4, stream=True))
    # An audio request: canary (loaded by the adapter if it is not yet: a load it records).
    with reference_clip(tmp_path_factory.mktemp("clip"), "en", "Good morning, this is a short test.").open("rb") as audio:
        client.audio.transcriptions.create(model="canary", file=audio, language="en")
    return prometheus


def test_every_metric_of_the_dashboard_alerts_and_autoscaling_was_exported(traffic: str) -> None:
    """docker/'s Grafana board, alert rules and KEDA queries read only metrics that this Triton and
    adapter export. The GPU families cannot be exported without a GPU: they are checked against
    Triton's documented list instead."""
    used: dict[str, list[str]] = {}
    for where, expression in all_expressions():
        for name in metric_names(expression):
            used.setdefault(name, []).append(where)
    gpu = {name for name in used if name.startswith(("nv_gpu_", "nv_energy_"))}
    names = exported_names(traffic, set(used) - gpu)
    missing = {name: used[name] for name in sorted(set(used) - gpu - names)}
    assert not missing, f"read by docker/ but never exported here: {missing}"
    assert gpu <= TRITON_GPU_METRICS_FROM_DOCS, sorted(gpu - TRITON_GPU_METRICS_FROM_DOCS)
    print(f"{len(used) - len(gpu)} metric names seen exported; GPU families checked against Triton's documentation only: {sorted(gpu)}")


def test_each_autoscaling_query_returns_a_sample(traffic: str) -> None:
    for where, query in autoscaling_queries():
        result = samples(traffic, query)
        assert result, f"{where}: {query} returned no sample"
        print(f"{where}: {query} -> {[item['value'] for item in result]}")
