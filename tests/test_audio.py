"""Audio through the whole stack: real ffmpeg, real Triton, NeMo Canary and pyannote on tiny random
weights. The words are gibberish, so the tests check structure, timing consistency and errors."""

from __future__ import annotations

import itertools
import json
import queue
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import httpx
import numpy as np
import openai
import pytest
import tritonclient.grpc as grpcclient

from conftest import API_KEYS, Triton, infer, metric_value, png_bytes, triton_metrics
from passerelle_stack.launcher import Stack, free_port
from speech import SpeechSet

AUTH = {"Authorization": f"Bearer {API_KEYS[0]}"}
# How far a timestamp may stray outside the audio (rounding to milliseconds).
EPSILON_S = 0.01
# silero-vad on the same 16 kHz PCM, run independently of the server (Triton's Python has it).
VAD_SCRIPT = """
import json, sys, numpy, soundfile, torch
from silero_vad import get_speech_timestamps, load_silero_vad
torch.set_num_threads(1)
pcm, rate = soundfile.read(sys.argv[1], dtype="float32")
regions = get_speech_timestamps(torch.from_numpy(pcm), load_silero_vad(), sampling_rate=rate, return_seconds=True)
print(json.dumps([[r["start"], r["end"]] for r in regions]))
"""


@pytest.fixture(scope="session")
def vad_regions(stack: Stack) -> Iterator[Callable[[Path], list[tuple[float, float]]]]:
    cache: dict[Path, list[tuple[float, float]]] = {}

    def regions(path: Path) -> list[tuple[float, float]]:
        if path not in cache:
            out = subprocess.run(
                [str(stack.env_dir / "bin" / "python"), "-c", VAD_SCRIPT, str(path)], check=True, capture_output=True, text=True
            ).stdout
            cache[path] = [(start, end) for start, end in json.loads(out.strip().splitlines()[-1])]
        return cache[path]

    yield regions


def pcm16k(path: Path) -> np.ndarray:
    command = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-ac", "1", "-ar", "16000", "-f", "f32le", "-"]
    raw = subprocess.run(command, check=True, capture_output=True).stdout
    return np.frombuffer(raw, dtype=np.float32)


def upload(path: Path, name: str | None = None, mime: str = "application/octet-stream") -> dict[str, tuple[str, bytes, str]]:
    return {"file": (name or path.name, path.read_bytes(), mime)}


def assert_spans(spans: list[dict[str, float]], duration: float) -> None:
    """Each span within the audio, ordered by start, none ending before it starts."""
    starts = [span["start"] for span in spans]
    assert starts == sorted(starts), starts
    for span in spans:
        assert -EPSILON_S <= span["start"] <= span["end"] <= duration + EPSILON_S, (span, duration)


def covered(region: tuple[float, float], spans: list[tuple[float, float]]) -> float:
    start, end = region
    shared = sum(max(0.0, min(end, b) - max(start, a)) for a, b in spans)
    return shared / (end - start)


# OpenAI SDK ---------------------------------------------------------------------------------


def test_models_list_the_audio_models(client: openai.OpenAI) -> None:
    tasks = {model.id: model.model_extra.get("task") for model in client.models.list().data}  # type: ignore[union-attr]
    assert tasks["canary"] == "transcription" and tasks["pyannote"] == "diarization"
    assert tasks["speaker_transcript"] == "speaker_transcription" and tasks["qwen"] == "chat"
    assert tasks["langid"] == "language_identification" and tasks["canary_stream"] == "transcription_stream"


def test_transcription_json(client: openai.OpenAI, speech: SpeechSet) -> None:
    with speech.dialogue.open("rb") as audio:
        result = client.audio.transcriptions.create(model="canary", file=audio)
    assert isinstance(result.text, str)
    usage = result.model_dump()["usage"]
    assert usage["type"] == "duration" and usage["seconds"] == pytest.approx(speech.dialogue_s, abs=0.05)


def test_transcription_text(client: openai.OpenAI, speech: SpeechSet) -> None:
    with speech.dialogue.open("rb") as audio:
        text = client.audio.transcriptions.create(model="canary", file=audio, response_format="text")
    assert isinstance(text, str) and not text.lstrip().startswith("{")


def test_transcription_verbose_json_with_words_and_segments(client: openai.OpenAI, speech: SpeechSet) -> None:
    with speech.dialogue.open("rb") as audio:
        result = client.audio.transcriptions.create(
            model="canary", file=audio, response_format="verbose_json", timestamp_granularities=["word", "segment"], language="en"
        )
    body = result.model_dump()
    assert body["task"] == "transcribe" and body["language"] == "english"
    assert body["duration"] == pytest.approx(speech.dialogue_s, abs=0.05)
    assert body["words"] and body["segments"], body
    assert_spans(body["words"], body["duration"])
    assert_spans(body["segments"], body["duration"])
    for index, segment in enumerate(body["segments"]):
        assert segment["id"] == index and segment["seek"] >= 0
        # Canary gives no log-probabilities or no-speech probabilities: null, not invented.
        assert segment["avg_logprob"] is None and segment["no_speech_prob"] is None and segment["compression_ratio"] is None
    assert " ".join(word["word"] for word in body["words"]).split() == body["text"].split()


