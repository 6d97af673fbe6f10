"""The adapter's memory: bounded by the limits while the largest requests are prepared, and back near
idle after them.

An adapter of its own (the default limits) is read through /proc: its resident size before, its peak
during (VmHWM, reset through /proc/PID/clear_refs before each request, and sampled), and after. The
two heaviest requests a client can send:
- the largest JSON body (just under MAX_REQUEST_BODY_BYTES of text), refused once parsed because
  its characters cannot fit the context;
- the most and largest images (4 data-URL images of MAX_IMAGE_PIXELS, each fully decoded to check
  it), refused after preparation because the completion asked for does not fit the context.
Neither reaches Triton: all the memory is the adapter's. The bounds are generous (several times
what was measured); the figures are printed for README.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from passerelle.core.config import Settings
from passerelle_stack.launcher import Stack, free_port

MiB = 1 << 20
BODY_LIMIT = Settings.model_fields["max_request_body_bytes"].default
IMAGE_PIXELS = Settings.model_fields["max_image_pixels"].default
TRIM_GROWTH = Settings.model_fields["memory_trim_growth_bytes"].default


class Process:
    def __init__(self, pid: int) -> None:
        self.status = Path(f"/proc/{pid}/status")
        self.clear_refs = Path(f"/proc/{pid}/clear_refs")

    def read(self, field: str) -> int:
        line = next(line for line in self.status.read_text().splitlines() if line.startswith(field + ":"))
        return int(line.split()[1]) * 1024

    def reset_peak(self) -> None:
        self.clear_refs.write_text("5")  # resets VmHWM to the current resident size


@pytest.fixture(scope="module")
def measured_adapter(stack: Stack) -> Iterator[tuple[str, Process]]:
    name = "adapter-memory"
    limits = {
        "MAX_REQUEST_BODY_BYTES": str(BODY_LIMIT),
        "MAX_IMAGE_PIXELS": str(IMAGE_PIXELS),
        "MEMORY_TRIM_GROWTH_BYTES": str(TRIM_GROWTH),
    }
    url = stack.start_adapter(name=name, port=free_port(), env={"OPENAI_API_KEYS": "", **limits})
    yield url, Process(stack.processes[name].pid)
    stack.stop(names=[name])


def _settle(process: Process, idle: int, timeout_s: float = 20) -> int:
    """The resident size once it has come back within the trim threshold of idle (or after the timeout)."""
    deadline = time.monotonic() + timeout_s
    while (current := process.read("VmRSS")) > idle + TRIM_GROWTH and time.monotonic() < deadline:
        time.sleep(0.25)
    return current


def _measure(client: httpx.Client, process: Process, body: bytes) -> tuple[httpx.Response, int, int]:
    """Send `body`; return the response, the peak resident size (VmHWM) and the largest sampled."""
    sampled = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal sampled
        while not done.is_set():
            sampled = max(sampled, process.read("VmRSS"))
            time.sleep(0.01)

    process.reset_peak()
    watcher = threading.Thread(target=sample)
    watcher.start()
    try:
        response = client.post("/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
    finally:
        done.set()
        watcher.join()
    return response, process.read("VmHWM"), sampled


def _png(width: int, height: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_largest_requests_are_bounded_and_memory_comes_back(measured_adapter: tuple[str, Process]) -> None:
    url, process = measured_adapter
    small = {"model": "qwen", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 1}
    with httpx.Client(base_url=url, timeout=300) as client:
        assert client.post("/v1/chat/completions", json=small).status_code == 200  # tokenizer and engine warm
        idle = _settle(process, 0, timeout_s=3)

        text = json.dumps({"model": "qwen", "messages": [{"role": "user", "content": "word " * ((BODY_LIMIT - 4096) // 5)}]}).encode()
        assert len(text) < BODY_LIMIT
        refused, text_peak, text_sampled = _measure(client, process, text)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "context_length_exceeded", refused.text
        text_after = _settle(process, idle)

        side = int(IMAGE_PIXELS**0.5)
        image = "data:image/png;base64," + base64.b64encode(_png(side, side)).decode()
        parts = [{"type": "text", "text": "Compare these"}] + [{"type": "image_url", "image_url": {"url": image}}] * 4
        images = json.dumps({"model": "qwen", "messages": [{"role": "user", "content": parts}], "max_tokens": 100_000}).encode()
        refused, image_peak, image_sampled = _measure(client, process, images)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "context_length_exceeded", refused.text
        image_after = _settle(process, idle)

        assert client.post("/v1/chat/completions", json=small).status_code == 200

    def mib(value: int) -> str:
        return f"{value / MiB:.0f} MiB"

    print(
        f"adapter RSS idle {mib(idle)}; largest text body ({mib(len(text))}): peak {mib(text_peak)} (sampled {mib(text_sampled)}), "
        f"after {mib(text_after)}; 4 images of {side}x{side}: peak {mib(image_peak)} (sampled {mib(image_sampled)}), "
        f"after {mib(image_after)}"
    )
    assert text_peak - idle < 8 * BODY_LIMIT
    assert image_peak - idle < 4 * 4 * IMAGE_PIXELS
    assert text_after <= idle + TRIM_GROWTH
    assert image_after <= idle + TRIM_GROWTH
