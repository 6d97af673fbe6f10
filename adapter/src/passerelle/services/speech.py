"""Audio inference through Triton: transcription, diarization and the speaker-attributed pipeline.

Each call makes sure the models it needs are loaded (lazily, as for chat), counts itself as in
flight so that an unload waits for it, and turns Triton's failures into the API's errors.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from tritonclient.grpc import InferInput, InferResult

from passerelle.observability import Metrics
from passerelle.schemas.audio import SpeakerCounts
from passerelle.services.model_control import ModelControl
from passerelle.services.triton import TritonClient, TritonFailure
from passerelle.streaming import api_error
from passerelle.translate import audio as translate
from passerelle.translate.audio import Diarization, Transcript


class SpeechService:
    def __init__(self, triton: TritonClient, control: ModelControl, metrics: Metrics) -> None:
        self.triton = triton
        self.control = control
        self.metrics = metrics

    @contextmanager
    def _serving(self, models: list[str]) -> Iterator[None]:
        for model in models:
            self.control.in_flight[model] += 1
        try:
            yield
        finally:
            for model in models:
                self.control.in_flight[model] -= 1

    async def _infer(self, model: str, needs: list[str], inputs: list[InferInput], outputs: tuple[str, ...], seconds: float) -> InferResult:
        for name in needs:
            await self.control.ensure_loaded(name)
        with self._serving(needs):
            try:
                result = await self.triton.infer(model, inputs, translate.requested(outputs))
            except TritonFailure as failure:
                raise api_error(failure, model, self.control) from failure
        self.metrics.audio_seconds.labels(model=model).inc(seconds)
        return result

    async def transcribe(self, model: str, pcm: np.ndarray, source: str, target: str, *, punctuation: bool, timestamps: bool) -> Transcript:
        started = time.perf_counter()
        inputs = translate.transcription_inputs(pcm, source, target, punctuation=punctuation, timestamps=timestamps)
        result = await self._infer(model, [model], inputs, translate.TRANSCRIPTION_OUTPUTS, len(pcm) / 16_000)
        transcript = translate.parse_transcription(result)
        transcript.model_seconds = time.perf_counter() - started
        return transcript

    async def diarize(self, model: str, pcm: np.ndarray, counts: SpeakerCounts) -> Diarization:
        inputs = translate.diarization_inputs(pcm, counts)
        result = await self._infer(model, [model], inputs, translate.DIARIZATION_OUTPUTS, len(pcm) / 16_000)
        return translate.parse_diarization(result)

    async def speaker_transcribe(
        self, pipeline: str, parts: list[str], pcm: np.ndarray, source: str, target: str, *, punctuation: bool, counts: SpeakerCounts
    ) -> Transcript:
        """`parts`: the models the pipeline calls; they must be loaded before it runs (explicit model control)."""
        started = time.perf_counter()
        inputs = translate.speaker_transcript_inputs(pcm, source, target, punctuation=punctuation, counts=counts)
        result = await self._infer(pipeline, [*parts, pipeline], inputs, translate.SPEAKER_TRANSCRIPT_OUTPUTS, len(pcm) / 16_000)
        transcript = translate.parse_speaker_transcript(result)
        transcript.model_seconds = time.perf_counter() - started
        return transcript
