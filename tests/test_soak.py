"""The soak's short version: scripts/soak for 3 minutes at 32 concurrent mixed requests (streamed
chat, chat with an image, transcription) against the session's adapter. No request may be lost,
and the adapter's resident memory and open files may not grow by more than 10 % after a 30 s
warm-up. The 30-minute run and its figures are in README (`scripts/soak`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import API_KEYS
from passerelle_stack.launcher import Stack

SOAK = Path(__file__).resolve().parents[1] / "scripts" / "soak.py"
MINUTES = 3


@pytest.mark.timeout(MINUTES * 60 + 300)
def test_three_minutes_of_mixed_load_lose_nothing_and_grow_nothing(stack: Stack, tmp_path: Path) -> None:
    report = tmp_path / "soak.json"
    command = [
        sys.executable,
        str(SOAK),
        f"--minutes={MINUTES}",
        "--concurrency=32",
        f"--adapter-url={stack.adapter_url}",
        f"--adapter-pid={stack.processes['adapter'].pid}",
        f"--api-key={API_KEYS[0]}",
        f"--report={report}",
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=MINUTES * 60 + 240)
    print(run.stdout[-3000:])
    summary = json.loads(report.read_text())
    assert summary["lost"] == 0, summary["lost_examples"]
    assert set(summary["served"]) == {"chat_stream", "chat_image", "transcription"} and min(summary["served"].values()) > 0
    assert len(summary["rss_mib_after_warm_up"]) >= (MINUTES * 60 - 30) // 5 - 1  # sampled every 5 s
    assert summary["rss_growth"] <= 0.10 and summary["fd_growth"] <= 0.10, summary
    assert run.returncode == 0, run.stderr[-2000:]
