"""Business-logic scripting helpers for passerelle's pipeline models (`speaker_transcript`,
`canary_stream`): call another model, read its outputs, pass its errors on.

Only imported inside Triton's Python backend stub (it needs `triton_python_backend_utils`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils


class ModelFailed(Exception):
    """A model the pipeline calls answered with an error; its code and message are passed on."""

    def __init__(self, model: str, error: Any) -> None:
        super().__init__(f"{model}: {error.message()}")
        self.code = error.code()

    def response(self) -> Any:
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(self), self.code))


async def call(model: str, inputs: list[Any], outputs: list[str]) -> Any:
    """One request to `model`; raises `ModelFailed` with its error."""
    response = await pb_utils.InferenceRequest(model_name=model, inputs=inputs, requested_output_names=outputs).async_exec()
    if response.has_error():
        raise ModelFailed(model, response.error())
    return response


def given(request: Any, names: tuple[str, ...]) -> list[Any]:
    """The request's input tensors among `names` that the client sent."""
    tensors = [pb_utils.get_input_tensor_by_name(request, name) for name in names]
    return [tensor for tensor in tensors if tensor is not None]


def output(response: Any, name: str) -> np.ndarray:
    array: np.ndarray = pb_utils.get_output_tensor_by_name(response, name).as_numpy()
    return array


def texts(response: Any, name: str) -> list[str]:
    return [value.decode("utf-8") for value in output(response, name).reshape(-1)]


def pairs(response: Any, name: str, offset: float = 0.0) -> list[tuple[float, float]]:
    """`[n, 2]` times as (start, end) pairs, moved by `offset` seconds."""
    return [(float(start) + offset, float(end) + offset) for start, end in output(response, name).reshape(-1, 2)]
