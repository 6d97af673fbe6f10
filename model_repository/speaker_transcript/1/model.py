"""`speaker_transcript`: a speaker-attributed transcript in one Triton call (BLS).

Sends the audio to the transcription and diarization models named in config.pbtxt, at the
same time, then assigns each word to a speaker and each speaker turn its words
(passerelle_triton.attribution). With `source_language` "auto", the language model names the
spoken language first (the diarization starts meanwhile). It never imports torch: it only moves
tensors between models.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils
from passerelle_triton.attribution import Turn, assign_speakers, turn_segments
from passerelle_triton.backend import ModelArgs, failure, optional, scalar, spans, strings
from passerelle_triton.bls import ModelFailed, call, given, output, pairs, texts
from passerelle_triton.speakers import KNOWN_SPEAKER_INPUTS

_TRANSCRIPTION_INPUTS = ("audio", "source_language", "target_language", "punctuation")
_DIARIZATION_INPUTS = ("audio", "num_speakers", "min_speakers", "max_speakers", *KNOWN_SPEAKER_INPUTS)
_DIARIZATION_OUTPUTS = ["speakers", "turn_times", "exclusive_speakers", "exclusive_turn_times", "rttm"]


def _turns(response: Any, speakers: str, times: str) -> list[Turn]:
    return [Turn(speaker, start, end) for speaker, (start, end) in zip(texts(response, speakers), pairs(response, times), strict=True)]


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        model = ModelArgs(args)
        self.transcriber = model.text("transcription_model")
        self.diarizer = model.text("diarization_model")
        self.identifier = model.text("language_model", "langid")

    async def execute(self, requests: list[Any]) -> list[Any]:
        return list(await asyncio.gather(*(self._run(request) for request in requests)))

    async def _transcribe(self, request: Any) -> tuple[str, Any]:
        """The source language (named, identified for "auto", else Canary's default) and Canary's answer."""
        inputs = [tensor for tensor in given(request, _TRANSCRIPTION_INPUTS) if tensor.name() != "source_language"]
        language = optional(request, "source_language", "en") or "en"
        if language == "auto":
            audio = pb_utils.get_input_tensor_by_name(request, "audio")
            heard = await call(self.identifier, [audio], ["language"])
            language = texts(heard, "language")[0] or "en"  # "": no speech, nothing to transcribe
        inputs += [pb_utils.Tensor("source_language", np.array([language.encode()], dtype=np.object_))]
        inputs += [pb_utils.Tensor("timestamps", np.array([True]))]
        return language, await call(self.transcriber, inputs, ["text", "words", "word_times", "duration"])

    async def _run(self, request: Any) -> Any:
        try:
            (language, transcript), diarization = await asyncio.gather(
                self._transcribe(request),
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
                strings("language", [language]),
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
