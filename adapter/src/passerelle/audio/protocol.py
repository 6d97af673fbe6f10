"""Audio request forms and response shapes: OpenAI's `/v1/audio/*` and the seed's `/api/*` routes.

Forms forbid unknown fields, as OpenAI's API does. Fields that OpenAI defines and that cannot
change Canary's answer are accepted and ignored (`prompt`, `temperature`; README says why);
fields that would change it and that we cannot honour are refused by name.
Response fields we cannot compute (`avg_logprob`, `no_speech_prob`, ...) are null, never invented.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Strict = ConfigDict(extra="forbid")

ResponseFormat = Literal["json", "text", "srt", "vtt", "verbose_json", "diarized_json"]
LanguageCode = Field(default=None, min_length=2, max_length=8, pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]+)?$")


class SpeakerCounts(BaseModel):
    """Optional hints for the diarization: an exact count, or bounds."""

    num_speakers: int | None = Field(default=None, ge=1, le=64)
    min_speakers: int | None = Field(default=None, ge=1, le=64)
    max_speakers: int | None = Field(default=None, ge=1, le=64)

    @model_validator(mode="after")
    def _consistent(self) -> SpeakerCounts:
        if self.num_speakers is not None and (self.min_speakers is not None or self.max_speakers is not None):
            raise ValueError("give num_speakers, or min_speakers/max_speakers, not both")
        if self.min_speakers is not None and self.max_speakers is not None and self.min_speakers > self.max_speakers:
            raise ValueError("min_speakers must not exceed max_speakers")
        return self


class KnownSpeakerFields(BaseModel):
    """OpenAI's known speakers: names, and a reference clip of each as a data URL (matched in Triton)."""

    known_speaker_names: list[str] = Field(default_factory=list)
    known_speaker_references: list[str] = Field(default_factory=list)


class TranscriptionForm(SpeakerCounts, KnownSpeakerFields):
    """`POST /v1/audio/transcriptions` (and, with `task="translate"`, `/v1/audio/translations`)."""

    model_config = Strict
    model: str = Field(min_length=1)
    language: str | None = LanguageCode
    # Not in OpenAI's form: the language to translate into (any→any where Canary supports it).
    target_language: str | None = LanguageCode
    # Candidate languages: identification picks the most probable of them (one: that one).
    languages: list[str] = Field(default_factory=list, max_length=32)
    prompt: str | None = None  # accepted, ignored: Canary takes no text prompt
    keywords: list[str] = Field(default_factory=list, max_length=256)  # accepted, ignored, as `prompt`
    response_format: ResponseFormat = "json"
    temperature: float | None = Field(default=None, ge=0, le=1)  # accepted, ignored: Canary decodes greedily
    timestamp_granularities: list[Literal["word", "segment"]] = Field(default_factory=list)
    stream: bool = False
    punctuation: bool = True
    # OpenAI fields we cannot honour: declared so that they are refused by name.
    include: list[str] = Field(default_factory=list)
    chunking_strategy: str | None = None


class SeedTranscribeForm(SpeakerCounts, KnownSpeakerFields):
    """`POST /api/audio/transcribe` (the seed's route), with its options."""

    model_config = Strict
    model: str | None = None
    language: str | None = LanguageCode
    target_language: str | None = LanguageCode
    punctuation: bool = True
    timestamps: bool = False
    diarization: bool = False


class SeedDiarizationForm(SpeakerCounts, KnownSpeakerFields):
    """`POST /api/diarization/process` (the seed's route)."""

    model_config = Strict
    model: str | None = None
    rttm: bool = False


class Usage(BaseModel):
    type: Literal["duration"] = "duration"
    seconds: float


class Transcription(BaseModel):
    text: str
    usage: Usage


class Word(BaseModel):
    word: str
    start: float
    end: float


class Segment(BaseModel):
    id: int
    seek: int  # the decoding window's start, in centiseconds (Whisper's unit)
    start: float
    end: float
    text: str
    tokens: list[int] | None = None
    temperature: float | None = None
    avg_logprob: float | None = None
    compression_ratio: float | None = None
    no_speech_prob: float | None = None


class TranscriptionVerbose(BaseModel):
    task: Literal["transcribe", "translate"]
    language: str
    duration: float
    text: str
    segments: list[Segment] | None = None
    words: list[Word] | None = None
    usage: Usage


class DiarizedSegment(BaseModel):
    type: Literal["transcript.text.segment"] = "transcript.text.segment"
    id: str
    start: float
    end: float
    text: str
    speaker: str


class TranscriptionDiarized(BaseModel):
    task: Literal["transcribe"] = "transcribe"
    duration: float
    text: str
    segments: list[DiarizedSegment]
    usage: Usage


class SpeakerTurn(BaseModel):
    speaker: str
    start: float
    end: float


class SeedSegment(BaseModel):
    start: float
    end: float
    text: str
    speaker: str | None = None


class SeedTranscription(BaseModel):
    text: str
    sampling_rate: int
    language: str
    target_language: str
    duration: float
    speech_detected: bool
    segments: list[SeedSegment] | None = None
    words: list[Word] | None = None
    speakers: list[SpeakerTurn] | None = None


class SeedDiarization(BaseModel):
    segments: list[SpeakerTurn]
    speakers: list[str]
    num_speakers: int
    duration: float
    sampling_rate: int
    rttm: str | None = None
