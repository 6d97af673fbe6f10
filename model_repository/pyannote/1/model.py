"""`pyannote`: speaker diarization with a pyannote.audio >= 4 pipeline (see passerelle_triton.diarization).

The tensors are documented in config.pbtxt and README ("Audio tensors").
"""

from __future__ import annotations

from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils
from passerelle_triton.artifacts import resolve_model_dir
from passerelle_triton.backend import ModelArgs, audio_input, failure, optional, scalar, spans, strings
from passerelle_triton.speakers import (
    DEFAULT_MAX_SECONDS,
    DEFAULT_MIN_SECONDS,
    DEFAULT_THRESHOLD,
    LENGTHS,
    NAMES,
    REFERENCES,
    parse_known_speakers,
)


def _count(request: Any, name: str) -> int | None:
    value = optional(request, name)
    return None if value is None else int(value)


def _array(request: Any, name: str) -> np.ndarray | None:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy().reshape(-1)


def _names(request: Any) -> list[str] | None:
    values = _array(request, NAMES)
    return None if values is None else [value.decode("utf-8") if isinstance(value, bytes) else str(value) for value in values]


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
            known_speaker_threshold=model.number("known_speaker_threshold", DEFAULT_THRESHOLD),
        )
        self.min_seconds = model.number("known_speaker_min_seconds", DEFAULT_MIN_SECONDS)
        self.max_seconds = model.number("known_speaker_max_seconds", DEFAULT_MAX_SECONDS)
        pb_utils.Logger.log_info(f"[pyannote] {bundle} loaded on {model.device}")

    def execute(self, requests: list[Any]) -> list[Any]:
        return [self._diarize(request) for request in requests]

    def _diarize(self, request: Any) -> Any:
        try:
            known = parse_known_speakers(
                _names(request),
                _array(request, REFERENCES),
                _array(request, LENGTHS),
                min_seconds=self.min_seconds,
                max_seconds=self.max_seconds,
            )
            result = self.engine.diarize(
                audio_input(request),
                num_speakers=_count(request, "num_speakers"),
                min_speakers=_count(request, "min_speakers"),
                max_speakers=_count(request, "max_speakers"),
                known_speakers=known,
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
                _label_pairs(result.original_speakers, result.labels),
                pb_utils.Tensor("speaker_similarities", np.ascontiguousarray(result.similarities, dtype=np.float32)),
            ]
        )


def _label_pairs(original: list[str], labels: dict[str, str]) -> Any:
    pairs = [[label.encode("utf-8"), labels.get(label, label).encode("utf-8")] for label in original]
    return pb_utils.Tensor("speaker_labels", np.array(pairs, dtype=np.object_).reshape(-1, 2))
