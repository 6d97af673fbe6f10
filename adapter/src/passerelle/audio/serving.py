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
from passerelle.audio.languages import language_code, require_identified, require_language
from passerelle.audio.protocol import KnownSpeakerFields, SeedDiarizationForm, SeedTranscribeForm, TranscriptionForm
from passerelle.audio.speakers import check_names, read_known_speakers
from passerelle.audio.tensors import KnownSpeakers, RecognizedSpeech, TranscriptWindow
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
    if (form.known_speaker_names or form.known_speaker_references) and form.response_format != "diarized_json":
        raise InvalidRequest(
            "known_speaker_names and known_speaker_references apply to response_format=diarized_json only.",
            param="known_speaker_names",
            code="invalid_value",
        )
    check_names(form.known_speaker_names, form.known_speaker_references)
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
        for candidate in getattr(form, "languages", []):
            require_language(candidate, "languages")

    async def _languages(self, audio: DecodedAudio, form: Languages, *, task: str) -> tuple[str, str]:
        """(source, target): the named source language (or the only candidate of `languages`), else the
        configured default, else the one the language-identification model hears in a few speech
        windows (the most probable candidate, with `languages`); the target defaults to English for
        translations and to the source otherwise."""
        candidates = sorted({require_language(candidate, "languages") for candidate in getattr(form, "languages", [])})
        if form.language:
            source = require_language(form.language, "language")
        elif len(candidates) == 1:
            source = candidates[0]
        elif self.default_language and not candidates:
            source = self.default_language
        else:
            source = await self._identify(audio, candidates)
        if form.target_language:
            return source, require_language(form.target_language, "target_language")
        return source, "en" if task == "translate" else source

    def _shares_memory(self, models: list[str]) -> bool:
        """Whether the PCM may go to Triton as shared memory: every model that may receive it (the
        language identifier included) is on a Triton of this host with a single replica."""
        identifier = self.catalog.language_identifier()
        receivers = [*models, *([identifier.key] if identifier is not None else [])]
        return all(self.speech.triton.shares_memory(model) for model in receivers if model)

    async def _identify(self, audio: DecodedAudio, candidates: list[str]) -> str:
        model = self.catalog.language_identifier()
        if model is None:
            raise InvalidRequest(
                "No language was named, and the model repository has no language_identification model to identify it. "
                "Name the spoken language with the 'language' field (the OpenAI SDK: extra_body={'language': 'de'} for translations).",
                param="language",
                code="missing_language",
            )
        heard = await self.speech.identify_language(model.key, audio)
        if not heard.language:  # no speech at all: nothing will be transcribed, in whatever language
            return candidates[0] if candidates else "en"
        if candidates:
            scores = {code: p for label, p in heard.probabilities.items() if (code := language_code(label)) in candidates}
            return max(candidates, key=lambda code: scores.get(code, 0.0))  # ties: the first candidate
        return require_identified(heard.language, heard.probability)

    async def _known_speakers(self, form: KnownSpeakerFields, diarizer: str) -> KnownSpeakers | None:
        """The reference clips, decoded and checked against the diarization model's limits."""
        model = self.catalog.resolve(diarizer)
        parameters = model.parameters if model is not None else {}
        return await read_known_speakers(
            form.known_speaker_names,
            form.known_speaker_references,
            self.decoder,
            min_seconds=float(parameters.get("known_speaker_min_seconds") or 1.0),
            max_seconds=float(parameters.get("known_speaker_max_seconds") or 10.0),
        )

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
        diarizer = pipeline.parameters.get("diarization_model", "") if pipeline is not None else ""
        known = await self._known_speakers(form, diarizer) if pipeline is not None else None
        receivers = [model.key] if pipeline is None else [pipeline.key, model.key, diarizer]
        async with self.decoder.decoded(upload.file, upload.size or 0, shared_memory=self._shares_memory(receivers)) as audio:
            source, target = await self._languages(audio, form, task=task)
            if pipeline is None:
                speech = await self.speech.transcribe(model.key, audio, source, target, punctuation=form.punctuation, timestamps=timestamps)
            else:
                speech = await self.speech.speaker_transcribe(
                    pipeline.key, [model.key, diarizer], audio, source, target, punctuation=form.punctuation, counts=form, known=known
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
        diarizer = streamer.parameters.get("diarization_model", "pyannote")
        needs = [model.key, *([diarizer] if diarized else []), streamer.key]
        known = await self._known_speakers(form, diarizer) if diarized else None

        async def windows() -> AsyncGenerator[TranscriptWindow]:
            async with self.decoder.decoded(upload.file, upload.size or 0, shared_memory=self._shares_memory(needs)) as audio:
                source, target = await self._languages(audio, form, task="transcribe")
                stream = self.speech.transcribe_stream(
                    needs,
                    audio,
                    source,
                    target,
                    punctuation=form.punctuation,
                    diarize=form if diarized else None,
                    known=known,
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
        if (form.known_speaker_names or form.known_speaker_references) and not form.diarization:
            raise InvalidRequest("Known speakers need diarization=true.", param="known_speaker_names", code="invalid_value")
        check_names(form.known_speaker_names, form.known_speaker_references)
        pipeline = self._pipeline(model) if form.diarization else None
        speech, source, target, headers = await self._recognize(
            upload, model, pipeline, form, task="transcribe", timestamps=form.timestamps
        )
        detailed = form.timestamps or form.diarization
        body = formats.seed_transcription(speech, source=source, target=target, detailed=detailed, diarized=form.diarization)
        return JSONResponse(body.model_dump(mode="json", exclude_none=True), headers=headers)

    async def seed_diarize(self, request: Request) -> JSONResponse:
        form, upload = await read_form(request, SeedDiarizationForm)
        check_names(form.known_speaker_names, form.known_speaker_references)
        model = self._model(form.model, "diarization")
        request.state.model = model.key
        known = await self._known_speakers(form, model.key)
        async with self.decoder.decoded(upload.file, upload.size or 0, shared_memory=self._shares_memory([model.key])) as audio:
            diarization = await self.speech.diarize(model.key, audio, form, known)
        body = formats.seed_diarization(diarization, rttm=form.rttm)
        return JSONResponse(body.model_dump(mode="json", exclude_none=True), headers=formats.timing_headers(audio))


async def get_audio_serving(request: Request) -> AudioServing:
    serving: AudioServing = request.app.state.audio
    return serving


AudioServingDep = Annotated[AudioServing, Depends(get_audio_serving)]
