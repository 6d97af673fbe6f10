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

from passerelle_stack.launcher import Stack, free_port

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