def test_granularities_as_a_json_array(http: httpx.Client, speech: SpeechSet) -> None:
    data = {"model": "canary", "response_format": "verbose_json", "timestamp_granularities": '["word"]'}
    body = http.post("/v1/audio/transcriptions", data=data, files=upload(speech.dialogue)).json()
    assert body["words"] and body["segments"] is None, body


def test_verbose_json_defaults_to_segments_only(client: openai.OpenAI, speech: SpeechSet) -> None:
    with speech.dialogue.open("rb") as audio:
        body = client.audio.transcriptions.create(model="canary", file=audio, response_format="verbose_json").model_dump()
    assert body["segments"] and body["words"] is None


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_subtitles(client: openai.OpenAI, speech: SpeechSet, fmt: Literal["srt", "vtt"]) -> None:
    with speech.dialogue.open("rb") as audio:
        text = client.audio.transcriptions.create(model="canary", file=audio, response_format=fmt)
    separator = "," if fmt == "srt" else r"\."
    cue = re.compile(rf"(\d\d):(\d\d):(\d\d){separator}(\d\d\d) --> (\d\d):(\d\d):(\d\d){separator}(\d\d\d)")
    times = [
        (int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000, int(h2) * 3600 + int(m2) * 60 + int(s2) + int(ms2) / 1000)
        for h, m, s, ms, h2, m2, s2, ms2 in cue.findall(text)
    ]
    assert times, text
    assert_spans([{"start": a, "end": b} for a, b in times], speech.dialogue_s)
    if fmt == "vtt":
        assert text.startswith("WEBVTT\n")
    else:
        assert text.lstrip().startswith("1\n")


# What the tiny Canary was fitted to say for each target language, whatever it hears
# (scripts/build_tiny_canary.py checks it on every CPU): its own output names the language it wrote.
SAYS = {"en": "Hello world, this is a test.", "fr": "Bonjour le monde, ceci est un test."}


def test_translation_to_english(client: openai.OpenAI, speech: SpeechSet, stack: Stack) -> None:
    tracer = Triton(stack)
    with tracer.tensors("canary"), speech.dialogue.open("rb") as audio:
        result = client.audio.translations.create(model="canary", file=audio, response_format="verbose_json", extra_body={"language": "de"})
    body = result.model_dump()
    assert body["task"] == "translate" and body["language"] == "english"
    assert (tracer.inputs("source_language"), tracer.inputs("target_language")) == (["de"], ["en"])  # what Canary was asked
    assert SAYS["en"] in body["text"], body["text"]


def test_translating_english_speech_needs_no_language(client: openai.OpenAI, speech: SpeechSet, stack: Stack) -> None:
    """No language named: the dialogue is identified as English, and English into English is Canary's
    transcription (tests/test_language_identification.py translates German and French)."""
    tracer = Triton(stack)
    with tracer.tensors("canary"), speech.dialogue.open("rb") as audio:
        result = client.audio.translations.create(model="canary", file=audio, response_format="verbose_json")
    body = result.model_dump()
    assert body["task"] == "translate" and body["language"] == "english"
    assert (tracer.inputs("source_language"), tracer.inputs("target_language")) == (["en"], ["en"])
    assert SAYS["en"] in body["text"], body["text"]


def test_any_to_any_translation_through_target_language(client: openai.OpenAI, speech: SpeechSet, stack: Stack) -> None:
    tracer = Triton(stack)
    with tracer.tensors("canary"), speech.dialogue.open("rb") as audio:
        result = client.audio.transcriptions.create(
            model="canary", file=audio, response_format="verbose_json", language="en", extra_body={"target_language": "fr"}
        )
    body = result.model_dump()
    assert body["language"] == "french" and body["task"] == "translate"
    assert (tracer.inputs("source_language"), tracer.inputs("target_language")) == (["en"], ["fr"])
    assert SAYS["fr"] in body["text"] and SAYS["en"] not in body["text"], body["text"]


def test_diarized_json(client: openai.OpenAI, speech: SpeechSet, vad_regions) -> None:  # type: ignore[no-untyped-def]
    with speech.dialogue.open("rb") as audio:
        result = client.audio.transcriptions.create(
            model="canary", file=audio, response_format="diarized_json", extra_body={"num_speakers": 2}
        )
    body = result.model_dump()
    assert body["task"] == "transcribe" and body["duration"] == pytest.approx(speech.dialogue_s, abs=0.05)
    segments = body["segments"]
    assert segments, body
    assert_spans(segments, body["duration"])
    for index, segment in enumerate(segments):
        assert segment["type"] == "transcript.text.segment" and segment["id"] == f"seg_{index}"
        assert segment["speaker"] and isinstance(segment["text"], str)
    # Tolerance: the segments come from Canary's word timestamps, so short pauses between words
    # are not covered; over the dialogue they must still cover most of every VAD speech region.
    spans = [(s["start"], s["end"]) for s in segments]
    for region in vad_regions(speech.dialogue):
        assert covered(region, spans) >= 0.5, (region, spans)


