"""Audio inference through Triton: transcription, diarization and the speaker-attributed pipeline.

Each call makes sure the models it needs are loaded (lazily, as for chat), counts itself as in
flight so that an unload waits for it, hands the PCM to Triton (as a registered shared-memory
region over gRPC, or streamed over Triton's HTTP binary protocol), and turns Triton's failures
into the API's errors.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from tritonclient.grpc import InferInput, InferResult

from passerelle.observability import Metrics
from passerelle.schemas.audio import SpeakerCounts
from passerelle.services.audio import DecodedAudio
from passerelle.services.model_control import ModelControl
from passerelle.services.triton import TritonClient, TritonFailure
from passerelle.streaming import api_error
from passerelle.translate import audio as translate
from passerelle.translate.audio import Diarization, Transcript

log = logging.getLogger("passerelle.speech")
_UNREGISTER_ATTEMPTS = 100  # 5 s


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

    async def _infer(
        self, model: str, needs: list[str], audio: DecodedAudio, scalars: list[translate.Scalar], outputs: tuple[str, ...]
    ) -> translate.InferResult:
        for name in needs:
            await self.control.ensure_loaded(name)
        with self._serving(needs):
            try:
                if audio.shared_memory is not None:
                    result: translate.InferResult = await self._infer_shared(model, audio, scalars, outputs)
                else:
                    assert audio.pcm is not None
                    inputs = [translate.http_input(scalar) for scalar in scalars]
                    pcm = audio.pcm.data.cast("B")
                    result = await self.triton.infer_binary(model, inputs, "audio", "FP32", [audio.samples], pcm, list(outputs))
            except TritonFailure as failure:
                raise api_error(failure, model, self.control) from failure
        self.metrics.audio_seconds.labels(model=model).inc(audio.duration_s)
        return result

    async def _infer_shared(
        self, model: str, audio: DecodedAudio, scalars: list[translate.Scalar], outputs: tuple[str, ...]
    ) -> InferResult:
        """The PCM stays in its shared-memory object: registered with Triton for this request only."""
        region = f"passerelle-audio-{uuid.uuid4().hex}"
        await self.triton.register_system_shared_memory(region, audio.shared_memory_key, audio.byte_size)
        try:
            tensor = InferInput("audio", [audio.samples], "FP32")
            tensor.set_shared_memory(region, audio.byte_size)
            inputs = [tensor, *(translate.grpc_input(scalar) for scalar in scalars)]
            return await self.triton.infer(model, inputs, translate.requested(outputs))
        finally:
            await self._unregister(region)

    async def _unregister(self, region: str) -> None:
        """Triton releases a request's inputs just after it answers, and refuses to unregister a
        region still "in use" meanwhile: retry briefly. A failure is logged, never the client's."""
        for attempt in range(_UNREGISTER_ATTEMPTS):
            try:
                await self.triton.unregister_system_shared_memory(region)
                return
            except TritonFailure as failure:
                if "in use" not in failure.message or attempt == _UNREGISTER_ATTEMPTS - 1:
                    log.error("could not unregister shared-memory region %s: %s", region, failure.message)
                    return
            await asyncio.sleep(0.05)

    async def transcribe(
        self, model: str, audio: DecodedAudio, source: str, target: str, *, punctuation: bool, timestamps: bool
    ) -> Transcript:
        started = time.perf_counter()

        scalars = translate.transcription_inputs(source, target, punctuation=punctuation, timestamps=timestamps)
        transcript = translate.parse_transcription(await self._infer(model, [model], audio, scalars, translate.TRANSCRIPTION_OUTPUTS))
        transcript.model_seconds = time.perf_counter() - started
        return transcript

    async def diarize(self, model: str, audio: DecodedAudio, counts: SpeakerCounts) -> Diarization:
        scalars = translate.diarization_inputs(counts)
        return translate.parse_diarization(await self._infer(model, [model], audio, scalars, translate.DIARIZATION_OUTPUTS))

    async def speaker_transcribe(
        self, pipeline: str, parts: list[str], audio: DecodedAudio, source: str, target: str, *, punctuation: bool, counts: SpeakerCounts
    ) -> Transcript:
        """`parts`: the models the pipeline calls; they must be loaded before it runs (explicit model control)."""
        started = time.perf_counter()

        scalars = translate.speaker_transcript_inputs(source, target, punctuation=punctuation, counts=counts)
        result = await self._infer(pipeline, [*parts, pipeline], audio, scalars, translate.SPEAKER_TRANSCRIPT_OUTPUTS)
        transcript = translate.parse_speaker_transcript(result)
        transcript.model_seconds = time.perf_counter() - started
        return transcript
