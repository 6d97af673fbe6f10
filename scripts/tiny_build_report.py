"""What every tiny-model builder records next to its model: the figures of its fit and check, and the float
code path it ran on (torch's CPU capability, thread count, the settings that pick oneDNN's and MKL's kernels).

A builder whose check fails ends with one plain line naming the model and the check (exit code 3); the
figures then stay in the report, marked failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPORT_NAME = "build-report.json"
FLOAT_PATH_SETTINGS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "OMP_NUM_THREADS")


class CheckFailed(RuntimeError):
    """A built model does not pass its builder's check."""


def float_path() -> dict[str, Any]:
    import torch

    return {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "mkl": torch.backends.mkl.is_available(),
        "onednn": torch.backends.mkldnn.is_available(),
        "settings": {name: os.environ[name] for name in FLOAT_PATH_SETTINGS if name in os.environ},
    }


@contextlib.contextmanager
def build_report(out_dir: Path, model: str) -> Iterator[dict[str, Any]]:
    """Collects a builder's figures into out_dir/build-report.json, and turns a failed check into one line."""
    started = time.monotonic()
    report: dict[str, Any] = {"model": model, "passed": False, **float_path()}
    try:
        yield report
        report["passed"] = True
    except CheckFailed as failure:
        report["failure"] = str(failure)
        print(f"CHECK FAILED: {failure}", file=sys.stderr, flush=True)
        raise SystemExit(3) from None
    finally:
        report["seconds"] = round(time.monotonic() - started, 1)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"{model}: {json.dumps(report)}", flush=True)