def test_speaker_counts_need_diarized_json(http: httpx.Client, speech: SpeechSet) -> None:
    response = http.post("/v1/audio/transcriptions", data={"model": "canary", "num_speakers": "2"}, files=upload(speech.dialogue))
    assert response.status_code == 400 and response.json()["error"]["param"] == "num_speakers"


# Formats and errors -------------------------------------------------------------------------


@pytest.mark.parametrize("container", ["wav", "flac", "mp3", "ogg", "opus", "m4a", "aac", "webm"])
def test_every_supported_format_decodes(http: httpx.Client, speech: SpeechSet, container: str) -> None:
    response = http.post("/v1/audio/transcriptions", data={"model": "canary"}, files=upload(speech.encoded[container]))
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["seconds"] == pytest.approx(speech.dialogue_s, abs=0.1)
    assert float(response.headers["x-audio-duration"]) == pytest.approx(speech.dialogue_s, abs=0.1)
    assert "decode;dur=" in response.headers["server-timing"]


def test_content_decides_not_the_declared_type(http: httpx.Client, speech: SpeechSet) -> None:
    files = {"file": ("picture.png", speech.encoded["mp3"].read_bytes(), "image/png")}
    response = http.post("/v1/audio/transcriptions", data={"model": "canary"}, files=files)
    assert response.status_code == 200, response.text


def error_of(response: httpx.Response, status: int) -> dict[str, str]:
    assert response.status_code == status, response.text
    error: dict[str, str] = response.json()["error"]
    assert error["message"] and error["type"] == "invalid_request_error"
    return error


@pytest.mark.parametrize("route", ["/v1/audio/transcriptions", "/api/audio/transcribe", "/api/diarization/process"])
def test_a_png_is_an_unsupported_format(http: httpx.Client, route: str) -> None:
    files = {"file": ("audio.wav", png_bytes(32, 32), "audio/wav")}
    data = {"model": "canary"} if route.startswith("/v1") else {}
    assert error_of(http.post(route, data=data, files=files), 400)["code"] == "unsupported_format"


def test_random_bytes_are_an_unsupported_format(http: httpx.Client) -> None:
    files = {"file": ("audio.mp3", bytes(range(256)) * 40, "audio/mpeg")}
    error = error_of(http.post("/v1/audio/transcriptions", data={"model": "canary"}, files=files), 400)
    assert error["code"] == "unsupported_format" and error["param"] == "file"


def test_a_truncated_file_is_invalid_audio(http: httpx.Client, speech: SpeechSet) -> None:
    files = {"file": ("talk.m4a", speech.encoded["m4a"].read_bytes()[:3000], "audio/mp4")}
    error = error_of(http.post("/v1/audio/transcriptions", data={"model": "canary"}, files=files), 400)
    assert error["code"] == "invalid_audio" and "m4a" in error["message"]


def test_an_empty_upload(http: httpx.Client) -> None:
    files = {"file": ("empty.wav", b"", "audio/wav")}
    assert error_of(http.post("/v1/audio/transcriptions", data={"model": "canary"}, files=files), 400)["code"] == "empty_file"


def test_an_unknown_model(http: httpx.Client, speech: SpeechSet) -> None:
    response = http.post("/v1/audio/transcriptions", data={"model": "whisper-9"}, files=upload(speech.silence))
    error = error_of(response, 404)
    assert error["code"] == "model_not_found" and "canary" in error["message"]


def test_a_chat_model_is_not_a_transcription_model(http: httpx.Client, speech: SpeechSet) -> None:
    response = http.post("/v1/audio/transcriptions", data={"model": "qwen"}, files=upload(speech.silence))
    assert error_of(response, 404)["code"] == "model_not_found"


@pytest.mark.parametrize(
    ("data", "param"),
    [
        ({}, "model"),
        ({"model": "canary", "response_format": "docx"}, "response_format"),
        ({"model": "canary", "language": "tlh"}, "language"),
        ({"model": "canary", "temperature": "3"}, "temperature"),
        ({"model": "canary", "timestamp_granularities[]": "word"}, "timestamp_granularities"),
        ({"model": "canary", "stream": "true", "response_format": "srt"}, "response_format"),
        ({"model": "canary", "include[]": "logprobs"}, "include"),
        ({"model": "canary", "surprise": "1"}, "surprise"),
    ],
)
def test_bad_transcription_fields(http: httpx.Client, speech: SpeechSet, data: dict[str, str], param: str) -> None:
    error = error_of(http.post("/v1/audio/transcriptions", data=data, files=upload(speech.silence)), 400)
    assert error["param"] == param, error


