"""`scripts/gpu_check --dry-run`: the GPU check's whole path on CPU (tiny shapes, KIND_CPU, a minute of audio).

The dry run starts its own Triton (not the session's stack), builds the tiny random-weight models with the
builders' `--shape tiny` options (cached under PASSERELLE_HOME/gpu-check), loads `canary` and `pyannote`,
times them on espeak-ng speech and writes its report. This checks what the report says: both models loaded
and ran, the figures are positive and finite, Canary decoded exactly N tokens per second of each window, the
table comes last, and every GPU figure reads "n/a (no GPU)". About 2 minutes cold, 1 minute with the models
cached, on 2 cores.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
NO_GPU = "n/a (no GPU)"


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], list[str]]:
    out = tmp_path_factory.mktemp("gpu-check")
    try:
        # The script bounds itself (200 s); this catches a hang outside its own deadline.
        run = subprocess.run(
            [str(REPO / "scripts" / "gpu_check"), "--dry-run", "--out", str(out)], capture_output=True, text=True, timeout=300
        )
    except subprocess.TimeoutExpired as expired:
        pytest.fail(f"scripts/gpu_check --dry-run hung: {str(expired.stdout)[-3000:]}")
    assert run.returncode == 0, f"exit {run.returncode}\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
    report: dict[str, Any] = json.loads((out / "gpu-check.json").read_text())
    return report, run.stdout.rstrip("\n").splitlines()


def positive(value: Any) -> bool:
    return isinstance(value, float | int) and math.isfinite(value) and value > 0


def test_both_models_load_and_run(dry_run: tuple[dict[str, Any], list[str]]) -> None:
    report, _ = dry_run
    assert report["dry_run"] is True
    assert report["mode"]["kind"] == "KIND_CPU" and report["mode"]["shape"] == "tiny"
    for name in ("canary", "pyannote"):
        part = report["parts"][name]
        assert part["skipped"] is None, part["skipped"]
        assert part["loaded"] and positive(part["load_seconds"])
        assert part["walls"] and all(positive(wall) for wall in part["walls"])
    assert positive(report["parts"]["canary"]["rtfx"])
    assert positive(report["parts"]["pyannote"]["rtf"])
    assert report["published"] == {"canary_rtfx": 749.0, "diarization_rtf": 0.0086}


def test_decode_length_is_forced(dry_run: tuple[dict[str, Any], list[str]]) -> None:
    report, stdout = dry_run
    decode = report["decode"]
    assert decode["tokens_per_second"] == 4.0
    assert f"N = {decode['tokens_per_second']:g} tokens per second of audio" in "\n".join(stdout)
    assert len(decode["timed_requests"]) == len(report["parts"]["canary"]["walls"])
    for request in decode["timed_requests"]:
        # Each window decodes round(N x its seconds) tokens; windows without speech are skipped, so at most N x audio.
        assert 0 < request["generated"] == request["expected"] <= 4.0 * request["audio_seconds"] + 3
    assert 3.0 < decode["generated_tokens_per_audio_second"] <= 4.1


def test_table_comes_last_and_gpu_columns_are_unavailable(dry_run: tuple[dict[str, Any], list[str]]) -> None:
    report, stdout = dry_run
    header = next(i for i, line in enumerate(stdout) if line.startswith("| metric "))
    table = stdout[header:]
    assert all(line.startswith("|") for line in table), "the table must be the last thing printed"
    rows = {cells[0]: cells[1:] for cells in ([c.strip() for c in line.strip("|").split("|")] for line in table[2:])}
    assert float(rows["Canary RTFx (audio s / wall s)"][0]) > 0 and rows["Canary RTFx (audio s / wall s)"][1] == "749"
    assert rows["diarization RTF (wall / audio)"][1] == "0.86 %"
    assert rows["decode length N (tokens per s of audio)"][0] == "4"
    gpu_rows = [name for name in rows if "GPU memory" in name or name.startswith(("nv_gpu_", "nv_energy_")) or name == "GPU"]
    assert len(gpu_rows) == 9
    assert all(rows[name][0] == NO_GPU for name in gpu_rows)
    assert report["dcgm"] == {}  # KIND_CPU and --allow-gpu-metrics=false, even on a machine with a GPU
    assert all(report["parts"][name]["gpu_memory_after_runs_mib"] is None for name in ("canary", "pyannote"))
