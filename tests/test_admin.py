"""The admin API over the real Triton: status, load/unload (with placement overrides), TTL, token, errors."""

from __future__ import annotations

import concurrent.futures
import os
import stat
import time
from typing import Any, cast

import httpx
import numpy as np
import openai
import pytest
import tritonclient.grpc as grpcclient

from conftest import ADMIN_KEY, log_lines, metric_value
from passerelle_stack.launcher import Stack, free_port


def wait_for_state(admin: httpx.Client, model: str, wanted: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status: dict[str, Any] = admin.get("/status").json()
        if status["models"][model]["state"] == wanted:
            return status
        time.sleep(0.5)
    raise AssertionError(f"{model} never reached {wanted}")


def echo(triton: grpcclient.InferenceServerClient, model: str, text: str = "ping") -> str:
    tensor = grpcclient.InferInput("TEXT", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([text.encode()], dtype=np.object_))
    return cast(str, triton.infer(model, [tensor]).as_numpy("TEXT")[0].decode())


def test_admin_needs_the_admin_key(adapter_url: str) -> None:
    with httpx.Client(base_url=adapter_url, timeout=30) as anonymous:
        assert anonymous.get("/api/admin/status").status_code == 401
        wrong = anonymous.get("/api/admin/status", headers={"Authorization": "Bearer test-key-alpha"})  # an OpenAI key is not an admin key
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_admin_key"
        assert anonymous.get("/api/admin/status", headers={"X-Admin-Key": ADMIN_KEY}).status_code == 200
        assert anonymous.post("/api/admin/models/qwen/unload").status_code == 401


def test_status_reports_triton_models_host_and_dependencies(admin: httpx.Client, client: openai.OpenAI, stack: Stack) -> None:
    client.chat.completions.create(model="qwen", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    time.sleep(1.5)  # one monitor interval
    status = admin.get("/status").json()
    assert status["triton"]["live"] and status["triton"]["ready"] and status["triton"]["version"] == "2.51.0"
    qwen = status["models"]["qwen"]
    assert qwen["state"] == "READY" and qwen["backend"] == "vllm"
    assert qwen["statistics"]["success"] >= 1 and qwen["statistics"]["avg_request_ms"] > 0
    assert qwen["placement"][0]["kind"] == "KIND_CPU"
    assert qwen["runtime"]["engine_args"]["served_model_name"] == "passerelle/tiny-qwen3-vl-moe"
    assert qwen["cache"]["cached"] and qwen["cache"]["size_bytes"] > 1_000_000
    assert qwen["vllm"]["generation_tokens_total"] >= 2
    assert status["models"]["tiny_echo"]["state"] in ("UNAVAILABLE", "READY")
    assert status["host"]["adapter"]["memory_total_bytes"] > 0
    gpus = status["gpus"]
    assert gpus["available"] is False and gpus["devices"] == [] and gpus["note"]
    dependencies = status["dependencies"]
    assert dependencies["python"]["prefix"] == str(stack.env_dir)  # Triton's environment, not the adapter's
    assert dependencies["packages"]["numpy"]["version"] == "1.26.4" != np.__version__
    assert dependencies["packages"]["vllm"]["version"] == "0.32.0"


def test_load_unload_and_reload_with_an_instance_override(admin: httpx.Client, triton: grpcclient.InferenceServerClient) -> None:
    loaded = admin.post("/models/tiny_echo/load", json={"instances": 2})
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["instance_group"][0]["count"] == 2 and loaded.json()["instance_group"][0]["kind"] == "KIND_CPU"
    config = triton.get_model_config("tiny_echo", as_json=True)["config"]
    assert config["instance_group"][0]["count"] == 2
    assert echo(triton, "tiny_echo") == "ping"
    assert (
        wait_for_state(admin, "tiny_echo", "READY")["models"]["tiny_echo"]["runtime"]["config_override"]["instance_group"][0]["count"] == 2
    )

    unloaded = admin.post("/models/tiny_echo/unload")
    assert unloaded.status_code == 200
    wait_for_state(admin, "tiny_echo", "UNAVAILABLE")
    assert not triton.is_model_ready("tiny_echo")

    assert admin.post("/models/tiny_echo/load").status_code == 200
    assert triton.get_model_config("tiny_echo", as_json=True)["config"]["instance_group"][0]["count"] == 1


def test_concurrent_loads_are_deduplicated(admin: httpx.Client, adapter_url: str, triton: grpcclient.InferenceServerClient) -> None:
    if triton.is_model_ready("tiny_echo"):
        admin.post("/models/tiny_echo/unload")
        wait_for_state(admin, "tiny_echo", "UNAVAILABLE")

    def loads_so_far() -> float:
        return metric_value(httpx.get(f"{adapter_url}/metrics").text, "passerelle_model_load_duration_seconds_count", model="tiny_echo")

    before = loads_so_far()
    with concurrent.futures.ThreadPoolExecutor(max_workers=5) as pool:
        results = list(pool.map(lambda _: admin.post("/models/tiny_echo/load").status_code, range(5)))
    assert results == [200] * 5
    assert loads_so_far() == before + 1


def test_a_broken_model_reports_its_reason_and_harms_nothing(admin: httpx.Client, client: openai.OpenAI) -> None:
    response = admin.post("/models/broken/load")
    assert response.status_code == 503 and response.json()["error"]["code"] == "model_load_failed"
    assert "broken on purpose" in response.json()["error"]["message"]
    time.sleep(1.5)
    broken = admin.get("/status").json()["models"]["broken"]
    assert broken["state"] == "UNAVAILABLE"
    assert "broken on purpose" in broken["reason"] and "broken on purpose" in broken["last_error"]
    assert client.chat.completions.create(model="qwen", messages=[{"role": "user", "content": "hi"}], max_tokens=1).choices


def test_idle_models_are_unloaded_after_their_ttl(admin: httpx.Client, triton: grpcclient.InferenceServerClient) -> None:
    assert admin.post("/models/ttl_echo/load").status_code == 200
    assert echo(triton, "ttl_echo") == "ping"
    started = time.monotonic()
    wait_for_state(admin, "ttl_echo", "UNAVAILABLE", timeout=30)
    assert time.monotonic() - started >= 1.5  # TTL 2 s after the last inference, judged from Triton's statistics
    assert not triton.is_model_ready("ttl_echo")


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("post", "/models/no_such_model/load", None, 404, "model_not_found"),
        ("post", "/models/no_such_model/unload", None, 404, "model_not_found"),
        ("post", "/models/bad%20key!/load", None, 400, "invalid_model_key"),
        ("post", "/models/.hidden/load", None, 400, "invalid_model_key"),
        ("post", "/models/tiny_echo/load", {"gpus": [0]}, 400, "invalid_gpu"),
        ("post", "/models/tiny_echo/load", {"gpus": [-1]}, 400, "invalid_value"),
        ("post", "/models/tiny_echo/load", {"gpus": [1, 1]}, 400, "invalid_value"),
        ("post", "/models/tiny_echo/load", {"instances": 0}, 400, "invalid_value"),
        ("post", "/models/tiny_echo/load", {"instances": 2, "priority": "high"}, 400, "invalid_value"),
        ("post", "/models/qwen/download", None, 400, "nothing_to_download"),
        ("put", "/huggingface/token", {"token": "has spaces in it"}, 400, "invalid_token"),
        ("put", "/huggingface/token", {}, 400, "invalid_value"),
    ],
)
def test_bad_admin_requests(admin: httpx.Client, method: str, path: str, body: Any, status: int, code: str | None) -> None:
    response = admin.request(method.upper(), path, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"]
    if code is not None:
        assert error["code"] == code


def test_malformed_admin_body(admin: httpx.Client) -> None:
    response = admin.post("/models/tiny_echo/load", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400


def test_huggingface_token_is_stored_0600_and_never_shown(admin: httpx.Client, stack: Stack) -> None:
    secret = "hf_passerelleTestToken0123456789"
    assert admin.put("/huggingface/token", json={"token": secret}).status_code == 200
    path = stack.cache / ".hf_token"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_text() == secret
    shown = admin.get("/huggingface/token")
    assert shown.json()["configured"] is True and secret not in shown.text and shown.json()["masked"].endswith(secret[-4:])
    assert secret not in admin.get("/status").text
    assert admin.delete("/huggingface/token").json()["deleted"] is True
    assert admin.get("/huggingface/token").json() == {"configured": False, "masked": None}
    assert not path.exists()
    logs = "".join(log.read_text(errors="replace") for log in stack.config.run_dir.glob("*.log"))
    assert secret not in logs


def test_admin_metrics_time_series(admin: httpx.Client, client: openai.OpenAI) -> None:
    for _ in range(3):
        client.chat.completions.create(model="qwen", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    time.sleep(2.5)
    series = admin.get("/metrics").json()
    assert series["interval_s"] == 1 and len(series["points"]) >= 2
    assert any((point["models"].get("qwen") or {}).get("requests_per_s", 0) > 0 for point in series["points"])


def test_adapter_prometheus_metrics(adapter_url: str, client: openai.OpenAI) -> None:
    client.chat.completions.create(
        model="qwen", messages=[{"role": "user", "content": "hi"}], max_tokens=3, extra_body={"ignore_eos": True}
    )
    text = httpx.get(f"{adapter_url}/metrics").text
    assert metric_value(text, "passerelle_requests_total", route="/v1/chat/completions", model="qwen", status="200") >= 1
    assert metric_value(text, "passerelle_time_to_first_token_seconds_count", model="qwen") >= 1
    assert metric_value(text, "passerelle_tokens_total", model="qwen", kind="completion") >= 3
    assert metric_value(text, "passerelle_requests_in_flight", route="/v1/chat") == 0


def test_unload_waits_for_in_flight_native_requests(admin: httpx.Client, triton: grpcclient.InferenceServerClient) -> None:
    """Triton lets a request that is running finish before it unloads the model (slow_echo answers after 3 s)."""
    assert admin.post("/models/slow_echo/load").status_code == 200
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        answer = pool.submit(echo, triton, "slow_echo", "still here")
        time.sleep(1.0)
        assert admin.post("/models/slow_echo/unload").status_code == 200
        assert answer.result(timeout=30) == "still here"
    wait_for_state(admin, "slow_echo", "UNAVAILABLE")


def test_unload_is_refused_while_the_adapter_serves_the_model(admin: httpx.Client, http: httpx.Client) -> None:
    body = {"model": "qwen", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4000, "stream": True, "ignore_eos": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        lines = response.iter_lines()  # kept referenced: dropping it would close the stream (and cancel the generation)
        assert next(lines).startswith("data: ")
        refused = admin.post("/models/qwen/unload")
        assert any(line.startswith("data: ") for line in lines)  # still streaming
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "model_busy"
    assert "serving 1 request" in refused.json()["error"]["message"]
    assert admin.get("/status").json()["models"]["qwen"]["state"] == "READY"


# Keys that routing takes as one path segment (percent-encoded where needed), that the key check refuses.
INVALID_KEYS = {
    "%2E%2E": "..",
    "%2E": ".",
    ".hidden": ".hidden",
    "-dash": "-dash",
    "_under": "_under",
    "x%00": "x\x00",
    "a%5Cb": "a\\b",
    "a%20b": "a b",
    "a:b": "a:b",
    "a%0Ab": "a\nb",
    "a" * 65: "a" * 65,
}


@pytest.mark.parametrize("route", ["load", "unload", "download"])
@pytest.mark.parametrize("raw", list(INVALID_KEYS))
def test_model_keys_are_checked_before_anything_else(admin: httpx.Client, route: str, raw: str) -> None:
    """The key check itself answers (not routing's 404): its code, its parameter, the key it refused."""
    response = admin.post(f"/models/{raw}/{route}")
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_model_key", "key"), error
    assert error["message"] == f"'{INVALID_KEYS[raw]}' is not a valid model key"


@pytest.mark.parametrize("route", ["load", "unload", "download"])
def test_a_valid_key_that_names_no_model_is_404(admin: httpx.Client, route: str) -> None:
    """The other side of the key check: the longest valid key, and dots inside a key (no separator, no
    traversal), pass it and are looked up in the repository."""
    for key in ("a" * 64, "a..b"):
        response = admin.post(f"/models/{key}/{route}")
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "model_not_found"


def test_preload_models_loads_at_start(stack: Stack, triton: grpcclient.InferenceServerClient) -> None:
    """PRELOAD_MODELS: the adapter loads the model at start, before any request reaches it."""
    was_ready = triton.is_model_ready("tiny_echo")
    if was_ready:
        triton.unload_model("tiny_echo")
        deadline = time.monotonic() + 60
        while triton.is_model_ready("tiny_echo") and time.monotonic() < deadline:
            time.sleep(0.2)
    assert not triton.is_model_ready("tiny_echo")
    name = "adapter-preload"
    try:
        stack.start_adapter(name=name, port=free_port(), env={"PRELOAD_MODELS": "tiny_echo", "OPENAI_API_KEYS": ""})
        deadline = time.monotonic() + 60
        while not triton.is_model_ready("tiny_echo") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert triton.is_model_ready("tiny_echo"), "the preloaded model never became ready"
        log = stack.config.run_dir / f"{name}.log"
        assert log_lines(log, "loading model tiny_echo through Triton"), "another process loaded it"
        assert log_lines(log, "model tiny_echo ready in")
    finally:
        stack.stop(names=[name])
        if not was_ready:
            triton.unload_model("tiny_echo")


def test_a_load_with_another_override_or_an_unload_during_a_load_is_409(admin: httpx.Client, stack: Stack) -> None:
    """slow_echo takes 3 s to load: a load with another configuration, and an unload, arrive meanwhile."""
    if admin.get("/status").json()["models"]["slow_echo"]["state"] == "READY":
        assert admin.post("/models/slow_echo/unload").status_code == 200
        wait_for_state(admin, "slow_echo", "UNAVAILABLE")
    log = stack.config.run_dir / "adapter.log"
    started = "loading model slow_echo through Triton"
    before = len(log_lines(log, started, timeout=0))
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(admin.post, "/models/slow_echo/load")
        deadline = time.monotonic() + 30
        while len(log_lines(log, started, timeout=0)) == before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(log_lines(log, started, timeout=0)) == before + 1, "the load never started"
        other = admin.post("/models/slow_echo/load", json={"instances": 2})
        unload = admin.post("/models/slow_echo/unload")
        assert not first.done(), "the load ended before the other requests: they prove nothing"
        loaded = first.result(timeout=60)
    assert other.status_code == 409, other.text
    assert other.json()["error"]["code"] == "load_in_progress"
    assert "already loading with another configuration" in other.json()["error"]["message"]
    assert unload.status_code == 409, unload.text
    assert unload.json()["error"]["code"] == "load_in_progress"
    assert "is loading; unload it when the load is done" in unload.json()["error"]["message"]
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["instance_group"][0]["count"] == 1  # the first load's configuration, not the refused one
    assert admin.post("/models/slow_echo/unload").status_code == 200
    wait_for_state(admin, "slow_echo", "UNAVAILABLE")
