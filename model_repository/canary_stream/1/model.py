"""`canary_stream`: one response per decoded speech window (decoupled BLS over `canary`).

The windows are planned as `canary` plans them (passerelle_triton.canary.plan_windows); each is
sent to `canary` on its own, and its text (with word and segment times moved onto the file's
clock) goes out at once. With `diarize`, the whole recording is diarized first (`pyannote`), and
each window's words get their speakers and form per-speaker segments
(passerelle_triton.attribution). A cancelled request stops before its next window.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils
from passerelle_triton.attribution import Turn, assign_speakers, group_segments
from passerelle_triton.backend import ModelArgs, audio_input, failure, optional, scalar, spans, strings
from passerelle_triton.bls import ModelFailed, call, given, pairs, texts
from passerelle_triton.speakers import KNOWN_SPEAKER_INPUTS
from passerelle_triton.vad import SAMPLE_RATE

_CANARY_INPUTS = ("source_language", "target_language", "punctuation")
_DIARIZATION_INPUTS = ("num_speakers", "min_speakers", "max_speakers", *KNOWN_SPEAKER_INPUTS)
_CANARY_OUTPUTS = ["text", "words", "word_times", "segments", "segment_times"]
_FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def _int(name: str, value: int) -> Any:
    return pb_utils.Tensor(name, np.array([value], dtype=np.int32))


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        model = ModelArgs(args)
        model.limit_cpu_threads()
        self.name = model.name
        self.transcriber = model.text("transcription_model")
        self.diarizer = model.text("diarization_model", "pyannote")
        self.max_chunk_s = model.number("max_chunk_seconds", 30.0)
        family = pb_utils.MetricFamily(
            name="passerelle_canary_stream_windows_total",
            description="Speech windows of streamed transcriptions: decoded, or left undecoded because the request was cancelled",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.metric_family = family  # a family must outlive its metrics
        self.decoded = family.Metric(labels={"model": self.name, "outcome": "decoded"})
        self.cancelled = family.Metric(labels={"model": self.name, "outcome": "cancelled"})

    async def execute(self, requests: list[Any]) -> None:
        await asyncio.gather(*(self._stream(request) for request in requests))

    async def _window(self, request: Any, audio: np.ndarray, window: tuple[float, float], timestamps: bool) -> Any:
        start, end = round(window[0] * SAMPLE_RATE), round(window[1] * SAMPLE_RATE)
        inputs = [pb_utils.Tensor("audio", np.ascontiguousarray(audio[start:end])), pb_utils.Tensor("timestamps", np.array([timestamps]))]
        return await call(self.transcriber, [*inputs, *given(request, _CANARY_INPUTS)], _CANARY_OUTPUTS)

    async def _turns(self, request: Any) -> list[Turn]:
        """The whole recording's speaker turns, without overlaps (what words are attributed by)."""
        inputs = given(request, ("audio", *_DIARIZATION_INPUTS))
        response = await call(self.diarizer, inputs, ["exclusive_speakers", "exclusive_turn_times"])
        speakers = texts(response, "exclusive_speakers")
        return [Turn(speaker, start, end) for speaker, (start, end) in zip(speakers, pairs(response, "exclusive_turn_times"), strict=True)]

    async def _stream(self, request: Any) -> None:
        sender = request.get_response_sender()
        try:
            from passerelle_triton.canary import plan_windows

            audio = audio_input(request)
            plan = await asyncio.to_thread(plan_windows, audio, self.max_chunk_s)
            count = len(plan.selected)
            diarize = bool(optional(request, "diarize", False))
            timestamps = diarize or bool(optional(request, "timestamps", False))
            if count == 0:
                sender.send(self._response("", 0, 0, (0.0, 0.0), None, 0.0, plan.duration, None), flags=_FINAL)
                return
            turns = await self._turns(request) if diarize else None
            for index, window in enumerate(plan.selected):
                if sender.is_cancelled():
                    self.cancelled.increment(count - index)
                    sender.send(flags=_FINAL)
                    return
                result = await self._window(request, audio, window, timestamps)
                self.decoded.increment(1)
                if sender.is_cancelled():
                    self.cancelled.increment(count - index - 1)
                    sender.send(flags=_FINAL)
                    return
                text = " ".join(texts(result, "text")).strip()
                response = self._response(text, index, count, window, result if timestamps else None, window[0], plan.duration, turns)
                sender.send(response, flags=_FINAL if index == count - 1 else 0)
        except ModelFailed as exc:
            sender.send(exc.response(), flags=_FINAL)
        except Exception as exc:  # noqa: BLE001 - every failure becomes this request's final error response
            sender.send(failure(exc), flags=_FINAL)

    @staticmethod
    def _response(
        text: str,
        index: int,
        count: int,
        window: tuple[float, float],
        timed: Any,
        offset: float,
        duration: float,
        turns: list[Turn] | None,
    ) -> Any:
        words = texts(timed, "words") if timed is not None else []
        word_times = pairs(timed, "word_times", offset) if timed is not None else []
        segments = texts(timed, "segments") if timed is not None else []
        segment_times = pairs(timed, "segment_times", offset) if timed is not None else []
        speakers: list[str] = []
        if turns is not None:
            timed_words = [(word, start, end) for word, (start, end) in zip(words, word_times, strict=True)]
            grouped = group_segments(
                [(*word, speaker) for word, speaker in zip(timed_words, assign_speakers(timed_words, turns), strict=True)]
            )
            segments = [segment["text"] for segment in grouped]
            segment_times = [(segment["start"], segment["end"]) for segment in grouped]
            speakers = [segment["speaker"] or "" for segment in grouped]
        return pb_utils.InferenceResponse(
            output_tensors=[
                strings("text", [text]),
                _int("window_index", index),
                _int("window_count", count),
                spans("window_times", [window]),
                strings("words", words),
                spans("word_times", word_times),
                strings("segments", segments),
                spans("segment_times", segment_times),
                strings("segment_speakers", speakers),
                scalar("duration", duration),
            ]
        )
