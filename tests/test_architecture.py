"""The path of one streamed chat request through the adapter, traced while it runs.

The app runs in this process (its own lifespan, the session's Triton), with the monitor's first
sample taken before the trace starts and no other background work but the event-loop watcher, so
that every adapter module whose code runs while the trace is on belongs to the request.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import pytest

from conftest import API_KEYS
from passerelle.core.config import Settings
from passerelle.main import create_app
from passerelle_stack.launcher import Stack

SOURCE = Path(__file__).resolve().parents[1] / "adapter" / "src" / "passerelle"
# Chat's own modules (structured.py and tools.py check the output constraint and the tools, here none),
# and the door to Triton (the upstream that serves the model, its client).
EXPECTED_OUTSIDE_CORE = {
    "chat/router.py",
    "chat/protocol.py",
    "chat/messages.py",
    "chat/structured.py",
    "chat/tools.py",
    "chat/serving.py",
    "triton/client.py",
    "triton/lifecycle.py",
    "triton/upstreams.py",
    "triton/vllm.py",
}


@pytest.mark.timeout(300)
async def test_a_streamed_chat_request_touches_only_chat_and_triton_outside_core(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in stack.adapter_environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("STATUS_INTERVAL_S", "3600")
    monkeypatch.setenv("MODEL_TTL_S", "")
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    app = create_app(Settings())
    touched: set[str] = set()

    def record(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code.co_filename.startswith(str(SOURCE)):
            touched.add(str(Path(frame.f_code.co_filename).relative_to(SOURCE)))

    async with app.router.lifespan_context(app):
        for _ in range(600):  # the monitor's first sample, taken as the app starts
            if app.state.admin.monitor.status is not None:
                break
            await asyncio.sleep(0.1)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://adapter", timeout=120) as client:
            body = {"model": "qwen", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4, "stream": True}
            sys.setprofile(record)
            threading.setprofile(record)  # threads started meanwhile (FastAPI runs plain functions in a pool)
            try:
                response = await client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {API_KEYS[0]}"})
            finally:
                sys.setprofile(None)
                threading.setprofile(None)
    assert response.status_code == 200 and response.text.rstrip().endswith("data: [DONE]")
    outside_core = {module for module in touched if not module.startswith("core/")}
    print("modules run by one streamed chat request:", ", ".join(sorted(touched)))
    assert outside_core == EXPECTED_OUTSIDE_CORE
