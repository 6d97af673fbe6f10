"""Audio inference through Triton: transcription, diarization and the speaker-attributed pipeline.

Each call runs under the lifecycle of the models it needs (loaded lazily, as for chat, and
counted in flight so that an unload waits for it), hands the PCM to Triton (as a registered
shared-memory region over gRPC, or streamed over Triton's HTTP binary protocol), and turns
Triton's failures into the API's errors.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AsyncExitStack, aclosing, asynccontextmanager

from tritonclient.grpc import InferInput, InferResult

from passerelle.audio import tensors
from passerelle.audio.decoding import DecodedAudio
from passerelle.audio.protocol import SpeakerCounts
from passerelle.audio.tensors import Diarization, IdentifiedLanguage, KnownSpeakers, RecognizedSpeech, TranscriptWindow
from passerelle.core.errors import TritonFailure
from passerelle.core.observability import Metrics
from passerelle.core.streaming import to_completion
from passerelle.triton.lifecycle import ModelControl
from passerelle.triton.upstreams import Tritons

log = logging.getLogger("passerelle.speech")
_UNREGISTER_WAIT_S = 30.0


def _last(window: TranscriptWindow) -> bool:
    return window.last


class SpeechService:
    def __init__(self, triton: Tritons, control: ModelControl, metrics: Metrics) -> None:
        self.triton = triton
        self.control = control
        self.metrics = metrics

    async def _infer(
        self, model: str, needs: list[str], audio: DecodedAudio, scalars: list[tensors.Scalar], outputs: tuple[str, ...]
    ) -> tensors.InferResult:
        async with self.control.serving(*needs):
            try:
                if audio.shared_memory is not None:
                    result: tensors.InferResult = await self._infer_shared(model, audio, scalars, outputs)
                else:
                    assert audio.pcm is not None
                    inputs = [tensors.http_input(scalar) for scalar in scalars]
                    pcm = audio.pcm.data.cast("B")
                    result = await self.triton.infer_binary(model, inputs, "audio", "FP32", [audio.samples], pcm, list(outputs))
            except TritonFailure as failure:
                raise self.control.api_error(failure, model) from failure
        self.metrics.audio_seconds.labels(model=model).inc(audio.duration_s)
        return result

    async def _infer_shared(self, model: str, audio: DecodedAudio, scalars: list[tensors.Scalar], outputs: tuple[str, ...]) -> InferResult:
        """The PCM stays in its shared-memory object: registered with Triton for this request only."""
        async with self._registered(model, audio) as region:
            tensor = InferInput("audio", [audio.samples], "FP32")
            tensor.set_shared_memory(region, audio.byte_size)
            inputs = [tensor, *(tensors.grpc_input(scalar) for scalar in scalars)]
            return await self.triton.infer(model, inputs, tensors.requested(outputs))

    @asynccontextmanager
    async def _registered(self, model: str, audio: DecodedAudio) -> AsyncIterator[str]:
        """A region over the audio's shared-memory object, registered with Triton while the block runs.
        It is unregistered however the block ends, a client that left included."""
        region = f"passerelle-audio-{uuid.uuid4().hex}"
        try:
            await self.triton.register_system_shared_memory(model, region, audio.shared_memory_key, audio.byte_size)
            yield region
        finally:
            await to_completion(self._unregister(model, region))

    async def _unregister(self, model: str, region: str) -> None:
        """Triton releases a request's inputs just after it answers (a cancelled request: once the
        model has seen the cancellation), and refuses to unregister a region still "in use"
        meanwhile: retry. A failure is logged, never the client's."""
        deadline = time.monotonic() + _UNREGISTER_WAIT_S
        while True:
            try:
                await self.triton.unregister_system_shared_memory(model, region)
                return
            except TritonFailure as failure:
                if "in use" not in failure.message or time.monotonic() > deadline:
                    log.error("could not unregister shared-memory region %s: %s", region, failure.message)
                    return
            await asyncio.sleep(0.05)

    async def transcribe(
        self, model: str, audio: DecodedAudio, source: str, target: str, *, punctuation: bool, timestamps: bool
    ) -> RecognizedSpeech:
        started = time.perf_counter()

        scalars = tensors.transcription_inputs(source, target, punctuation=punctuation, timestamps=timestamps)
        speech = tensors.parse_transcription(await self._infer(model, [model], audio, scalars, tensors.TRANSCRIPTION_OUTPUTS))
        speech.model_seconds = time.perf_counter() - started
        return speech

    async def transcribe_stream(
        self,
        needs: list[str],
        audio: DecodedAudio,
        source: str,
        target: str,
        *,
        punctuation: bool,
        diarize: SpeakerCounts | None,
        known: KnownSpeakers | None,
        request_id: str,
    ) -> AsyncGenerator[TranscriptWindow]:
        """The windows of `needs[-1]` (the streaming model; the others are the models it calls) as
        they are decoded; leaving early cancels the rest in Triton."""
        stream_model = needs[-1]
        scalars = tensors.transcript_stream_inputs(source, target, punctuation=punctuation, diarize=diarize, known=known)
        async with self.control.serving(*needs), AsyncExitStack() as resources:
            tensor = InferInput("audio", [audio.samples], "FP32")
            if audio.shared_memory is not None:
                tensor.set_shared_memory(await resources.enter_async_context(self._registered(stream_model, audio)), audio.byte_size)
            else:
                assert audio.pcm is not None
                tensor.set_data_from_numpy(audio.pcm)
            inputs = [tensor, *(tensors.grpc_input(scalar) for scalar in scalars)]
            outputs = tensors.requested(tensors.TRANSCRIPT_STREAM_OUTPUTS)
            windows = self.triton.stream(stream_model, inputs, outputs, request_id, tensors.parse_window, _last)
            try:
                async with aclosing(windows):
                    async for window in windows:
                        yield window
            except TritonFailure as failure:
                raise self.control.api_error(failure, stream_model) from failure
        self.metrics.audio_seconds.labels(model=stream_model).inc(audio.duration_s)

    async def identify_language(self, model: str, audio: DecodedAudio) -> IdentifiedLanguage:
        return tensors.parse_identification(await self._infer(model, [model], audio, [], tensors.LANGUAGE_OUTPUTS))

    async def diarize(self, model: str, audio: DecodedAudio, counts: SpeakerCounts, known: KnownSpeakers | None) -> Diarization:
        scalars = tensors.diarization_inputs(counts, known)
        return tensors.parse_diarization(await self._infer(model, [model], audio, scalars, tensors.DIARIZATION_OUTPUTS))

    async def speaker_transcribe(
        self,
        pipeline: str,
        parts: list[str],
        audio: DecodedAudio,
        source: str,
        target: str,
        *,
        punctuation: bool,
        counts: SpeakerCounts,
        known: KnownSpeakers | None,
    ) -> RecognizedSpeech:
        """`parts`: the models the pipeline calls; they must be loaded before it runs (explicit model control)."""
        started = time.perf_counter()

        scalars = tensors.speaker_transcript_inputs(source, target, punctuation=punctuation, counts=counts, known=known)
        result = await self._infer(pipeline, [*parts, pipeline], audio, scalars, tensors.SPEAKER_TRANSCRIPT_OUTPUTS)
        speech = tensors.parse_speaker_transcript(result)
        speech.model_seconds = time.perf_counter() - started
        return speech
