"""A slow reader gets merged chunks, with the same answer as a reader that keeps up.

The slow reader is a raw socket with a small receive buffer that reads nothing until the whole
generation has run. The adapter's writes block once the kernel's and uvicorn's buffers are full
(a few MB on loopback, hence 8 choices with 20 alternatives per token: about 5 MB of chunks), and
the responses that arrive from Triton meanwhile go out merged. A counter says how many chunks
were merged; the answer (text, tokens, usage) must match the same seeded request read at once.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import h11
import httpx

from conftest import API_KEYS, metric_value

CHOICES, TOKENS = 8, 400
REQUEST = {
    "model": "qwen",
    "messages": [{"role": "user", "content": "Tell me a long story"}],
    "stream": True,
    "max_tokens": TOKENS,
    "ignore_eos": True,
    "temperature": 1.0,
    "seed": 7,
    "n": CHOICES,
    "logprobs": True,
    "top_logprobs": 20,
    "stream_options": {"include_usage": True},
}


def _events(body: bytes) -> list[dict[str, Any]]:
    events = []
    for block in body.decode().split("\n\n"):
        if block.startswith("data: ") and block != "data: [DONE]":
            events.append(json.loads(block[len("data: ") :]))
    return events


def _answer(events: list[dict[str, Any]]) -> tuple[list[str], list[list[str]], dict[str, int]]:
    texts, tokens = [""] * CHOICES, [list[str]() for _ in range(CHOICES)]
    usage: dict[str, int] = {}
    for event in events:
        assert "error" not in event, event
        for choice in event["choices"]:
            texts[choice["index"]] += choice["delta"].get("content") or ""
            tokens[choice["index"]] += [entry["token"] for entry in (choice["logprobs"] or {}).get("content") or []]
        usage = event.get("usage") or usage
    return texts, tokens, usage


def _completion_tokens(http: httpx.Client) -> float:
    return metric_value(http.get("/metrics").text, "passerelle_tokens_total", model="qwen", kind="completion")


def _read_slowly(adapter_url: str, http: httpx.Client) -> bytes:
    """Send the request, read nothing until Triton has generated every token, then read it all."""
    host, port = adapter_url.removeprefix("http://").split(":")
    body = json.dumps(REQUEST).encode()
    client = h11.Connection(h11.CLIENT)
    before = _completion_tokens(http)
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(120)
        sock.connect((host, int(port)))
        headers = [("Host", host), ("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        headers.append(("Authorization", f"Bearer {API_KEYS[0]}"))
        sock.sendall(client.send(h11.Request(method="POST", target="/v1/chat/completions", headers=headers)))
        sock.sendall(client.send(h11.Data(data=body)) + client.send(h11.EndOfMessage()))
        deadline = time.monotonic() + 120
        while _completion_tokens(http) - before < CHOICES * TOKENS:
            assert time.monotonic() < deadline, "the generation did not finish while the client was not reading"
            time.sleep(0.2)
        received, status = bytearray(), 0
        while True:
            event = client.next_event()
            if event is h11.NEED_DATA:
                client.receive_data(sock.recv(1 << 20))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                received += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
    assert status == 200, bytes(received[:500])
    return bytes(received)


def test_a_slow_reader_gets_merged_chunks_and_the_same_answer(adapter_url: str, http: httpx.Client) -> None:
    def merged() -> float:
        return metric_value(http.get("/metrics").text, "passerelle_stream_merged_chunks_total", model="qwen")

    merged_before = merged()
    slow = _events(_read_slowly(adapter_url, http))
    merged_chunks = merged() - merged_before
    with http.stream("POST", "/v1/chat/completions", json=REQUEST, timeout=120) as response:
        assert response.status_code == 200
        fast = _events(response.read())

    slow_texts, slow_tokens, slow_usage = _answer(slow)
    fast_texts, fast_tokens, fast_usage = _answer(fast)
    print(f"slow reader: {len(slow)} chunks, {merged_chunks:.0f} merged; fast reader: {len(fast)} chunks")
    assert merged_chunks >= 1
    assert len(slow) < len(fast)
    assert all(len(tokens) == TOKENS for tokens in fast_tokens)
    assert slow_tokens == fast_tokens
    assert slow_texts == fast_texts
    assert slow_usage == fast_usage
    assert fast_usage["completion_tokens"] == CHOICES * TOKENS
