"""OpenAI's `/v1/audio/transcriptions` and `/v1/audio/translations`, and the seed's
`/api/audio/transcribe` and `/api/diarization/process` (multipart forms, see `audio/forms.py`)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from passerelle.audio.forms import close_form, form_schema
from passerelle.audio.protocol import SeedDiarization, SeedDiarizationForm, SeedTranscribeForm, SeedTranscription, TranscriptionForm
from passerelle.audio.serving import AudioServingDep
from passerelle.core.errors import ERROR_RESPONSES
from passerelle.core.security import require_api_key

router = APIRouter(tags=["audio"], dependencies=[Depends(require_api_key), Depends(close_form)], responses=ERROR_RESPONSES)
# The routes that take an upload: only these get MAX_AUDIO_UPLOAD_BYTES (others, MAX_REQUEST_BODY_BYTES).
UPLOAD_PATHS = frozenset({"/v1/audio/transcriptions", "/v1/audio/translations", "/api/audio/transcribe", "/api/diarization/process"})


@router.post("/v1/audio/transcriptions", operation_id="create_transcription", openapi_extra=form_schema(TranscriptionForm))
async def create_transcription(request: Request, audio: AudioServingDep) -> Response:
    return await audio.openai(request, task="transcribe")


@router.post("/v1/audio/translations", operation_id="create_translation", openapi_extra=form_schema(TranscriptionForm))
async def create_translation(request: Request, audio: AudioServingDep) -> Response:
    return await audio.openai(request, task="translate")


@router.post(
    "/api/audio/transcribe", operation_id="seed_transcribe", response_model=SeedTranscription, openapi_extra=form_schema(SeedTranscribeForm)
)
async def seed_transcribe(request: Request, audio: AudioServingDep) -> JSONResponse:
    return await audio.seed_transcribe(request)


@router.post(
    "/api/diarization/process", operation_id="seed_diarize", response_model=SeedDiarization, openapi_extra=form_schema(SeedDiarizationForm)
)
async def seed_diarize(request: Request, audio: AudioServingDep) -> JSONResponse:
    return await audio.seed_diarize(request)
