"""Audio routes: OpenAI's `/v1/audio/transcriptions` and `/v1/audio/translations`, and the seed's
`/api/audio/transcribe` and `/api/diarization/process`.

Flow: multipart form → form schema → ffmpeg decode (services.audio) → translator (tensors) →
Triton (services.speech) → response format.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, suppress
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from passerelle.errors import InvalidRequest
from passerelle.schemas.audio import (
    SeedDiarization,
    SeedDiarizationForm,
    SeedSegment,
    SeedTranscribeForm,
    SeedTranscription,
    SpeakerTurn,
    TranscriptionForm,
    Word,
)
from passerelle.services.audio import SAMPLE_RATE, DecodedAudio
from passerelle.services.catalog import ServedModel
from passerelle.state import Services, ServicesDep, require_api_key
from passerelle.translate import audio as translate
from passerelle.translate.audio import Transcript


async def _close_form(request: Request) -> AsyncIterator[None]:
    """Uploads spool to temporary files: close (delete) them when the request is done."""
    try:
        yield
    finally:
        form = getattr(request.state, "form", None)
        if form is not None:
            await form.close()


router = APIRouter(tags=["audio"], dependencies=[Depends(require_api_key), Depends(_close_form)])
Form = TypeVar("Form", bound=BaseModel)

_LIST_FIELDS = {"timestamp_granularities", "include", "known_speaker_names", "known_speaker_references"}


def _form_schema(schema: type[BaseModel]) -> dict[str, Any]:
    properties = {"file": {"type": "string", "format": "binary"}, **schema.model_json_schema().get("properties", {})}
    required = ["file", *schema.model_json_schema().get("required", [])]
    schema_body = {"type": "object", "properties": properties, "required": required}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema_body}}}}


def _list_items(value: str) -> list[str]:
    """One value of a list field: `word`, or a JSON array `["word", "segment"]` as some clients send."""
    if value.lstrip().startswith("["):
        with suppress(ValueError):
            parsed = json.loads(value)
            if isinstance(parsed, list) and all(isinstance(item, str) for item in parsed):
                return parsed
    return [value]


async def _read_form(request: Request, schema: type[Form]) -> tuple[Form, UploadFile]:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidRequest("Audio requests must be multipart/form-data, with the audio in the 'file' field.", code="invalid_content_type")
    form = request.state.form = await request.form(max_files=1, max_fields=64)
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise InvalidRequest("The 'file' field is required and must be a file upload.", param="file", code="missing_file")
    fields: dict[str, Any] = {}
    for key in set(form.keys()) - {"file"}:
        name = key.removesuffix("[]")
        values = [value for value in form.getlist(key) if isinstance(value, str)]
        if name in _LIST_FIELDS or key.endswith("[]"):
            fields[name] = [*fields.get(name, []), *(item for value in values for item in _list_items(value))]
        elif len(values) != 1:
            raise InvalidRequest(f"The field '{key}' must be given once, as text.", param=key, code="invalid_value")
        else:
            fields[name] = values[0]
    try:
        return schema.model_validate(fields), upload
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from exc


def _decoded(services: Services, upload: UploadFile) -> AbstractAsyncContextManager[DecodedAudio]:
    return services.audio.decoded(upload.file, upload.size or 0)


def _language(value: str | None, default: str, param: str) -> str:
    code = translate.language_code(value or default)
    if code is None:
        supported = ", ".join(sorted(translate.LANGUAGES))
        message = f"Language '{value}' is not supported by Canary. Supported: {supported}."
        raise InvalidRequest(message, param=param, code="unsupported_language")
    return code


def _headers(audio: DecodedAudio, transcript: Transcript | None = None) -> dict[str, str]:
    """Timings (Server-Timing, milliseconds), the decoded duration and, for transcripts, whether any speech was found."""
    inference = transcript.model_seconds if transcript is not None else 0.0
    headers = {
        "Server-Timing": f"decode;dur={audio.decode_s * 1000:.1f}, inference;dur={inference * 1000:.1f}",
        "X-Audio-Duration": f"{audio.duration_s:.3f}",
    }
    if transcript is not None:
        headers["X-Speech-Detected"] = "true" if transcript.speech_detected else "false"
    return headers


def _reject_unsupported(form: TranscriptionForm, *, task: str) -> None:
    if form.stream:
        raise InvalidRequest("Streaming transcription is not supported; send stream=false.", param="stream", code="unsupported_value")
    if form.include:
        raise InvalidRequest("'include' (logprobs) is not supported by Canary.", param="include", code="unsupported_value")
    if form.chunking_strategy not in (None, "auto"):
        raise InvalidRequest(
            "Only chunking_strategy='auto' is supported: long audio is always split at silences found by silero-vad.",
            param="chunking_strategy",
            code="unsupported_value",
        )
    if form.known_speaker_names or form.known_speaker_references:
        message = "Known speakers are not supported; speakers are labelled by the diarization."
        raise InvalidRequest(message, param="known_speaker_names", code="unsupported_value")
    if form.timestamp_granularities and form.response_format != "verbose_json":
        raise InvalidRequest(
            "timestamp_granularities requires response_format=verbose_json.", param="timestamp_granularities", code="invalid_value"
        )
    if task == "translate" and form.response_format == "diarized_json":
        raise InvalidRequest("diarized_json is only available for transcriptions.", param="response_format", code="invalid_value")
    has_speaker_hints = form.num_speakers or form.min_speakers or form.max_speakers
    if has_speaker_hints and form.response_format != "diarized_json":
        raise InvalidRequest("Speaker counts apply to response_format=diarized_json only.", param="num_speakers", code="invalid_value")


async def _openai_audio(request: Request, services: Services, *, task: str) -> Response:
    form, upload = await _read_form(request, TranscriptionForm)
    _reject_unsupported(form, task=task)
    model = services.model(form.model, task="transcription")
    request.state.model = model.key
    default_source = services.settings.default_audio_language
    source = _language(form.language, default_source, "language")
    target = _language(form.target_language, "en" if task == "translate" else source, "target_language")
    if task == "translate" and source == target:
        raise InvalidRequest(
            f"Canary cannot detect the spoken language, and the source language ('{source}') is the target. "
            "Name the source language with the 'language' field (the OpenAI SDK: extra_body={'language': 'de'}).",
            param="language",
            code="missing_source_language",
        )
    fmt = form.response_format
    pipeline = _pipeline(services, model) if fmt == "diarized_json" else None
    async with _decoded(services, upload) as audio:
        timestamps = fmt in ("srt", "vtt", "verbose_json")
        transcript = await _transcript(services, model, pipeline, audio, source, target, form, timestamps=timestamps)
    headers = _headers(audio, transcript)
    # verbose_json reports the language of its text: the spoken one, or the one it was translated into.
    return _format(transcript, fmt, form, task="translate" if target != source else task, language=target, headers=headers)


def _pipeline(services: Services, model: ServedModel) -> ServedModel:
    pipeline = services.catalog.speaker_pipeline(model.key)
    if pipeline is None:
        raise InvalidRequest(
            f"diarized_json needs a speaker_transcription pipeline for '{model.key}' in the model repository.",
            param="response_format",
            code="unsupported_value",
        )
    return pipeline


async def _transcript(
    services: Services,
    model: ServedModel,
    pipeline: ServedModel | None,
    audio: DecodedAudio,
    source: str,
    target: str,
    form: TranscriptionForm | SeedTranscribeForm,
    *,
    timestamps: bool,
) -> Transcript:
    """Canary alone, or, with a speaker pipeline, the speaker-attributed transcript (always timed)."""
    if pipeline is None:
        return await services.speech.transcribe(model.key, audio, source, target, punctuation=form.punctuation, timestamps=timestamps)
    parts = [model.key, pipeline.parameters.get("diarization_model", "")]
    return await services.speech.speaker_transcribe(pipeline.key, parts, audio, source, target, punctuation=form.punctuation, counts=form)


def _format(transcript: Transcript, fmt: str, form: TranscriptionForm, *, task: str, language: str, headers: dict[str, str]) -> Response:
    if fmt == "text":
        return PlainTextResponse(transcript.text, headers=headers)
    if fmt == "srt":
        return PlainTextResponse(translate.as_srt(transcript), headers=headers)
    if fmt == "vtt":
        return PlainTextResponse(translate.as_vtt(transcript), media_type="text/vtt", headers=headers)
    body: BaseModel
    if fmt == "verbose_json":
        granularities = set(form.timestamp_granularities) or {"segment"}
        words, segments = "word" in granularities, "segment" in granularities
        body = translate.as_verbose(transcript, task=task, language=language, words=words, segments=segments)
    elif fmt == "diarized_json":
        body = translate.as_diarized(transcript)
    else:
        body = translate.as_json(transcript)
    return JSONResponse(body.model_dump(mode="json", exclude_none=fmt != "verbose_json"), headers=headers)


@router.post("/v1/audio/transcriptions", operation_id="create_transcription", openapi_extra=_form_schema(TranscriptionForm))
async def create_transcription(request: Request, services: ServicesDep) -> Response:
    return await _openai_audio(request, services, task="transcribe")


@router.post("/v1/audio/translations", operation_id="create_translation", openapi_extra=_form_schema(TranscriptionForm))
async def create_translation(request: Request, services: ServicesDep) -> Response:
    return await _openai_audio(request, services, task="translate")


def _default_model(services: Services, name: str | None, task: str) -> ServedModel:
    if name:
        return services.model(name, task=task)
    model = services.catalog.first(task)
    if model is None:
        return services.model(task, task=task)  # raises the usual "does not exist" error
    return model


@router.post(
    "/api/audio/transcribe",
    operation_id="seed_transcribe",
    response_model=SeedTranscription,
    openapi_extra=_form_schema(SeedTranscribeForm),
)
async def seed_transcribe(request: Request, services: ServicesDep) -> JSONResponse:
    form, upload = await _read_form(request, SeedTranscribeForm)
    model = _default_model(services, form.model, "transcription")
    request.state.model = model.key
    source = _language(form.language, services.settings.default_audio_language, "language")
    target = _language(form.target_language, source, "target_language")
    if (form.num_speakers or form.min_speakers or form.max_speakers) and not form.diarization:
        raise InvalidRequest("Speaker counts need diarization=true.", param="num_speakers", code="invalid_value")
    pipeline = _pipeline(services, model) if form.diarization else None
    async with _decoded(services, upload) as audio:
        transcript = await _transcript(services, model, pipeline, audio, source, target, form, timestamps=form.timestamps)
    detailed = form.timestamps or form.diarization
    body = SeedTranscription(
        text=transcript.text,
        sampling_rate=SAMPLE_RATE,
        language=source,
        target_language=target,
        duration=transcript.duration,
        speech_detected=transcript.speech_detected,
        segments=[SeedSegment(start=s.start, end=s.end, text=s.text, speaker=s.speaker) for s in transcript.segments] if detailed else None,
        words=[Word(word=w.text, start=w.start, end=w.end) for w in transcript.words] if detailed else None,
        speakers=[SpeakerTurn(speaker=t.speaker or "", start=t.start, end=t.end) for t in transcript.turns] if form.diarization else None,
    )
    return JSONResponse(body.model_dump(mode="json", exclude_none=True), headers=_headers(audio, transcript))


@router.post(
    "/api/diarization/process", operation_id="seed_diarize", response_model=SeedDiarization, openapi_extra=_form_schema(SeedDiarizationForm)
)
async def seed_diarize(request: Request, services: ServicesDep) -> JSONResponse:
    form, upload = await _read_form(request, SeedDiarizationForm)
    model = _default_model(services, form.model, "diarization")
    request.state.model = model.key
    async with _decoded(services, upload) as audio:
        diarization = await services.speech.diarize(model.key, audio, form)
    body = SeedDiarization(
        segments=translate.turns(diarization),
        speakers=diarization.speakers,
        num_speakers=len(diarization.speakers),
        duration=diarization.duration,
        sampling_rate=SAMPLE_RATE,
        rttm=diarization.rttm if form.rttm else None,
    )
    return JSONResponse(body.model_dump(mode="json", exclude_none=True), headers=_headers(audio))