def test_missing_file_and_wrong_content_type(http: httpx.Client) -> None:
    no_file = http.post("/v1/audio/transcriptions", data={"model": "canary"}, files={"attachment": ("a.wav", b"RIFF", "audio/wav")})
    assert error_of(no_file, 400)["code"] == "missing_file"
    form_urlencoded = http.post("/v1/audio/transcriptions", data={"model": "canary"})
    assert error_of(form_urlencoded, 400)["code"] == "invalid_content_type"
    assert error_of(http.post("/v1/audio/transcriptions", json={"model": "canary"}), 400)["code"] == "invalid_content_type"


def test_audio_needs_an_api_key(adapter_url: str, speech: SpeechSet) -> None:
    response = httpx.post(f"{adapter_url}/v1/audio/transcriptions", data={"model": "canary"}, files=upload(speech.silence))
    assert response.status_code == 401


def test_silence_is_an_empty_transcript(http: httpx.Client, speech: SpeechSet) -> None:
    response = http.post(
        "/v1/audio/transcriptions",
        data={"model": "canary", "response_format": "verbose_json", "timestamp_granularities[]": ["word", "segment"]},
        files=upload(speech.silence),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["text"] == "" and body["words"] == [] and body["segments"] == []
    assert body["duration"] == pytest.approx(4.0, abs=0.05)
    assert response.headers["x-speech-detected"] == "false"


@pytest.fixture(scope="module")
def strict_adapter(stack: Stack) -> Iterator[str]:
    """A second adapter on the same Triton with small upload and duration limits."""
    url = stack.start_adapter(
        name="adapter-audio-limits",
        port=free_port(),
        env={"MAX_AUDIO_UPLOAD_BYTES": "200000", "MAX_AUDIO_DURATION_S": "10", "OPENAI_API_KEYS": ""},
    )
    yield url
    stack.stop(names=["adapter-audio-limits"])


def test_an_oversized_upload_is_413(strict_adapter: str, speech: SpeechSet) -> None:
    response = httpx.post(f"{strict_adapter}/v1/audio/transcriptions", data={"model": "canary"}, files=upload(speech.encoded["wav"]))
    assert error_of(response, 413)["code"] == "request_too_large"  # refused on its Content-Length
    response = httpx.post(f"{strict_adapter}/api/audio/transcribe", files=upload(speech.encoded["wav"]))
    assert error_of(response, 413)["code"] == "request_too_large"  # refused on its Content-Length


def test_a_file_over_the_limit_inside_a_body_under_it_is_413(strict_adapter: str, speech: SpeechSet) -> None:
    """The body limit leaves room for the form's other fields; the file itself is held to the limit."""
    files = {"file": ("a.wav", speech.encoded["wav"].read_bytes()[:220_000], "audio/wav")}
    error = error_of(httpx.post(f"{strict_adapter}/v1/audio/transcriptions", data={"model": "canary"}, files=files), 413)
    assert error["code"] == "file_too_large" and "MAX_AUDIO_UPLOAD_BYTES" in error["message"]


def test_a_streamed_oversized_upload_is_413(strict_adapter: str, speech: SpeechSet) -> None:
    """Without Content-Length (chunked), the count stops the upload as it passes the limit."""
    boundary = "passerelle-boundary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\ncanary\r\n'
    head += f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\nContent-Type: audio/wav\r\n\r\n'
    payload = speech.encoded["wav"].read_bytes()

    def chunks() -> Iterator[bytes]:
        yield head.encode()
        for offset in range(0, len(payload), 65536):
            yield payload[offset : offset + 65536]
        yield f"\r\n--{boundary}--\r\n".encode()

    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    response = httpx.post(f"{strict_adapter}/v1/audio/transcriptions", content=chunks(), headers=headers)
    assert error_of(response, 413)["code"] == "request_too_large"


def test_too_long_audio_is_413(strict_adapter: str, speech: SpeechSet) -> None:
    response = httpx.post(f"{strict_adapter}/v1/audio/transcriptions", data={"model": "canary"}, files=upload(speech.encoded["mp3"]))
    error = error_of(response, 413)
    assert error["code"] == "audio_too_long" and "MAX_AUDIO_DURATION_S" in error["message"]


@pytest.fixture(scope="module")
def grpc_adapter(stack: Stack) -> Iterator[str]:
    """A second adapter that streams PCM over Triton's HTTP binary protocol instead of shared memory."""
    url = stack.start_adapter(name="adapter-audio-http", port=free_port(), env={"AUDIO_TRANSFER": "http", "OPENAI_API_KEYS": ""})
    yield url
    stack.stop(names=["adapter-audio-http"])


def test_both_transfers_give_the_same_transcript(http: httpx.Client, grpc_adapter: str, speech: SpeechSet) -> None:
    data = {"model": "canary", "response_format": "verbose_json", "timestamp_granularities[]": ["word", "segment"]}
    before = set(Path("/dev/shm").glob("passerelle-audio-*"))  # another process's (a killed run's) are not ours
    through_shared_memory = http.post("/v1/audio/transcriptions", data=data, files=upload(speech.encoded["flac"]))
    in_the_request = httpx.post(f"{grpc_adapter}/v1/audio/transcriptions", data=data, files=upload(speech.encoded["flac"]), timeout=300)
    assert through_shared_memory.status_code == in_the_request.status_code == 200, (through_shared_memory.text, in_the_request.text)
    assert through_shared_memory.json() == in_the_request.json()
    assert set(Path("/dev/shm").glob("passerelle-audio-*")) <= before, "shared-memory objects left behind"


# Seed routes --------------------------------------------------------------------------------


def test_seed_transcribe(http: httpx.Client, speech: SpeechSet) -> None:
    response = http.post("/api/audio/transcribe", files=upload(speech.dialogue))
    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body["text"], str) and body["sampling_rate"] == 16000 and body["language"] == "en"
    assert "segments" not in body


