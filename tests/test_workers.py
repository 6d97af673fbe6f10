"""ADAPTER_WORKERS=2: two processes serve the API, and what they must agree on is shared.

An adapter of its own with two uvicorn workers (each request on a new connection, so the kernel
hands them to either worker). `passerelle_worker_requests` has one series per worker process
(label `pid`): it shows which workers answered. Checked: requests reach both workers and every
counter adds both up; the admin status is the same whichever worker answers; the idle TTL still
unloads a model (one worker owns the check); a download asked of both workers at once runs once
(a file lock in the model cache; the tests' local Hub counts the file's downloads).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
import tritonclient.grpc as grpcclient

from conftest import ADMIN_KEY, metric_value
from hub_server import BIG_FILE, PUBLIC_REPO, HubServer
from passerelle_stack.launcher import Stack, free_port

TTL_MODEL = "tiny_echo"
ROUNDS = 60  # requests sent before giving up on seeing both workers (each round is a new connection)


@pytest.fixture(scope="module")
def hub() -> Iterator[HubServer]:
    with HubServer(throttle_bps=2 * 1024 * 1024) as server:
        yield server


@pytest.fixture(scope="module")
def workers_url(stack: Stack, hub: HubServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    name = "adapter-workers"
    url = stack.start_adapter(
        name=name,
        port=free_port(),
        env={
            "ADAPTER_WORKERS": "2",
            "OPENAI_API_KEYS": "",
            "ADMIN_API_KEY": ADMIN_KEY,
            "STATUS_INTERVAL_S": "0.5",
            "MODEL_TTL_S": f"{TTL_MODEL}=1",
            "HF_ENDPOINT": hub.url,
            "HF_HUB_OFFLINE": "0",
            "MODEL_CACHE_DIR": str(tmp_path_factory.mktemp("workers-cache")),
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path_factory.mktemp("workers-metrics")),
        },
    )
    yield url
    stack.stop(names=[name])


def _per_worker(url: str) -> dict[str, float]:
    with httpx.Client(base_url=url, timeout=30) as client:
        text = client.get("/metrics").text
    served = {}
    for line in text.splitlines():
        if line.startswith("passerelle_worker_requests{"):
            pid = line.split('pid="', 1)[1].split('"', 1)[0]
            served[pid] = float(line.rpartition(" ")[2])
    return served


def _until_both_workers(url: str, send: Any) -> list[Any]:
    """Call `send()` (each on a new connection) until both workers have answered one; return the answers."""
    before = _per_worker(url)
    answers = []
    for _ in range(ROUNDS):
        answers.append(send())
        after = _per_worker(url)
        if len(after) == 2 and all(after[pid] > before.get(pid, 0) + 1 for pid in after):  # +1: the /metrics call itself
            return answers
    raise AssertionError(f"the requests did not reach both workers: {before} -> {_per_worker(url)}")


def test_requests_reach_both_workers_and_counters_add_them_up(workers_url: str) -> None:
    with httpx.Client(base_url=workers_url, timeout=60) as client:
        before = metric_value(client.get("/metrics").text, "passerelle_requests_total", route="/v1/chat/completions", status="200")

    def chat() -> int:
        with httpx.Client(base_url=workers_url, timeout=60) as client:
            body = {"model": "qwen", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 2}
            return client.post("/v1/chat/completions", json=body).status_code

    answers = _until_both_workers(workers_url, chat)
    assert set(answers) == {200}
    with httpx.Client(base_url=workers_url, timeout=60) as client:
        after = metric_value(client.get("/metrics").text, "passerelle_requests_total", route="/v1/chat/completions", status="200")
    assert after - before == len(answers)


def _stable_view(status: dict[str, Any]) -> dict[str, Any]:
    """What every worker must report alike (counters and samples move between two answers)."""
    return {
        key: (
            model["state"],
            model["last_error"],
            model["runtime"]["loaded_at"],
            model["runtime"]["config_override"],
            model["download"] and (model["download"]["state"], model["download"]["started_at"]),
        )
        for key, model in status["models"].items()
    }


def _status(url: str) -> dict[str, Any]:
    with httpx.Client(base_url=url, headers={"X-Admin-Key": ADMIN_KEY}, timeout=60) as admin:
        response = admin.get("/api/admin/status")
    assert response.status_code == 200, response.text
    return dict(response.json())


def _agreeing_views(url: str, attempts: int = 10) -> list[dict[str, Any]]:
    """Status views from both workers that agree. Each worker answers from its latest sample (taken
    every STATUS_INTERVAL_S), so right after a change they may differ for one interval: ask again."""
    differences: list[Any] = []
    for _ in range(attempts):
        views = [_stable_view(status) for status in _until_both_workers(url, lambda: _status(url))]
        differences = [(key, [view[key] for view in views]) for key in views[0] if any(view[key] != views[0][key] for view in views)]
        if not differences:
            return views
        time.sleep(1)
    raise AssertionError(f"the workers kept disagreeing: {differences}")


def test_admin_status_agrees_whichever_worker_answers(workers_url: str) -> None:
    views = _agreeing_views(workers_url)
    assert views[0]["qwen"][0] == "READY"


def test_a_download_asked_of_both_workers_runs_once(workers_url: str, hub: HubServer) -> None:
    answers: list[dict[str, Any]] = []

    def ask() -> None:
        with httpx.Client(base_url=workers_url, headers={"X-Admin-Key": ADMIN_KEY}, timeout=60) as admin:
            response = admin.post("/api/admin/models/hub_public/download")
        assert response.status_code == 202, response.text
        answers.append(response.json()["download"])

    senders = [threading.Thread(target=ask) for _ in range(8)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    assert len({answer["started_at"] for answer in answers}) == 1, answers  # one job, joined by every call
    deadline = time.monotonic() + 60
    while (download := _status(workers_url)["models"]["hub_public"]["download"]) is None or download["state"] == "running":
        assert time.monotonic() < deadline, download
        time.sleep(0.3)
    assert download["state"] == "done", download
    assert len(hub.file_gets(PUBLIC_REPO, BIG_FILE)) == 1
    views = _agreeing_views(workers_url)
    assert views[0]["hub_public"][4] == ("done", answers[0]["started_at"]), views[0]


def test_the_idle_ttl_still_unloads(workers_url: str, triton: grpcclient.InferenceServerClient) -> None:
    with httpx.Client(base_url=workers_url, headers={"X-Admin-Key": ADMIN_KEY}, timeout=120) as admin:
        assert admin.post(f"/api/admin/models/{TTL_MODEL}/load").status_code == 200
    assert triton.is_model_ready(TTL_MODEL)
    deadline = time.monotonic() + 30
    while True:
        try:
            if not triton.is_model_ready(TTL_MODEL):
                break
        except grpc.RpcError:
            break
        assert time.monotonic() < deadline, f"{TTL_MODEL} was not unloaded after its TTL of 1 s"
        time.sleep(0.3)
    while _status(workers_url)["models"][TTL_MODEL]["state"] != "UNAVAILABLE":  # the answering worker's next sample
        assert time.monotonic() < deadline + 10
        time.sleep(0.3)
