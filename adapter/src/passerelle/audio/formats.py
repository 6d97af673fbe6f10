"""Recognised speech → the response formats: OpenAI's json, text, srt, vtt, verbose_json and
diarized_json, its streamed transcript events, and the seed's shapes; with the timing headers
every audio answer carries."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from contextlib import aclosing

from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel

from passerelle.audio.decoding import SAMPLE_RATE, DecodedAudio
from passerelle.audio.languages import LANGUAGES
from passerelle.audio.protocol import (
    DiarizedSegment,
    SeedDiarization,
    SeedSegment,
    SeedTranscription,
    Segment,
    SpeakerTurn,
    Transcription,
    TranscriptionDiarized,
    TranscriptionForm,
    TranscriptionVerbose,
    Usage,
    Word,
)
from passerelle.audio.tensors import Diarization, RecognizedSpeech, TranscriptWindow


def _usage(speech: RecognizedSpeech) -> Usage:
    return Usage(seconds=round(speech.duration, 3))


def _seek(chunks: list[tuple[float, float]], start: float) -> int:
    window = next((chunk_start for chunk_start, chunk_end in chunks if chunk_start <= start < chunk_end), 0.0)
    return round(window * 100)


def as_json(speech: RecognizedSpeech) -> Transcription:
    return Transcription(text=speech.text, usage=_usage(speech))


def as_verbose(speech: RecognizedSpeech, *, task: str, language: str, words: bool, segments: bool) -> TranscriptionVerbose:
    return TranscriptionVerbose(
        task="translate" if task == "translate" else "transcribe",
        language=LANGUAGES.get(language, language),
        duration=speech.duration,
        text=speech.text,
        segments=[
            Segment(id=index, seek=_seek(speech.chunks, span.start), start=span.start, end=span.end, text=span.text)
            for index, span in enumerate(speech.segments)
        ]
        if segments
        else None,
        words=[Word(word=span.text, start=span.start, end=span.end) for span in speech.words] if words else None,
        usage=_usage(speech),
    )


def as_diarized(speech: RecognizedSpeech) -> TranscriptionDiarized:
    return TranscriptionDiarized(
        duration=speech.duration,
        text=speech.text,
        segments=[
            DiarizedSegment(id=f"seg_{index}", start=span.start, end=span.end, text=span.text, speaker=span.speaker or "unknown")
            for index, span in enumerate(speech.segments)
        ],
        usage=_usage(speech),
    )


def _clock(seconds: float, separator: str) -> str:
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def as_srt(speech: RecognizedSpeech) -> str:
    blocks = [
        f"{index}\n{_clock(span.start, ',')} --> {_clock(span.end, ',')}\n{span.text.strip()}\n"
        for index, span in enumerate(speech.segments, start=1)
    ]
    return "\n".join(blocks)


def as_vtt(speech: RecognizedSpeech) -> str:
    blocks = [f"{_clock(span.start, '.')} --> {_clock(span.end, '.')}\n{span.text.strip()}\n" for span in speech.segments]
    return "WEBVTT\n\n" + "\n".join(blocks)


def turns(diarization: Diarization) -> list[SpeakerTurn]:
    return [SpeakerTurn(speaker=span.speaker or "", start=span.start, end=span.end) for span in diarization.turns]


def timing_headers(audio: DecodedAudio, speech: RecognizedSpeech | None = None) -> dict[str, str]:
    """Timings (Server-Timing, milliseconds), the decoded duration and, for recognised speech, whether any was found."""
    inference = speech.model_seconds if speech is not None else 0.0
    headers = {
        "Server-Timing": f"decode;dur={audio.decode_s * 1000:.1f}, inference;dur={inference * 1000:.1f}",
        "X-Audio-Duration": f"{audio.duration_s:.3f}",
    }
    if speech is not None:
        headers["X-Speech-Detected"] = "true" if speech.speech_detected else "false"
    return headers


def openai_response(speech: RecognizedSpeech, form: TranscriptionForm, *, task: str, language: str, headers: dict[str, str]) -> Response:
    """`/v1/audio/*` in the form's `response_format`."""
    fmt = form.response_format
    if fmt == "text":
        return PlainTextResponse(speech.text, headers=headers)
    if fmt == "srt":
        return PlainTextResponse(as_srt(speech), headers=headers)
    if fmt == "vtt":
        return PlainTextResponse(as_vtt(speech), media_type="text/vtt", headers=headers)
    body: BaseModel
    if fmt == "verbose_json":
        granularities = set(form.timestamp_granularities) or {"segment"}
        body = as_verbose(speech, task=task, language=language, words="word" in granularities, segments="segment" in granularities)
    elif fmt == "diarized_json":
        body = as_diarized(speech)
    else:
        body = as_json(speech)
    return JSONResponse(body.model_dump(mode="json", exclude_none=fmt != "verbose_json"), headers=headers)


def seed_transcription(speech: RecognizedSpeech, *, source: str, target: str, detailed: bool, diarized: bool) -> SeedTranscription:
    return SeedTranscription(
        text=speech.text,
        sampling_rate=SAMPLE_RATE,
        language=source,
        target_language=target,
        duration=speech.duration,
        speech_detected=speech.speech_detected,
        segments=[SeedSegment(start=s.start, end=s.end, text=s.text, speaker=s.speaker) for s in speech.segments] if detailed else None,
        words=[Word(word=w.text, start=w.start, end=w.end) for w in speech.words] if detailed else None,
        speakers=[SpeakerTurn(speaker=t.speaker or "", start=t.start, end=t.end) for t in speech.turns] if diarized else None,
    )


def seed_diarization(diarization: Diarization, *, rttm: bool) -> SeedDiarization:
    return SeedDiarization(
        segments=turns(diarization),
        speakers=diarization.speakers,
        num_speakers=len(diarization.speakers),
        duration=diarization.duration,
        sampling_rate=SAMPLE_RATE,
        rttm=diarization.rttm if rttm else None,
    )


async def transcript_events(windows: AsyncGenerator[TranscriptWindow], *, diarized: bool = False) -> AsyncGenerator[str]:
    """OpenAI's streamed transcription events: a `transcript.text.delta` per decoded window (its text,
    after a space when text came before), then `transcript.text.done` with the whole text, which is
    what the same request answers unstreamed, and the duration as usage. Diarized, each of a
    window's speaker segments is a delta carrying its `segment_id`, then its
    `transcript.text.segment` event; the `done` text is the segments' texts joined."""
    texts: list[str] = []
    duration = 0.0
    segments = 0
    async with aclosing(windows):
        async for window in windows:
            duration = window.duration
            if window.count == 0:
                continue
            if not diarized:
                yield _delta(window.text, texts)
                continue
            for span in window.segments:
                segment_id = f"seg_{segments}"
                segments += 1
                yield _delta(span.text, texts, segment_id=segment_id)
                segment = {"id": segment_id, "start": span.start, "end": span.end, "speaker": span.speaker or "", "text": span.text}
                yield json.dumps({"type": "transcript.text.segment", **segment}, ensure_ascii=False)
    done = {"type": "transcript.text.done", "text": " ".join(texts), "usage": Usage(seconds=round(duration, 3)).model_dump()}
    yield json.dumps(done, ensure_ascii=False)


def _delta(text: str, texts: list[str], **extra: str) -> str:
    delta = f" {text}" if texts and text else text
    if text:
        texts.append(text)
    return json.dumps({"type": "transcript.text.delta", "delta": delta, **extra}, ensure_ascii=False)