def test_seed_transcribe_with_timestamps(http: httpx.Client, speech: SpeechSet) -> None:
    response = http.post("/api/audio/transcribe", data={"timestamps": "true", "language": "en"}, files=upload(speech.encoded["flac"]))
    body = response.json()
    assert response.status_code == 200 and body["segments"] and body["words"], body
    assert_spans(body["segments"], body["duration"])
    assert_spans(body["words"], body["duration"])


def test_seed_transcribe_with_diarization(http: httpx.Client, speech: SpeechSet) -> None:
    response = http.post("/api/audio/transcribe", data={"diarization": "true", "max_speakers": "3"}, files=upload(speech.dialogue))
    body = response.json()
    assert response.status_code == 200, body
    assert body["speakers"] and body["segments"]
    assert_spans(body["speakers"], body["duration"])
    assert all(segment["speaker"] for segment in body["segments"])


def test_seed_diarization(http: httpx.Client, speech: SpeechSet, vad_regions) -> None:  # type: ignore[no-untyped-def]
    response = http.post("/api/diarization/process", data={"num_speakers": "2", "rttm": "true"}, files=upload(speech.encoded["ogg"]))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["sampling_rate"] == 16000 and body["duration"] == pytest.approx(speech.dialogue_s, abs=0.1)
    segments = body["segments"]
    assert segments and set(body["speakers"]) == {s["speaker"] for s in segments} and body["num_speakers"] == len(body["speakers"])
    assert_spans(segments, body["duration"])
    lines = body["rttm"].strip().splitlines()
    assert len(lines) == len(segments)
    for line, segment in zip(lines, segments, strict=True):
        fields = line.split()
        assert fields[0] == "SPEAKER" and fields[7] == segment["speaker"]
        assert float(fields[3]) == pytest.approx(segment["start"], abs=0.002)
        assert float(fields[4]) == pytest.approx(segment["end"] - segment["start"], abs=0.002)
    # Tolerance: pyannote's turns must cover at least half of every silero-vad speech region.
    for region in vad_regions(speech.dialogue):
        assert covered(region, [(s["start"], s["end"]) for s in segments]) >= 0.5, region


def test_seed_diarization_refuses_inconsistent_counts(http: httpx.Client, speech: SpeechSet) -> None:
    data = {"num_speakers": "2", "min_speakers": "1"}
    assert error_of(http.post("/api/diarization/process", data=data, files=upload(speech.silence)), 400)["code"] == "invalid_value"
    data = {"min_speakers": "3", "max_speakers": "2"}
    assert error_of(http.post("/api/diarization/process", data=data, files=upload(speech.silence)), 400)["code"] == "invalid_value"


# Native Triton clients ----------------------------------------------------------------------


def test_native_canary(triton: grpcclient.InferenceServerClient, speech: SpeechSet, http: httpx.Client) -> None:
    http.post("/api/audio/transcribe", files=upload(speech.silence))  # makes sure canary is loaded
    pcm = pcm16k(speech.dialogue)
    result = infer(
        triton,
        "canary",
        {"audio": pcm, "source_language": np.array([b"en"], dtype=np.object_), "timestamps": np.array([True])},
    )
    duration = float(result.as_numpy("duration")[0])
    assert duration == pytest.approx(len(pcm) / 16000, abs=0.001)
    words = result.as_numpy("words")
    times = result.as_numpy("word_times")
    assert times.shape == (len(words), 2) and len(words) > 0
    assert np.all(times[:, 0] <= times[:, 1]) and np.all(np.diff(times[:, 0]) >= 0) and times.max() <= duration + EPSILON_S
    assert result.as_numpy("text")[0].decode().split() == [w.decode() for w in words]


def test_native_canary_rejects_an_unknown_language(triton: grpcclient.InferenceServerClient, speech: SpeechSet) -> None:
    with pytest.raises(grpcclient.InferenceServerException) as error:
        infer(triton, "canary", {"audio": pcm16k(speech.silence), "source_language": np.array([b"xx"], dtype=np.object_)})
    assert "INVALID_ARG" in str(error.value.status()) and "xx" in error.value.message()


