"""The `canary`, `canary_stream`, `langid`, `pyannote` and `speaker_transcript` models' tensors (docs/triton.md, "Audio tensors").

PCM goes in as `audio` (FP32, 16 kHz mono; `audio/inference.py` makes that tensor, in the request
or in shared memory) with scalar options beside it; texts come back as BYTES lists with
[start, end] FP32 pairs beside them, parsed here into `RecognizedSpeech` and `Diarization`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from tritonclient.grpc import InferInput, InferRequestedOutput

from passerelle.audio.protocol import SpeakerCounts

TRANSCRIPTION_OUTPUTS = ("text", "words", "word_times", "segments", "segment_times", "speech_times", "chunk_times", "duration")
DIARIZATION_OUTPUTS = ("speakers", "turn_times", "rttm", "duration")
LANGUAGE_OUTPUTS = ("language", "languages", "probabilities", "window_times")
TRANSCRIPT_STREAM_OUTPUTS = (
    "text", "window_index", "window_count", "window_times", "segments", "segment_times", "segment_speakers", "duration",
)  # fmt: skip
SPEAKER_TRANSCRIPT_OUTPUTS = (
    "text", "segments", "segment_speakers", "segment_times", "words", "word_speakers", "word_times",
    "speakers", "turn_times", "rttm", "duration",
)  # fmt: skip


@dataclass(frozen=True)
class Span:
    text: str
    start: float
    end: float
    speaker: str | None = None


@dataclass
class RecognizedSpeech:
    """What Canary, or the speaker pipeline, recognised in one recording."""

    text: str
    duration: float
    words: list[Span] = field(default_factory=list)
    segments: list[Span] = field(default_factory=list)
    chunks: list[tuple[float, float]] = field(default_factory=list)
    speech: list[tuple[float, float]] = field(default_factory=list)
    turns: list[Span] = field(default_factory=list)
    rttm: str | None = None
    model_seconds: float = 0.0  # time spent in the Triton call, for the timing headers

    @property
    def speech_detected(self) -> bool:
        """Whether any speech was found: VAD regions from Canary, or speaker turns from the pipeline."""
        return bool(self.speech or self.turns or self.words or self.text.strip())


@dataclass(frozen=True)
class IdentifiedLanguage:
    """What the language-identification model heard: `language` is "" when there was no speech."""

    language: str
    probability: float
    windows: list[tuple[float, float]]
    probabilities: dict[str, float] = field(default_factory=dict)  # every label the model knows


@dataclass
class Diarization:
    turns: list[Span]
    rttm: str
    duration: float

    @property
    def speakers(self) -> list[str]:
        return sorted({turn.speaker or "" for turn in self.turns})


# Triton inputs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scalar:
    """One optional input beside `audio` (the speech service sends the audio itself): `[1]`-shaped,
    or a vector (the known speakers' names, clips and lengths)."""

    name: str
    datatype: str  # BYTES, BOOL, INT32 or FP32
    value: str | bool | int | np.ndarray


@dataclass(frozen=True)
class KnownSpeakers:
    """Reference clips of named speakers (16 kHz mono PCM, concatenated), for `pyannote` to match."""

    names: list[str]
    pcm: np.ndarray
    lengths: list[int]

    def inputs(self) -> list[Scalar]:
        return [
            Scalar("known_speaker_names", "BYTES", np.array([name.encode() for name in self.names], dtype=np.object_)),
            Scalar("known_speaker_references", "FP32", self.pcm),
            Scalar("known_speaker_reference_lengths", "INT32", np.array(self.lengths, dtype=np.int32)),
        ]


def _speaker_counts(counts: SpeakerCounts) -> list[Scalar]:
    values = {"num_speakers": counts.num_speakers, "min_speakers": counts.min_speakers, "max_speakers": counts.max_speakers}
    return [Scalar(name, "INT32", value) for name, value in values.items() if value is not None]


def transcription_inputs(source: str, target: str, *, punctuation: bool, timestamps: bool) -> list[Scalar]:
    return [
        Scalar("source_language", "BYTES", source),
        Scalar("target_language", "BYTES", target),
        Scalar("punctuation", "BOOL", punctuation),
        Scalar("timestamps", "BOOL", timestamps),
    ]


def _known(known: KnownSpeakers | None) -> list[Scalar]:
    return known.inputs() if known is not None else []


def diarization_inputs(counts: SpeakerCounts, known: KnownSpeakers | None = None) -> list[Scalar]:
    return [*_speaker_counts(counts), *_known(known)]


def transcript_stream_inputs(
    source: str, target: str, *, punctuation: bool, diarize: SpeakerCounts | None, known: KnownSpeakers | None = None
) -> list[Scalar]:
    scalars = transcription_inputs(source, target, punctuation=punctuation, timestamps=False)
    if diarize is not None:
        scalars += [Scalar("diarize", "BOOL", True), *_speaker_counts(diarize), *_known(known)]
    return scalars


def speaker_transcript_inputs(
    source: str, target: str, *, punctuation: bool, counts: SpeakerCounts, known: KnownSpeakers | None = None
) -> list[Scalar]:
    return [
        Scalar("source_language", "BYTES", source),
        Scalar("target_language", "BYTES", target),
        Scalar("punctuation", "BOOL", punctuation),
        *_speaker_counts(counts),
        *_known(known),
    ]


_NUMPY_TYPES = {"BYTES": np.object_, "BOOL": np.bool_, "INT32": np.int32, "FP32": np.float32}


def _array(scalar: Scalar) -> np.ndarray:
    if isinstance(scalar.value, np.ndarray):
        return scalar.value.reshape(-1).astype(_NUMPY_TYPES[scalar.datatype], copy=False)
    value = scalar.value.encode() if isinstance(scalar.value, str) else scalar.value
    return np.array([value], dtype=_NUMPY_TYPES[scalar.datatype])


def grpc_input(scalar: Scalar) -> InferInput:
    array = _array(scalar)
    tensor = InferInput(scalar.name, list(array.shape), scalar.datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def http_input(scalar: Scalar) -> dict[str, Any]:
    """The KServe v2 JSON form of an input (Triton's HTTP protocol)."""
    array = _array(scalar)
    data = [value.decode() for value in array] if scalar.datatype == "BYTES" else array.tolist()
    return {"name": scalar.name, "shape": list(array.shape), "datatype": scalar.datatype, "data": data}


def requested(names: tuple[str, ...]) -> list[InferRequestedOutput]:
    return [InferRequestedOutput(name) for name in names]


# Triton outputs -----------------------------------------------------------------------------


class InferResult(Protocol):
    """What the parsers read: tritonclient's gRPC and HTTP results both have it."""

    def as_numpy(self, name: str) -> np.ndarray | None: ...


def _strings(result: InferResult, name: str) -> list[str]:
    array = result.as_numpy(name)
    return [] if array is None else [value.decode("utf-8", errors="replace") for value in array.reshape(-1)]


def _pairs(result: InferResult, name: str) -> list[tuple[float, float]]:
    array = result.as_numpy(name)
    return [] if array is None else [(round(float(a), 3), round(float(b), 3)) for a, b in array.reshape(-1, 2)]


def _duration(result: InferResult) -> float:
    array = result.as_numpy("duration")
    return round(float(array.reshape(-1)[0]), 3) if array is not None else 0.0


def _spans(texts: list[str], times: list[tuple[float, float]], speakers: list[str] | None = None) -> list[Span]:
    labels: list[str | None] = list(speakers) if speakers is not None else [None] * len(texts)
    return [Span(text, start, end, label or None) for text, (start, end), label in zip(texts, times, labels, strict=True)]


def parse_transcription(result: InferResult) -> RecognizedSpeech:
    return RecognizedSpeech(
        text=(_strings(result, "text") or [""])[0],
        duration=_duration(result),
        words=_spans(_strings(result, "words"), _pairs(result, "word_times")),
        segments=_spans(_strings(result, "segments"), _pairs(result, "segment_times")),
        chunks=_pairs(result, "chunk_times"),
        speech=_pairs(result, "speech_times"),
    )


def parse_identification(result: InferResult) -> IdentifiedLanguage:
    array = result.as_numpy("probabilities")
    probabilities = [float(value) for value in array.reshape(-1)] if array is not None else []
    return IdentifiedLanguage(
        language=(_strings(result, "language") or [""])[0],
        probability=probabilities[0] if probabilities else 0.0,
        windows=_pairs(result, "window_times"),
        probabilities=dict(zip(_strings(result, "languages"), probabilities, strict=True)),
    )


def parse_diarization(result: InferResult) -> Diarization:
    return Diarization(
        turns=_spans([""] * len(_strings(result, "speakers")), _pairs(result, "turn_times"), _strings(result, "speakers")),
        rttm=(_strings(result, "rttm") or [""])[0],
        duration=_duration(result),
    )


def parse_speaker_transcript(result: InferResult) -> RecognizedSpeech:
    speakers = _strings(result, "speakers")
    return RecognizedSpeech(
        text=(_strings(result, "text") or [""])[0],
        duration=_duration(result),
        words=_spans(_strings(result, "words"), _pairs(result, "word_times"), _strings(result, "word_speakers")),
        segments=_spans(_strings(result, "segments"), _pairs(result, "segment_times"), _strings(result, "segment_speakers")),
        turns=_spans([""] * len(speakers), _pairs(result, "turn_times"), speakers),
        rttm=(_strings(result, "rttm") or [""])[0],
    )


@dataclass(frozen=True)
class TranscriptWindow:
    """One response of `canary_stream`: the text of one speech window, as soon as it is decoded."""

    text: str
    index: int
    count: int  # windows with speech in the recording; 0: silence, one empty response
    start: float
    end: float
    duration: float
    segments: list[Span] = field(default_factory=list)  # with diarization: per-speaker segments of the window

    @property
    def last(self) -> bool:
        return self.index >= self.count - 1


def _integer(result: InferResult, name: str) -> int:
    array = result.as_numpy(name)
    return int(array.reshape(-1)[0]) if array is not None and array.size else 0


def parse_window(result: InferResult) -> TranscriptWindow:
    window = (_pairs(result, "window_times") or [(0.0, 0.0)])[0]
    return TranscriptWindow(
        text=(_strings(result, "text") or [""])[0],
        index=_integer(result, "window_index"),
        count=_integer(result, "window_count"),
        start=window[0],
        end=window[1],
        duration=_duration(result),
        segments=_spans(_strings(result, "segments"), _pairs(result, "segment_times"), _strings(result, "segment_speakers")),
    )
