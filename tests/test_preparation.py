"""A heavy request is prepared off the event loop: requests sent while it is prepared are served first.

The heavy request is the largest a long-context model accepts: a copy of the tiny Qwen that only the
adapter's catalog knows (Triton never loads it), whose context of 50 million tokens lets through a
prompt of 2 million characters. The adapter refuses it with 400 `context_length_exceeded` once it has
counted the prompt's tokens (it asks for more completion tokens than the context has left), so it
never reaches Triton: its whole time is preparation, CPU-bound and local (the chat template, the
tokenizer). Small chat requests sent while it is prepared must all be answered before it is.
No timing threshold: only the order of the answers.
"""

from __future__ import annotations

import json
import random
import shutil
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from conftest import metric_value
from passerelle_stack.launcher import Stack, free_port

LONG_CONTEXT = "qwen_long_context"
CONTEXT = 50_000_000
WORDS = ("hello", "world", "the", "image", "shows", "a", "cat", "dog", "red", "car", "blue", "sky", "once", "upon", "time")


@pytest.fixture(scope="module")
def long_context_adapter(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    repository = tmp_path_factory.mktemp("long-context")
    shutil.copytree(stack.repository / "qwen", repository / LONG_CONTEXT)
    engine = repository / LONG_CONTEXT / "1" / "model.json"
    args = json.loads(engine.read_text())
    args.update(max_model_len=CONTEXT, served_model_name="passerelle/tiny-qwen3-vl-moe-long-context")
    engine.write_text(json.dumps(args))
    repositories = stack.adapter_environment()["MODEL_REPOSITORY"]
    env = {
        "MODEL_REPOSITORY": f"{repositories},{repository}",
        "OPENAI_API_KEYS": "",
        "MAX_REQUEST_BODY_BYTES": str(32 * 1024 * 1024),
        "PREPARE_WORKERS": "2",
    }
    url = stack.start_adapter(name="adapter-long-context", port=free_port(), env=env)
    yield url
    stack.stop(names=["adapter-long-context"])


def _in_flight(client: httpx.Client) -> float:
    return metric_value(client.get("/metrics").text, "passerelle_requests_in_flight", route="/v1/chat")


def test_small_requests_sent_during_a_heavy_preparation_are_answered_before_it(long_context_adapter: str) -> None:
    random.seed(7)
    text = " ".join(random.choice(WORDS) for _ in range(450_000))  # about 2 million characters
    heavy = {"model": LONG_CONTEXT, "messages": [{"role": "user", "content": text}], "max_tokens": CONTEXT}
    small = {"model": "qwen", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 1}
    answered: list[tuple[str, float, httpx.Response]] = []

    def send_heavy() -> None:
        with httpx.Client(base_url=long_context_adapter, timeout=600) as client:
            response = client.post("/v1/chat/completions", json=heavy)
        answered.append(("heavy", time.monotonic(), response))

    with httpx.Client(base_url=long_context_adapter, timeout=600) as client:
        client.post("/v1/chat/completions", json=small).raise_for_status()  # qwen's renderer and engine are warm
        sender = threading.Thread(target=send_heavy)
        sender.start()
        while _in_flight(client) < 1 and sender.is_alive():  # the heavy request has reached the adapter
            time.sleep(0.01)
        for index in range(3):
            response = client.post("/v1/chat/completions", json=small)
            answered.append((f"small-{index}", time.monotonic(), response))
        sender.join(timeout=600)
        lag = client.get("/metrics").text

    order = [name for name, _, _ in sorted(answered, key=lambda entry: entry[1])]
    responses = {name: response for name, _, response in answered}
    assert responses["heavy"].status_code == 400, responses["heavy"].text
    assert responses["heavy"].json()["error"]["code"] == "context_length_exceeded"
    assert all(responses[f"small-{index}"].status_code == 200 for index in range(3))
    print("answer order:", order)
    lag_count = metric_value(lag, "passerelle_event_loop_lag_seconds_count")
    late = lag_count - metric_value(lag, "passerelle_event_loop_lag_seconds_bucket", le="0.1")
    lag_total = metric_value(lag, "passerelle_event_loop_lag_seconds_sum")
    print(f"event-loop lag: {lag_count:.0f} ticks, {late:.0f} over 0.1 s, {lag_total:.2f} s in all")
    assert order == ["small-0", "small-1", "small-2", "heavy"]