def test_native_pyannote(triton: grpcclient.InferenceServerClient, speech: SpeechSet, http: httpx.Client) -> None:
    http.post("/api/diarization/process", files=upload(speech.silence))  # makes sure pyannote is loaded
    pcm = pcm16k(speech.dialogue)
    result = infer(triton, "pyannote", {"audio": pcm, "num_speakers": np.array([2], dtype=np.int32)})
    speakers, times = result.as_numpy("speakers"), result.as_numpy("turn_times")
    assert times.shape == (len(speakers), 2) and len(speakers) > 0
    assert times.min() >= 0 and times.max() <= len(pcm) / 16000 + EPSILON_S
    assert len(result.as_numpy("rttm")[0].decode().strip().splitlines()) == len(speakers)


def test_native_speaker_transcript_matches_the_adapter(
    triton: grpcclient.InferenceServerClient, speech: SpeechSet, client: openai.OpenAI
) -> None:
    with speech.dialogue.open("rb") as audio:
        through_adapter = client.audio.transcriptions.create(model="canary", file=audio, response_format="diarized_json").model_dump()
    result = infer(triton, "speaker_transcript", {"audio": pcm16k(speech.dialogue)})
    native = [
        (speaker.decode(), round(float(start), 3), round(float(end), 3), text.decode())
        for speaker, (start, end), text in zip(
            result.as_numpy("segment_speakers"), result.as_numpy("segment_times"), result.as_numpy("segments"), strict=True
        )
    ]
    adapted = [(s["speaker"], s["start"], s["end"], s["text"]) for s in through_adapter["segments"]]
    assert native == adapted and result.as_numpy("text")[0].decode() == through_adapter["text"]


# Long audio ---------------------------------------------------------------------------------


def test_long_audio_is_chunked_at_silences_without_truncation(
    triton: grpcclient.InferenceServerClient,
    speech: SpeechSet,
    vad_regions: Callable[[Path], list[tuple[float, float]]],
    http: httpx.Client,
) -> None:
    http.post("/api/audio/transcribe", files=upload(speech.silence))  # makes sure canary is loaded
    pcm = pcm16k(speech.long)
    duration = len(pcm) / 16000
    assert duration >= 600
    result = infer(triton, "canary", {"audio": pcm, "timestamps": np.array([True])})
    chunks = [(float(a), float(b)) for a, b in result.as_numpy("chunk_times")]
    regions = vad_regions(speech.long)
    assert len(regions) >= 4 * 26 * 0.9, len(regions)  # four turns per repetition of the dialogue
    # The chunks tile the whole file, in order, and none is longer than Canary's window.
    assert chunks[0][0] == pytest.approx(0, abs=EPSILON_S) and chunks[-1][1] == pytest.approx(duration, abs=EPSILON_S)
    for (_, end), (start, _) in itertools.pairwise(chunks):
        assert start == pytest.approx(end, abs=EPSILON_S)
    assert max(b - a for a, b in chunks) <= 30 + EPSILON_S
    # No boundary falls inside a speech region that silero-vad finds (50 ms tolerance for its
    # frame granularity), and every region, up to the last, lies within one chunk.
    boundaries = [end for _, end in chunks[:-1]]
    for start, end in regions:
        assert not any(start + 0.05 < boundary < end - 0.05 for boundary in boundaries), (start, end)
        assert any(a - 0.05 <= start and end <= b + 0.05 for a, b in chunks), (start, end)
    words = result.as_numpy("word_times")
    if len(words):
        assert words.max() <= duration + EPSILON_S and np.all(np.diff(words[:, 0]) >= -EPSILON_S)


# Streamed transcription ---------------------------------------------------------------------

WINDOWS = "passerelle_canary_stream_windows_total"


def _windows(stack: Stack, outcome: str) -> float:
    return metric_value(triton_metrics(stack), WINDOWS, model="canary_stream", outcome=outcome)


def _native_stream(stack: Stack, pcm: np.ndarray, cancel_after: int | None = None) -> list[grpcclient.InferResult]:
    """`canary_stream` over gRPC streaming, as a native client uses it; optionally cancelled after some responses."""
    results: queue.Queue[tuple[grpcclient.InferResult | None, Exception | None]] = queue.Queue()
    client = grpcclient.InferenceServerClient(stack.triton_grpc)
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        audio = grpcclient.InferInput("audio", [pcm.size], "FP32")
        audio.set_data_from_numpy(pcm)
        language = grpcclient.InferInput("source_language", [1], "BYTES")
        language.set_data_from_numpy(np.array([b"en"], dtype=np.object_))
        client.async_stream_infer("canary_stream", [audio, language], request_id="native-stream")
        received: list[grpcclient.InferResult] = []
        while True:
            result, error = results.get(timeout=600)
            assert error is None, error
            assert result is not None
            received.append(result)
            index, count = (int(result.as_numpy(name)[0]) for name in ("window_index", "window_count"))
            if index >= count - 1 or (cancel_after is not None and len(received) >= cancel_after):
                return received
    finally:
        client.stop_stream(cancel_requests=True)
        client.close()


