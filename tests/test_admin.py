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

from conftest import ADMIN_KEY, metric_value
from passerelle_stack.launcher import Stack


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
        ("post", "/models/..%2F..%2Fetc/load", None, 404, None),
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
