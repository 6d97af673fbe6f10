"""README's first command: `python -m passerelle_stack serve` (what scripts/serve runs) starts
Triton and the adapter, prints the URLs, serves the dashboard and audio, and Ctrl-C stops
everything it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from passerelle_stack.launcher import free_port


def test_serve_prints_urls_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("http", "grpc", "metrics", "adapter")}
    env = {
        **os.environ,
        "PROFILE": "cpu",
        "PASSERELLE_RUN_DIR": str(tmp_path / "run"),
        "TRITON_HTTP_URL": f"http://127.0.0.1:{ports['http']}",
        "TRITON_GRPC_URL": f"127.0.0.1:{ports['grpc']}",
        "TRITON_METRICS_URL": f"http://127.0.0.1:{ports['metrics']}/metrics",
        "ADAPTER_PORT": str(ports["adapter"]),
        "PRELOAD_MODELS": "",  # keep it quick: no vLLM engine
    }
    output = (tmp_path / "serve.out").open("w+")
    serve = subprocess.Popen([sys.executable, "-m", "passerelle_stack", "serve"], env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while "passerelle is up" not in (tmp_path / "serve.out").read_text() and time.monotonic() < deadline:
            assert serve.poll() is None, (tmp_path / "serve.out").read_text()
            time.sleep(0.5)
        printed = (tmp_path / "serve.out").read_text()
        assert f"http://127.0.0.1:{ports['adapter']}/v1" in printed and f"127.0.0.1:{ports['grpc']}" in printed
        assert httpx.get(f"http://127.0.0.1:{ports['adapter']}/health", timeout=10).json()["triton"]["ready"] is True
        # The dashboard, built by set-up, at the printed URL.
        assert f"Dashboard      http://127.0.0.1:{ports['adapter']}/" in printed
        page = httpx.get(f"http://127.0.0.1:{ports['adapter']}/", timeout=10)
        assert page.status_code == 200 and '<div id="root">' in page.text, page.text[:300]
        children = psutil.Process(serve.pid).children(recursive=True)
        assert any("tritonserver" in child.name() for child in children)
        # The audio routes too: canary loads on this first request (LAZY_LOAD_MODELS).
        speech = tmp_path / "hello.wav"
        subprocess.run(["espeak-ng", "-w", str(speech), "hello from the serve command"], check=True)
        files = {"file": ("hello.wav", speech.read_bytes(), "audio/wav")}
        response = httpx.post(
            f"http://127.0.0.1:{ports['adapter']}/v1/audio/transcriptions", data={"model": "canary"}, files=files, timeout=300
        )
        assert response.status_code == 200 and response.json()["text"], response.text
    finally:
        serve.send_signal(signal.SIGINT)
        code = serve.wait(timeout=90)
        output.close()
    assert code == 0
    assert "stopping" in (tmp_path / "serve.out").read_text()
    time.sleep(1)
    assert not [child for child in children if child.is_running() and child.status() != psutil.STATUS_ZOMBIE]
