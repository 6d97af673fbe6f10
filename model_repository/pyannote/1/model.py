"""`pyannote`: speaker diarization with a pyannote.audio >= 4 pipeline (see passerelle_triton.diarization).

The tensors are documented in config.pbtxt and README ("Audio tensors").
"""

from __future__ import annotations

from typing import Any

import triton_python_backend_utils as pb_utils
from passerelle_triton.artifacts import resolve_model_dir
from passerelle_triton.backend import ModelArgs, audio_input, failure, optional, scalar, spans, strings


def _count(request: Any, name: str) -> int | None:
    value = optional(request, name)
    return None if value is None else int(value)


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        model = ModelArgs(args)
        model.limit_cpu_threads()
        from passerelle_triton.diarization import DiarizationEngine, check_pyannote_version

        check_pyannote_version()
        bundle = resolve_model_dir(model.text("model"))
        self.engine = DiarizationEngine(
            str(bundle),
            device=model.device,
            embedding_batch_size=int(model.number("embedding_batch_size", 32)),
            segmentation_batch_size=int(model.number("segmentation_batch_size", 32)),
        )
        pb_utils.Logger.log_info(f"[pyannote] {bundle} loaded on {model.device}")

    def execute(self, requests: list[Any]) -> list[Any]:
        return [self._diarize(request) for request in requests]

    def _diarize(self, request: Any) -> Any:
        try:
            result = self.engine.diarize(
                audio_input(request),
                num_speakers=_count(request, "num_speakers"),
                min_speakers=_count(request, "min_speakers"),
                max_speakers=_count(request, "max_speakers"),
            )
        except Exception as exc:  # noqa: BLE001 - every failure becomes this request's error response
            return failure(exc)
        return pb_utils.InferenceResponse(
            output_tensors=[
                strings("speakers", [turn.speaker for turn in result.segments]),
                spans("turn_times", [(turn.start, turn.end) for turn in result.segments]),
                strings("exclusive_speakers", [turn.speaker for turn in result.exclusive_segments]),
                spans("exclusive_turn_times", [(turn.start, turn.end) for turn in result.exclusive_segments]),
                strings("rttm", [result.rttm]),
                scalar("duration", result.duration),
            ]
        )
