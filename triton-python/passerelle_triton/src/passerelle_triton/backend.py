"""Small helpers for passerelle's Python-backend models: parameters, placement, optional inputs.

Only imported inside Triton's Python backend stub (it needs `triton_python_backend_utils`).
Every engine sets `HF_HUB_OFFLINE` and turns pyannote's telemetry off before its imports.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")


class ModelArgs:
    """What Triton passes to `initialize`: the config's string parameters and the instance's placement."""

    def __init__(self, args: dict[str, Any]) -> None:
        self.config = json.loads(args["model_config"])
        self.name: str = self.config["name"]
        self.kind: str = args["model_instance_kind"]
        self.device_id = int(args["model_instance_device_id"])
        self.parameters = {key: value.get("string_value", "") for key, value in self.config.get("parameters", {}).items()}

    def text(self, key: str, default: str | None = None) -> str:
        value = self.parameters.get(key) or default
        if value is None:
            raise pb_utils.TritonModelException(f"{self.name}: parameter '{key}' is required in config.pbtxt")
        return value

    def number(self, key: str, default: float) -> float:
        value = self.parameters.get(key)
        return float(value) if value else default

    @property
    def device(self) -> str:
        """`cuda:<id>` for a KIND_GPU instance, else `cpu`."""
        return f"cuda:{self.device_id}" if self.kind == "GPU" else "cpu"

    def limit_cpu_threads(self) -> None:
        """The `cpu_threads` parameter, if set: on a small CPU host, several engines share the cores."""
        threads = int(self.number("cpu_threads", 0))
        if threads > 0:
            import torch

            torch.set_num_threads(threads)


def optional(request: Any, name: str, default: Any = None) -> Any:
    """The first element of an optional scalar input (decoded for strings), or `default`."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return default
    array = tensor.as_numpy().reshape(-1)
    if array.size == 0:
        return default
    value = array[0]
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return value.item() if isinstance(value, np.generic) else value


def audio_input(request: Any, name: str = "audio") -> np.ndarray:
    pcm: np.ndarray = pb_utils.get_input_tensor_by_name(request, name).as_numpy().reshape(-1)
    if pcm.dtype != np.float32:
        raise ValueError(f"'{name}' must be float32 PCM")
    return pcm


def strings(name: str, values: list[str]) -> Any:
    return pb_utils.Tensor(name, np.array([value.encode("utf-8") for value in values], dtype=np.object_))


def spans(name: str, pairs: list[tuple[float, float]]) -> Any:
    return pb_utils.Tensor(name, np.array(pairs, dtype=np.float32).reshape(-1, 2))


def scalar(name: str, value: float) -> Any:
    return pb_utils.Tensor(name, np.array([value], dtype=np.float32))


def failure(exc: Exception) -> Any:
    """Bad input (ValueError) is the client's: INVALID_ARG. Anything else is the model's: INTERNAL."""
    if isinstance(exc, ValueError):
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG))
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{type(exc).__name__}: {exc}"))
