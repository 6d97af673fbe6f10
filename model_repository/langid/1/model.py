"""`langid`: spoken-language identification with NeMo AmberNet (see passerelle_triton.langid).

The tensors are documented in config.pbtxt and docs/triton.md ("Audio tensors").
"""

from __future__ import annotations

from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils
from passerelle_triton.artifacts import resolve_model_file
from passerelle_triton.backend import ModelArgs, audio_input, failure, optional, scalar, spans, strings


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        model = ModelArgs(args)
        model.limit_cpu_threads()
        from passerelle_triton.langid import LanguageIdentifier

        nemo = resolve_model_file(model.text("model"), model.text("nemo_file"))
        self.engine = LanguageIdentifier(
            str(nemo),
            device=model.device,
            max_windows=int(model.number("max_windows", 3)),
            window_s=model.number("window_seconds", 10.0),
            min_window_s=model.number("min_window_seconds", 1.0),
        )
        pb_utils.Logger.log_info(f"[langid] {nemo} loaded on {model.device}: {len(self.engine.labels)} languages")

    def execute(self, requests: list[Any]) -> list[Any]:
        return [self._identify(request) for request in requests]

    def _identify(self, request: Any) -> Any:
        try:
            windows = optional(request, "max_windows")
            result = self.engine.identify(audio_input(request), max_windows=None if windows is None else int(windows))
        except Exception as exc:  # noqa: BLE001 - every failure becomes this request's error response
            return failure(exc)
        return pb_utils.InferenceResponse(
            output_tensors=[
                strings("language", [result.language]),
                strings("languages", result.languages),
                pb_utils.Tensor("probabilities", np.array(result.probabilities, dtype=np.float32)),
                spans("window_times", result.windows),
                scalar("duration", result.duration),
            ]
        )
