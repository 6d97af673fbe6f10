"""Models loaded on demand, clear 503s when they cannot be, Triton down, and clients that go away."""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import httpx
import pytest
import tritonclient.grpc as grpcclient

from conftest import API_KEYS, SPARE_MODEL, ImageServer, assert_cancels
from passerelle_stack.launcher import Stack, free_port

HELLO = [{"role": "user", "content": "Hello"}]
AUTH = {"Authorization": f"Bearer {API_KEYS[0]}"}
# Without cancellation exactly this many tokens are generated (ignore_eos): about 14 s of work for one
# request here, so fewer proves the engine aborted it. How fast a disconnect is noticed is not asserted.
LONG_ANSWER = 4000


def _state(http: httpx.Client, model: str) -> str:
    return cast(str, next(card["state"] for card in http.get("/v1/models").json()["data"] if card["id"] == model))


@pytest.fixture(scope="module")
def strict_adapter(stack: Stack) -> Iterator[str]:
    """A second adapter: no API keys, no lazy loading, image URLs allowed but no private networks."""
    url = stack.start_adapter(
        name="adapter-strict",
        port=free_port(),
        env={
            "OPENAI_API_KEYS": "",
            "LAZY_LOAD_MODELS": "false",
            "ALLOW_IMAGE_URLS": "true",
            "IMAGE_URL_ALLOWED_HOSTS": "127.0.0.1",
            "IMAGE_URL_ALLOWED_PRIVATE_NETWORKS": "",
        },
    )
    yield url
    stack.stop(names=["adapter-strict"])


def test_known_model_not_loaded_gives_503_with_how_to_load(strict_adapter: str, triton: grpcclient.InferenceServerClient) -> None:
    assert not triton.is_model_ready(SPARE_MODEL)
    with httpx.Client(base_url=strict_adapter, timeout=60) as client:
        response = client.post("/v1/chat/completions", json={"model": SPARE_MODEL, "messages": HELLO, "max_tokens": 2})
        assert response.status_code == 503
        assert int(response.headers["retry-after"]) > 0
        error = response.json()["error"]
        assert error["code"] == "model_unavailable" and f"/v2/repository/models/{SPARE_MODEL}/load" in error["message"]
        assert not triton.is_model_ready(SPARE_MODEL)
        assert client.get("/v1/models").status_code == 200  # no keys configured: the API is open


@pytest.mark.second_vllm_engine
def test_lazy_load_on_first_request(http: httpx.Client, triton: grpcclient.InferenceServerClient) -> None:
    assert not triton.is_model_ready(SPARE_MODEL)
    assert _state(http, SPARE_MODEL) != "READY"
    response = http.post("/v1/chat/completions", json={"model": SPARE_MODEL, "messages": HELLO, "max_tokens": 2}, timeout=600)
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "passerelle/tiny-qwen3-vl-moe-spare"
    assert triton.is_model_ready(SPARE_MODEL) and _state(http, SPARE_MODEL) == "READY"
    # It stays loaded: Triton 2.51 shares the vllm:* metric families between the two engines, so
    # this test runs last (see conftest) and nothing after it reads those metrics.


def test_private_addresses_need_an_allowlisted_network(strict_adapter: str, image_server: ImageServer) -> None:
    body = {
        "model": "qwen",
        "max_tokens": 1,
        "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_server.url + "/image.png"}}]}],
    }
    with httpx.Client(base_url=strict_adapter, timeout=60) as client:
        response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "image_url_forbidden" and "non-public" in response.json()["error"]["message"]


def test_triton_down_gives_503(stack: Stack) -> None:
    dead = f"127.0.0.1:{free_port()}"
    url = stack.start_adapter(name="adapter-orphan", port=free_port(), env={"TRITON_GRPC_URL": dead, "OPENAI_API_KEYS": ""})
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            health = client.get("/health")
            assert health.status_code == 503 and health.json()["triton"]["ready"] is False and "retry-after" in health.headers
            response = client.post("/v1/chat/completions", json={"model": "qwen", "messages": HELLO, "max_tokens": 2})
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "triton_unavailable" and "retry-after" in response.headers
            models = client.get("/v1/models")
            assert models.status_code == 200 and models.json()["data"][0]["state"] == "UNKNOWN"
    finally:
        stack.stop(names=["adapter-orphan"])


def test_client_disconnect_mid_stream_cancels_generation(http: httpx.Client, stack: Stack) -> None:
    body = {"model": "qwen", "messages": HELLO, "max_tokens": LONG_ANSWER, "stream": True, "ignore_eos": True}

    def attempt(request_id: str) -> None:
        with http.stream("POST", "/v1/chat/completions", json=body, headers={"X-Request-ID": request_id}) as response:
            assert response.status_code == 200
            events = 0
            for line in response.iter_lines():
                events += line.startswith("data: ")
                if events >= 4:
                    break

    assert_cancels(stack, attempt)


def test_client_disconnect_cancels_non_streamed_request(adapter_url: str, stack: Stack) -> None:
    """A non-streamed answer has nothing to write until the end: the adapter learns of the
    disconnect from the connection alone."""
    body = {"model": "qwen", "messages": HELLO, "max_tokens": LONG_ANSWER, "ignore_eos": True}

    def attempt(request_id: str) -> None:
        with (
            httpx.Client(base_url=adapter_url, headers={**AUTH, "X-Request-ID": request_id}, timeout=0.5) as impatient,
            pytest.raises(httpx.ReadTimeout),
        ):
            impatient.post("/v1/chat/completions", json=body)

    assert_cancels(stack, attempt)
