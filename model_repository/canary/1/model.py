"""`canary`: transcription and translation with NeMo Canary (see passerelle_triton.canary).

The tensors are documented in config.pbtxt and README ("Audio tensors").
"""

from __future__ import annotations

from typing import Any

import triton_python_backend_utils as pb_utils
from passerelle_triton.artifacts import resolve_model_file
from passerelle_triton.backend import ModelArgs, audio_input, failure, optional, scalar, spans, strings


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        model = ModelArgs(args)
        model.limit_cpu_threads()
        from passerelle_triton.canary import CanaryEngine

        nemo = resolve_model_file(model.text("model"), model.text("nemo_file"))
        self.engine = CanaryEngine(
            str(nemo),
            device=model.device,
            max_chunk_s=model.number("max_chunk_seconds", 30.0),
            batch_size=int(model.number("batch_size", 4)),
            # Only scripts/gpu_check sets it (random weights): see passerelle_triton.canary.FixedDecodeLength.
            fixed_decode_tokens_per_second=model.number("fixed_decode_tokens_per_second", 0.0) or None,
        )
        pb_utils.Logger.log_info(f"[canary] {nemo} loaded on {model.device}")

    def execute(self, requests: list[Any]) -> list[Any]:
        return [self._transcribe(request) for request in requests]

    def _transcribe(self, request: Any) -> Any:
        try:
            source = optional(request, "source_language", "en") or "en"
            result = self.engine.transcribe(
                audio_input(request),
                source_lang=source,
                target_lang=optional(request, "target_language", source) or source,
                punctuation=bool(optional(request, "punctuation", True)),
                timestamps=bool(optional(request, "timestamps", False)),
            )
        except Exception as exc:  # noqa: BLE001 - every failure becomes this request's error response
            return failure(exc)
        if self.engine.fixed_decode is not None:
            expected, generated = self.engine.fixed_decode.take_counts()
            pb_utils.Logger.log_info(
                f"[canary] fixed decode: {self.engine.fixed_decode.tokens_per_second:g} tokens/s, "
                f"audio {result.duration:.3f} s, {len(result.chunks)} windows, tokens expected {expected}, generated {generated}"
            )
        return pb_utils.InferenceResponse(
            output_tensors=[
                strings("text", [result.text]),
                strings("words", [word.text for word in result.words]),
                spans("word_times", [(word.start, word.end) for word in result.words]),
                strings("segments", [segment.text for segment in result.segments]),
                spans("segment_times", [(segment.start, segment.end) for segment in result.segments]),
                spans("speech_times", result.speech_regions),
                spans("chunk_times", result.chunks),
                scalar("duration", result.duration),
            ]
        )