def test_native_clients_stream_one_response_per_window(stack: Stack, speech: SpeechSet, http: httpx.Client) -> None:
    http.post("/v1/audio/transcriptions", data={"model": "canary", "stream": "true"}, files=upload(speech.silence))  # loads both
    results = _native_stream(stack, pcm16k(speech.dialogue))
    counts = {int(result.as_numpy("window_count")[0]) for result in results}
    assert counts == {len(results)} and [int(r.as_numpy("window_index")[0]) for r in results] == list(range(len(results)))
    windows = [tuple(result.as_numpy("window_times")[0]) for result in results]
    assert all(start < end for start, end in windows) and windows == sorted(windows)


def test_silence_streams_only_the_done_event(client: openai.OpenAI, speech: SpeechSet) -> None:
    with speech.silence.open("rb") as audio:
        events = list(client.audio.transcriptions.create(model="canary", file=audio, stream=True))
    [done] = events
    assert done.type == "transcript.text.done" and done.text == ""


def test_streamed_transcription_of_the_long_file(client: openai.OpenAI, stack: Stack, speech: SpeechSet) -> None:
    """A delta per speech window, sent as each is decoded; the deltas make the `done` text, which is
    the transcript the same request gets unstreamed."""
    with speech.long.open("rb") as audio:
        whole = client.audio.transcriptions.create(model="canary", file=audio, language="en")
    count = int(_native_stream(stack, pcm16k(speech.long), cancel_after=1)[0].as_numpy("window_count")[0])
    assert count >= 10
    before = _windows(stack, "decoded")
    decoded_at_first_delta = None
    deltas: list[str] = []
    with speech.long.open("rb") as audio:
        stream = client.audio.transcriptions.create(model="canary", file=audio, language="en", stream=True)
        for event in stream:
            if event.type == "transcript.text.delta":
                if decoded_at_first_delta is None:
                    decoded_at_first_delta = _windows(stack, "decoded") - before
                deltas.append(event.delta)
            elif event.type == "transcript.text.done":
                done = event
            else:
                raise AssertionError(f"unexpected event {event.type}")
    assert len(deltas) == count
    assert decoded_at_first_delta is not None and decoded_at_first_delta < count
    assert "".join(deltas) == done.text == whole.text and done.text


def _regions(stack: Stack) -> list[str]:
    """The audio regions registered with Triton now."""
    status = httpx.get(f"{stack.triton_http}/v2/systemsharedmemory/status", timeout=30).json()
    return [region["name"] for region in status if region["name"].startswith("passerelle-audio-")]


def _settled(check: Callable[[], bool], seconds: float) -> bool:
    """The adapter unregisters a region once Triton has released the request's inputs, just after
    the answer (a cancelled request: once the model saw the cancellation)."""
    deadline = time.monotonic() + seconds
    while not check() and time.monotonic() < deadline:
        time.sleep(0.1)
    return check()


def test_a_client_that_leaves_cancels_the_windows_left(stack: Stack, speech: SpeechSet, adapter_url: str) -> None:
    """Every window of the long file is counted once, decoded or cancelled; leaving after the first
    delta leaves some cancelled. Up to three tries: Triton 2.51 now and then misses a gRPC stream
    cancellation (see `assert_cancels`)."""
    body = {"model": "canary", "language": "en", "stream": "true"}
    with httpx.Client(base_url=adapter_url, headers=AUTH, timeout=600) as client:  # loads canary_stream for the native call
        assert client.post("/v1/audio/transcriptions", data=body, files=upload(speech.silence)).status_code == 200
    count = int(_native_stream(stack, pcm16k(speech.long), cancel_after=1)[0].as_numpy("window_count")[0])
    time.sleep(5)  # let the native stream's own cancellation settle in the counters
    seen = []
    for _ in range(3):
        cancelled_before, decoded_before = _windows(stack, "cancelled"), _windows(stack, "decoded")
        with (
            httpx.Client(base_url=adapter_url, headers=AUTH, timeout=600) as client,
            client.stream("POST", "/v1/audio/transcriptions", data=body, files=upload(speech.long)) as response,
        ):
            assert response.status_code == 200
            first = next(line for line in response.iter_lines() if line.startswith("data: "))
            assert json.loads(first.removeprefix("data: "))["type"] == "transcript.text.delta"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            decoded, cancelled = _windows(stack, "decoded") - decoded_before, _windows(stack, "cancelled") - cancelled_before
            if decoded + cancelled >= count:
                break
            time.sleep(0.5)
        assert decoded + cancelled == count, (decoded, cancelled, count)
        # Starlette cancels a response whose client left through an anyio scope, which cuts every
        # `await` of a plain `finally`: the region must be unregistered all the same.
        assert _settled(lambda: _regions(stack) == [], 30), f"the region of the request left is still registered: {_regions(stack)}"
        if cancelled > 0:
            return
        seen.append((decoded, cancelled))
    raise AssertionError(f"no try left a window undecoded: {seen}")


