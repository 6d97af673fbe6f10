"""Collector: the `system` model's facts from Triton's host (GPUs through NVML, the packages of
Triton's own Python, the host), and Triton's nv_gpu_* metrics."""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
from tritonclient.grpc import InferRequestedOutput

from passerelle.admin.protocol import Dependencies, GpuState
from passerelle.core.errors import TritonFailure
from passerelle.triton.lifecycle import SYSTEM_MODEL
from passerelle.triton.metrics import Samples
from passerelle.triton.upstreams import Tritons

log = logging.getLogger("passerelle.monitor")


async def system_facts(triton: Tritons, index: list[dict[str, str]]) -> dict[str, Any] | None:
    """The facts, when the system model is READY in `index` (Triton's repository index)."""
    if not any(entry.get("name") == SYSTEM_MODEL and entry.get("state") == "READY" for entry in index):
        return None
    try:
        result = await triton.infer(SYSTEM_MODEL, [], [InferRequestedOutput("facts")])
    except TritonFailure as failure:
        log.warning("the system model did not answer: %s", failure.message)
        return None
    raw = result.as_numpy("facts")
    if raw is None:
        return None
    value = np.asarray(raw).reshape(-1)[0]
    facts: dict[str, Any] = json.loads(value.decode() if isinstance(value, bytes) else str(value))
    return facts


def gpu_state(facts: dict[str, Any] | None, metrics: Samples) -> GpuState:
    devices = list((facts or {}).get("gpus") or [])
    dcgm = {name: samples for name, samples in metrics.items() if name.startswith("nv_gpu_")}
    if facts is None:
        note = f"the '{SYSTEM_MODEL}' model is not loaded, so NVML facts from Triton's host are unavailable"
    elif not devices:
        note = facts.get("gpu_error") or "no GPU is visible to Triton"
    else:
        note = None
    return GpuState(available=bool(devices), devices=devices, note=note, dcgm=dcgm or None)


def dependencies(facts: dict[str, Any] | None) -> Dependencies | None:
    if facts is None:
        return None
    return Dependencies(python=facts.get("python"), packages=facts.get("packages"), torch=facts.get("torch"))
