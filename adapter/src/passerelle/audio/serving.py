"""Audio: prepare (form, languages, models) → run (ffmpeg decode, language identification when no
language is named, then Triton) → format → errors, for OpenAI's `/v1/audio/transcriptions` and
`/v1/audio/translations` and the seed's `/api/audio/transcribe` and `/api/diarization/process`."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile

from passerelle.audio import formats
from passerelle.audio.decoding import AudioDecoder, DecodedAudio
from passerelle.audio.forms import read_form
from passerelle.audio.inference import SpeechService
from passerelle.audio.languages import require_identified, require_language
from passerelle.audio.protocol import SeedDiarizationForm, SeedTranscribeForm, TranscriptionForm
from passerelle.audio.tensors import RecognizedSpeech, TranscriptWindow
from passerelle.core.catalog import Catalog, ServedModel
from passerelle.core.errors import APIError, InvalidRequest, TritonFailure
from passerelle.core.streaming import primed, sse_response


def reject_unsupported(form: TranscriptionForm, *, task: str) -> None:
    if form.stream and task == "translate":
        raise InvalidRequest("Translations are not streamed (as OpenAI's); send stream=false.", param="stream", code="unsupported_value")
    if form.stream and form.response_format not in ("json", "text", "diarized_json"):
        raise InvalidRequest(
            f"stream=true takes response_format json or text; {form.response_format} is not streamed yet.",
            param="response_format",
            code="unsupported_value",
        )
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


Languages = TranscriptionForm | SeedTranscribeForm


class AudioServing:
    def __init__(self, catalog: Catalog, decoder: AudioDecoder, speech: SpeechService, default_language: str | None) -> None:
        self.catalog = catalog
        self.decoder = decoder
        self.speech = speech
        self.default_language = require_language(default_language, "default_audio_language") if default_language else None

    def _check_languages(self, form: Languages) -> None:
        """Named languages are checked before the upload is decoded."""
        if form.language:
            require_language(form.language, "language")
        if form.target_language:
            require_language(form.target_language, "target_language")

    async def _languages(self, audio: DecodedAudio, form: Languages, *, task: str) -> tuple[str, str]:
        """(source, target): the named source language, else the configured default, else the one the
        language-identification model hears in a few speech windows; the target defaults to English
        for translations and to the source otherwise."""
        if form.language:
            source = require_language(form.language, "language")
        elif self.default_language:
            source = self.default_language
        else:
            source = await self._identify(audio)
        if form.target_language:
            return source, require_language(form.target_language, "target_language")
        return source, "en" if task == "translate" else source

    async def _identify(self, audio: DecodedAudio) -> str:
        model = self.catalog.language_identifier()
        if model is None:
            raise InvalidRequest(
                "No language was named, and the model repository has no language_identification model to identify it. "
                "Name the spoken language with the 'language' field (the OpenAI SDK: extra_body={'language': 'de'} for translations).",
                param="language",
                code="missing_language",
            )
        heard = await self.speech.identify_language(model.key, audio)
        # No speech at all: nothing will be transcribed, in whatever language.
        return require_identified(heard.language, heard.probability) if heard.language else "en"

    def _model(self, name: str | None, task: str) -> ServedModel:
        """The named model, or the repository's first one for `task` (the seed's routes name none)."""
        if not name:
            model = self.catalog.first(task)
            if model is not None:
                return model
        return self.catalog.require(name or task, task=task)

    def _pipeline(self, model: ServedModel) -> ServedModel:
        pipeline = self.catalog.speaker_pipeline(model.key)
        if pipeline is None:
            raise InvalidRequest(
                f"diarized_json needs a speaker_transcription pipeline for '{model.key}' in the model repository.",
                param="response_format",
                code="unsupported_value",
            )
        return pipeline

    async def _recognize(
        self,
        upload: UploadFile,
        model: ServedModel,
        pipeline: ServedModel | None,
        form: Languages,
        *,
        task: str,
        timestamps: bool,
    ) -> tuple[RecognizedSpeech, str, str, dict[str, str]]:
        """Canary alone, or, with a speaker pipeline, the speaker-attributed transcript (always timed);
        with the source and target languages it ran with."""
        async with self.decoder.decoded(upload.file, upload.size or 0) as audio:
            source, target = await self._languages(audio, form, task=task)
            if pipeline is None:
                speech = await self.speech.transcribe(model.key, audio, source, target, punctuation=form.punctuation, timestamps=timestamps)
            else:
                parts = [model.key, pipeline.parameters.get("diarization_model", "")]
                speech = await self.speech.speaker_transcribe(
                    pipeline.key, parts, audio, source, target, punctuation=form.punctuation, counts=form
                )
        return speech, source, target, formats.timing_headers(audio, speech)

    async def openai(self, request: Request, *, task: str) -> Response:
        form, upload = await read_form(request, TranscriptionForm)
        reject_unsupported(form, task=task)
        self._check_languages(form)
        model = self._model(form.model, "transcription")
        request.state.model = model.key
        if form.stream:
            return await self._stream(request, form, upload, model)
        pipeline = self._pipeline(model) if form.response_format == "diarized_json" else None
        timestamps = form.response_format in ("srt", "vtt", "verbose_json")
        speech, source, target, headers = await self._recognize(upload, model, pipeline, form, task=task, timestamps=timestamps)
        # verbose_json reports the language of its text: the spoken one, or the one it was translated into.
        return formats.openai_response(speech, form, task="translate" if target != source else task, language=target, headers=headers)

    async def _stream(self, request: Request, form: TranscriptionForm, upload: UploadFile, model: ServedModel) -> Response:
        """SSE: a delta per speech window as `canary_stream` decodes it (with diarization: a delta and a
        segment per speaker segment of the window, after diarizing the whole file), then the whole
        text. Errors before the first window (the upload, the models) are HTTP errors; a client that
        leaves cancels the windows not yet decoded."""
        streamer = self.catalog.transcript_stream(model.key)
        if streamer is None:
            message = f"stream=true needs a transcription_stream model for '{model.key}' in the model repository."
            raise InvalidRequest(message, param="stream", code="unsupported_value")

        diarized = form.response_format == "diarized_json"
        needs = [model.key, *([streamer.parameters.get("diarization_model", "pyannote")] if diarized else []), streamer.key]

        async def windows() -> AsyncGenerator[TranscriptWindow]:
            async with self.decoder.decoded(upload.file, upload.size or 0) as audio:
                source, target = await self._languages(audio, form, task="transcribe")
                stream = self.speech.transcribe_stream(
                    needs,
                    audio,
                    source,
                    target,
                    punctuation=form.punctuation,
                    diarize=form if diarized else None,
                    request_id=request.state.request_id,
                )
                async with aclosing(stream):
                    async for window in stream:
                        yield window

        def to_error(failure: TritonFailure) -> APIError:
            return self.speech.control.api_error(failure, streamer.key)

        events = formats.transcript_events(await primed(windows(), to_error), diarized=diarized)
        return sse_response(events, to_error, end=None)

    async def seed_transcribe(self, request: Request) -> JSONResponse:
        form, upload = await read_form(request, SeedTranscribeForm)
        self._check_languages(form)
        model = self._model(form.model, "transcription")
        request.state.model = model.key
        if (form.num_speakers or form.min_speakers or form.max_speakers) and not form.diarization:
            raise InvalidRequest("Speaker counts need diarization=true.", param="num_speakers", code="invalid_value")
        pipeline = self._pipeline(model) if form.diarization else None
        speech, source, target, headers = await self._recognize(
            upload, model, pipeline, form, task="transcribe", timestamps=form.timestamps
        )
        detailed = form.timestamps or form.diarization
        body = formats.seed_transcription(speech, source=source, target=target, detailed=detailed, diarized=form.diarization)
        return JSONResponse(body.model_dump(mode="json", exclude_none=True), headers=headers)

    async def seed_diarize(self, request: Request) -> JSONResponse:
        form, upload = await read_form(request, SeedDiarizationForm)
        model = self._model(form.model, "diarization")
        request.state.model = model.key
        async with self.decoder.decoded(upload.file, upload.size or 0) as audio:
            diarization = await self.speech.diarize(model.key, audio, form)
        body = formats.seed_diarization(diarization, rttm=form.rttm)
        return JSONResponse(body.model_dump(mode="json", exclude_none=True), headers=formats.timing_headers(audio))


async def get_audio_serving(request: Request) -> AudioServing:
    serving: AudioServing = request.app.state.audio
    return serving


AudioServingDep = Annotated[AudioServing, Depends(get_audio_serving)]