def test_streamed_diarized_json(client: openai.OpenAI, speech: SpeechSet) -> None:
    """The whole file is diarized first; then each window's speaker segments come as a delta with
    its `segment_id` followed by the `transcript.text.segment` event."""
    with speech.dialogue.open("rb") as audio:
        whole = client.audio.transcriptions.create(model="canary", file=audio, language="en", response_format="diarized_json")
    with speech.dialogue.open("rb") as audio:
        events = list(
            client.audio.transcriptions.create(model="canary", file=audio, language="en", response_format="diarized_json", stream=True)
        )
    *body, done = events
    assert done.type == "transcript.text.done" and done.usage is not None
    deltas = [event for event in body if event.type == "transcript.text.delta"]
    segments = [event for event in body if event.type == "transcript.text.segment"]
    assert segments and len(deltas) == len(segments) and len(body) == 2 * len(segments)
    # Each delta is followed by its segment, with the same id and text.
    for delta, segment in zip(body[::2], body[1::2], strict=True):
        assert delta.type == "transcript.text.delta" and segment.type == "transcript.text.segment"
        assert delta.segment_id == segment.id and delta.delta.strip() == segment.text
    assert "".join(delta.delta for delta in deltas) == done.text and done.text
    starts = [segment.start for segment in segments]
    assert starts == sorted(starts) and all(0 <= s.start <= s.end <= speech.dialogue_s + EPSILON_S for s in segments)
    assert {segment.speaker for segment in segments} <= {segment.speaker for segment in whole.segments}


# Translation-only refusals and shared memory on error paths ---------------------------------------


@pytest.mark.parametrize(
    ("data", "param", "code", "words"),
    [
        ({"stream": "true"}, "stream", "unsupported_value", "Translations are not streamed"),
        ({"response_format": "diarized_json"}, "response_format", "invalid_value", "diarized_json is only available for transcriptions"),
        ({"timestamp_granularities[]": "word"}, "timestamp_granularities", "invalid_value", "requires response_format=verbose_json"),
        ({"num_speakers": "2"}, "num_speakers", "invalid_value", "diarized_json only"),
        ({"known_speaker_names[]": "ana"}, "known_speaker_names", "invalid_value", "diarized_json only"),
        ({"include[]": "logprobs"}, "include", "unsupported_value", "not supported"),
        ({"target_language": "tlh"}, "target_language", "unsupported_language", "'tlh' is not supported"),
    ],
)
def test_translation_refusals_name_the_parameter(
    http: httpx.Client, speech: SpeechSet, data: dict[str, str], param: str, code: str, words: str
) -> None:
    response = http.post("/v1/audio/translations", data={"model": "canary", "language": "de", **data}, files=upload(speech.silence))
    error = error_of(response, 400)
    assert set(response.json()) == {"error"} and set(error) == {"message", "type", "param", "code"}, response.json()
    assert (error["param"], error["code"]) == (param, code), error
    assert words in error["message"], error


def _float_wav_with_nan(seconds: float = 3.0) -> bytes:
    """16 kHz mono IEEE-float WAV: ffmpeg decodes it as it is, NaN samples included, which pyannote refuses."""
    import struct

    pcm = (0.3 * np.sin(np.arange(int(16000 * seconds)) / 10)).astype(np.float32)
    pcm[8000:8100] = np.nan
    data = pcm.tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, 16000, 16000 * 4, 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_a_request_that_fails_after_decoding_leaves_no_shared_memory(http: httpx.Client, stack: Stack) -> None:
    """The PCM is decoded into a /dev/shm object and registered with Triton, then the model refuses it:
    the object is deleted and the region unregistered all the same."""

    def new_objects() -> set[Path]:
        return set(Path("/dev/shm").glob("passerelle-audio-*")) - before

    assert _settled(lambda: _regions(stack) == [], 10), f"regions registered before the request: {_regions(stack)}"
    before = set(Path("/dev/shm").glob("passerelle-audio-*"))  # other processes' are not ours
    response = http.post("/api/diarization/process", files={"file": ("nan.wav", _float_wav_with_nan(), "audio/wav")})
    error = error_of(response, 400)
    assert error["code"] == "invalid_value" and "NaN" in error["message"], error  # pyannote saw the PCM: it went through Triton
    # Objects of other test runs on this machine come and go; a leaked one stays.
    assert _settled(lambda: not new_objects(), 5), f"shared-memory objects left behind: {sorted(new_objects())}"
    assert _settled(lambda: _regions(stack) == [], 10), f"a shared-memory region is still registered with Triton: {_regions(stack)}"
