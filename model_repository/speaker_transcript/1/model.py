"""`speaker_transcript`: a speaker-attributed transcript in one Triton call (BLS).

Sends the audio to the transcription and diarization models named in config.pbtxt, at the
same time, then assigns each word to a speaker and each speaker turn its words
(passerelle_triton.attribution). It never imports torch: it only moves tensors between models.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils
from passerelle_triton.attribution import Turn, assign_speakers, turn_segments
from passerelle_triton.backend import ModelArgs, failure, scalar, spans, strings
from passerelle_triton.bls import ModelFailed, call, given, output, pairs, texts

_TRANSCRIPTION_INPUTS = ("audio", "source_language", "target_language", "punctuation")
_DIARIZATION_INPUTS = ("audio", "num_speakers", "min_speakers", "max_speakers")
_DIARIZATION_OUTPUTS = ["speakers", "turn_times", "exclusive_speakers", "exclusive_turn_times", "rttm"]


def _turns(response: Any, speakers: str, times: str) -> list[Turn]:
    return [Turn(speaker, start, end) for speaker, (start, end) in zip(texts(response, speakers), pairs(response, times), strict=True)]


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        model = ModelArgs(args)
        self.transcriber = model.text("transcription_model")
        self.diarizer = model.text("diarization_model")

    async def execute(self, requests: list[Any]) -> list[Any]:
        return list(await asyncio.gather(*(self._run(request) for request in requests)))

    async def _run(self, request: Any) -> Any:
        try:
            transcription_inputs = [*given(request, _TRANSCRIPTION_INPUTS), pb_utils.Tensor("timestamps", np.array([True]))]
            transcript, diarization = await asyncio.gather(
                call(self.transcriber, transcription_inputs, ["text", "words", "word_times", "duration"]),
                call(self.diarizer, given(request, _DIARIZATION_INPUTS), _DIARIZATION_OUTPUTS),
            )
        except ModelFailed as exc:
            return exc.response()
        except Exception as exc:  # noqa: BLE001 - every failure becomes this request's error response
            return failure(exc)
        word_times = zip(texts(transcript, "words"), pairs(transcript, "word_times"), strict=True)
        words = [(text, start, end) for text, (start, end) in word_times]
        turns = _turns(diarization, "speakers", "turn_times")
        exclusive = _turns(diarization, "exclusive_speakers", "exclusive_turn_times")
        speakers = assign_speakers(words, exclusive)
        segments = turn_segments(words, exclusive, speakers)
        return pb_utils.InferenceResponse(
            output_tensors=[
                strings("text", texts(transcript, "text")),
                strings("segments", [segment["text"] for segment in segments]),
                strings("segment_speakers", [segment["speaker"] or "" for segment in segments]),
                spans("segment_times", [(segment["start"], segment["end"]) for segment in segments]),
                strings("words", [word for word, _, _ in words]),
                strings("word_speakers", [speaker or "" for speaker in speakers]),
                spans("word_times", [(start, end) for _, start, end in words]),
                strings("speakers", [turn.speaker for turn in turns]),
                spans("turn_times", [(turn.start, turn.end) for turn in turns]),
                strings("rttm", texts(diarization, "rttm")),
                scalar("duration", float(output(transcript, "duration").reshape(-1)[0])),
            ]
        )
