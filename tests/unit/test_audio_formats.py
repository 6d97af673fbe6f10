"""Triton's audio outputs → the OpenAI response formats (no Triton: results are built from arrays)."""

from __future__ import annotations

import numpy as np

from passerelle.audio.formats import as_diarized, as_srt, as_verbose, as_vtt
from passerelle.audio.languages import language_code
from passerelle.audio.tensors import RecognizedSpeech, Span, parse_diarization, parse_transcription


class Result:
    """Arrays by output name, read through `as_numpy` as tritonclient's gRPC and HTTP results are."""

    def __init__(self, **arrays: np.ndarray) -> None:
        self.arrays = arrays

    def as_numpy(self, name: str) -> np.ndarray | None:
        return self.arrays.get(name)


def strings(*values: str) -> np.ndarray:
    return np.array([value.encode() for value in values], dtype=object)


TRANSCRIPT = RecognizedSpeech(
    text="Hello world. Again.",
    duration=3725.25,
    words=[Span("Hello", 0.0, 0.4), Span("world.", 0.5, 0.9), Span("Again.", 3661.5, 3662.0)],
    segments=[Span("Hello world.", 0.0, 0.9), Span(" Again.", 3661.5, 3662.0)],
    chunks=[(0.0, 30.0), (3650.0, 3680.0)],
)


def test_language_codes() -> None:
    assert language_code("en") == "en"
    assert language_code("en-US") == "en"
    assert language_code("pt_BR") == "pt"
    assert language_code("German") == "de"
    assert language_code("tlh") is None


def test_parse_transcription() -> None:
    result = Result(
        text=strings("Hello world."),
        duration=np.array([2.00049], dtype=np.float32),
        words=strings("Hello", "world."),
        word_times=np.array([[0.1, 0.4], [0.5, 0.9]], dtype=np.float32),
        segments=strings("Hello world."),
        segment_times=np.array([[0.1, 0.9]], dtype=np.float32),
        chunk_times=np.array([[0.0, 2.0]], dtype=np.float32),
    )
    transcript = parse_transcription(result)
    assert transcript.text == "Hello world." and transcript.duration == 2.0
    assert transcript.words == [Span("Hello", 0.1, 0.4), Span("world.", 0.5, 0.9)]
    assert transcript.segments == [Span("Hello world.", 0.1, 0.9)]
    assert transcript.chunks == [(0.0, 2.0)] and transcript.speech == []
    assert transcript.speech_detected


def test_parse_transcription_of_nothing() -> None:
    transcript = parse_transcription(Result(text=strings(""), duration=np.array([1.5], dtype=np.float32)))
    assert transcript.text == "" and transcript.words == [] and not transcript.speech_detected


def test_parse_diarization() -> None:
    result = Result(
        speakers=strings("SPEAKER_00", "SPEAKER_01"),
        turn_times=np.array([[0.0, 1.0], [1.5, 3.0]], dtype=np.float32),
        rttm=strings("SPEAKER audio 1 0.000 1.000 <NA> <NA> SPEAKER_00 <NA> <NA>\n"),
        duration=np.array([3.0], dtype=np.float32),
    )
    diarization = parse_diarization(result)
    assert diarization.speakers == ["SPEAKER_00", "SPEAKER_01"]
    assert [(t.speaker, t.start, t.end) for t in diarization.turns] == [("SPEAKER_00", 0.0, 1.0), ("SPEAKER_01", 1.5, 3.0)]


def test_srt_and_vtt_clocks() -> None:
    assert as_srt(TRANSCRIPT) == "1\n00:00:00,000 --> 00:00:00,900\nHello world.\n\n2\n01:01:01,500 --> 01:01:02,000\nAgain.\n"
    assert as_vtt(TRANSCRIPT) == "WEBVTT\n\n00:00:00.000 --> 00:00:00.900\nHello world.\n\n01:01:01.500 --> 01:01:02.000\nAgain.\n"


def test_verbose_json() -> None:
    verbose = as_verbose(TRANSCRIPT, task="translate", language="de", words=True, segments=True)
    assert verbose.task == "translate" and verbose.language == "german" and verbose.duration == 3725.25
    assert [segment.seek for segment in verbose.segments or []] == [0, 365000]  # the window each segment was decoded in, in 10 ms
    assert [word.word for word in verbose.words or []] == ["Hello", "world.", "Again."]
    assert verbose.usage is not None and verbose.usage.seconds == 3725.25
    plain = as_verbose(TRANSCRIPT, task="transcribe", language="xx", words=False, segments=False)
    assert plain.words is None and plain.segments is None and plain.language == "xx"


def test_diarized_json() -> None:
    transcript = RecognizedSpeech(text="a b", duration=2.0, segments=[Span("a", 0.0, 1.0, "SPEAKER_01"), Span("b", 1.0, 2.0)])
    diarized = as_diarized(transcript)
    assert [(s.id, s.speaker, s.text) for s in diarized.segments] == [("seg_0", "SPEAKER_01", "a"), ("seg_1", "unknown", "b")]
