"""Spoken-language identification: the `langid` Triton model (a tiny AmberNet-class model fitted on espeak-ng
speech of en, de, fr, es and tr) and the audio routes that use it when no language is named.

The oracle is espeak-ng itself: a sentence spoken with its German voice is German. What Canary received is read
from Triton's own trace of the `canary` request, not from the adapter's answer.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import tritonclient.grpc as grpcclient

from conftest import Triton, metric_value, triton_metrics
from passerelle_stack.launcher import Stack, free_port
from speech import GAP_S, ffmpeg

# Two voices of each language with a pause between them, as the tests' English dialogue has.
SENTENCES = {
    "de": ("Guten Morgen, heute sprechen wir über das Wetter der nächsten Woche.", "Am Montag scheint die Sonne, am Dienstag regnet es."),
    "fr": ("Bonjour à tous, aujourd'hui nous parlons du temps de la semaine.", "Lundi il fera beau, et mardi il va pleuvoir un peu."),
    "tr": ("Günaydın, bugün önümüzdeki haftanın hava durumunu konuşuyoruz.", "Pazartesi güneşli olacak, salı günü yağmur yağacak."),  # noqa: RUF001
}


def _spoken(root: Path, language: str) -> Path:
    parts = []
    gap = root / "gap.wav"
    ffmpeg("-f", "lavfi", "-i", f"anullsrc=r=16000:cl=mono:d={GAP_S}", str(gap))
    for index, (voice, text) in enumerate(zip((language, f"{language}+f3"), SENTENCES[language], strict=True)):
        raw = root / f"{language}{index}.raw.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(raw), text], check=True)
        line = root / f"{language}{index}.wav"
        ffmpeg("-i", str(raw), "-ar", "16000", "-ac", "1", str(line))
        parts += [gap, line]
    listing = root / f"{language}.txt"
    listing.write_text("".join(f"file '{part}'\n" for part in [*parts, gap]))
    out = root / f"{language}.mp3"
    ffmpeg("-f", "concat", "-safe", "0", "-i", str(listing), "-ar", "16000", "-ac", "1", "-c:a", "libmp3lame", str(out))
    return out


@pytest.fixture(scope="module")
def spoken(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("languages")
    return {language: _spoken(root, language) for language in SENTENCES}


def _pcm(path: Path) -> np.ndarray:
    command = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-ac", "1", "-ar", "16000", "-f", "f32le", "-"]
    return np.frombuffer(subprocess.run(command, check=True, capture_output=True).stdout, dtype=np.float32)


def _identify(triton: grpcclient.InferenceServerClient, pcm: np.ndarray, max_windows: int | None = None) -> grpcclient.InferResult:
    audio = grpcclient.InferInput("audio", [len(pcm)], "FP32")
    audio.set_data_from_numpy(pcm)
    inputs = [audio]
    if max_windows is not None:
        windows = grpcclient.InferInput("max_windows", [1], "INT32")
        windows.set_data_from_numpy(np.array([max_windows], dtype=np.int32))
        inputs.append(windows)
    return triton.infer("langid", inputs, client_timeout=300)


def _upload(path: Path) -> dict[str, tuple[str, bytes, str]]:
    return {"file": (path.name, path.read_bytes(), "audio/mpeg")}


@pytest.fixture(scope="module")
def langid_loaded(http: httpx.Client, spoken: dict[str, Path]) -> None:
    """The adapter loads `langid` (and canary) on the first request that names no language."""
    response = http.post("/v1/audio/transcriptions", data={"model": "canary"}, files=_upload(spoken["de"]))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("language", ["de", "fr", "tr"])
def test_native_langid_names_the_spoken_language(
    triton: grpcclient.InferenceServerClient, spoken: dict[str, Path], language: str, langid_loaded: None
) -> None:
    pcm = _pcm(spoken[language])
    result = _identify(triton, pcm)
    assert result.as_numpy("language")[0].decode() == language
    languages = [value.decode() for value in result.as_numpy("languages")]
    probabilities = result.as_numpy("probabilities")
    assert sorted(languages) == ["de", "en", "es", "fr", "tr"] and languages[0] == language
    assert probabilities.shape == (5,) and np.all(np.diff(probabilities) <= 0) and probabilities.sum() == pytest.approx(1.0, abs=1e-4)
    windows = result.as_numpy("window_times")
    duration = float(result.as_numpy("duration")[0])
    assert duration == pytest.approx(len(pcm) / 16000, abs=0.001)
    # A few speech windows, not the whole file: each inside the audio, none in the leading pause.
    assert 1 <= len(windows) <= 3 and np.all(windows[:, 0] < windows[:, 1])
    assert windows.min() >= GAP_S - 0.2 and windows.max() <= duration + 0.01


def test_native_langid_listens_to_the_windows_asked_for(
    triton: grpcclient.InferenceServerClient, spoken: dict[str, Path], langid_loaded: None
) -> None:
    result = _identify(triton, _pcm(spoken["de"]), max_windows=1)
    assert len(result.as_numpy("window_times")) == 1 and result.as_numpy("language")[0].decode() == "de"
    silent = _identify(triton, np.zeros(16000 * 3, dtype=np.float32))
    assert silent.as_numpy("language")[0].decode() == "" and silent.as_numpy("window_times").shape == (0, 2)
    with pytest.raises(grpcclient.InferenceServerException) as error:
        _identify(triton, _pcm(spoken["de"]), max_windows=0)
    assert "INVALID_ARG" in str(error.value.status()) and "max_windows" in error.value.message()


@pytest.mark.parametrize("language", ["de", "fr"])
def test_the_sdks_plain_translation_identifies_the_language(
    client: openai.OpenAI,
    stack: Stack,
    triton: grpcclient.InferenceServerClient,
    spoken: dict[str, Path],
    language: str,
    langid_loaded: None,  # canary too: Triton refuses trace settings for a model not loaded
) -> None:
    """OpenAI's translations.create has no language parameter: the language is identified, and Canary is
    asked to translate from it into English (Triton's trace of the canary request shows both)."""
    tracer = Triton(stack)
    with tracer.tensors("canary"), spoken[language].open("rb") as audio:
        translation = client.audio.translations.create(model="canary", file=audio)
    assert isinstance(translation.text, str) and translation.text
    assert tracer.inputs("source_language") == [language]
    assert tracer.inputs("target_language") == ["en"]
    # The independent check of the identification: a native call on the same audio.
    assert _identify(triton, _pcm(spoken[language])).as_numpy("language")[0].decode() == language


def test_verbose_json_reports_the_identified_language(client: openai.OpenAI, spoken: dict[str, Path]) -> None:
    with spoken["fr"].open("rb") as audio:
        result = client.audio.transcriptions.create(model="canary", file=audio, response_format="verbose_json")
    assert result.language == "french" and result.task == "transcribe"  # type: ignore[attr-defined]


def test_the_seed_route_identifies_the_language_too(http: httpx.Client, spoken: dict[str, Path]) -> None:
    response = http.post("/api/audio/transcribe", files=_upload(spoken["de"]))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["language"] == "de" and body["target_language"] == "de"


def test_a_named_language_skips_identification(http: httpx.Client, stack: Stack, spoken: dict[str, Path], langid_loaded: None) -> None:
    before = metric_value(triton_metrics(stack), "nv_inference_request_success", model="langid")
    response = http.post("/v1/audio/transcriptions", data={"model": "canary", "language": "fr"}, files=_upload(spoken["de"]))
    assert response.status_code == 200, response.text
    assert metric_value(triton_metrics(stack), "nv_inference_request_success", model="langid") == before


@pytest.mark.parametrize("route", ["/v1/audio/transcriptions", "/v1/audio/translations", "/api/audio/transcribe"])
def test_an_identified_language_canary_does_not_speak_is_400(http: httpx.Client, spoken: dict[str, Path], route: str) -> None:
    response = http.post(route, data={"model": "canary"}, files=_upload(spoken["tr"]))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "unsupported_language" and error["param"] == "language"
    assert "identified as 'tr'" in error["message"] and "'language' field" in error["message"]


def test_a_streamed_transcript_identifies_the_language_first(client: openai.OpenAI, stack: Stack, spoken: dict[str, Path]) -> None:
    with spoken["de"].open("rb") as audio:  # loads canary_stream: Triton refuses trace settings for a model not loaded
        list(client.audio.transcriptions.create(model="canary", file=audio, stream=True, language="de"))
    tracer = Triton(stack)  # Triton traces the adapter's request to canary_stream (not the BLS calls it makes)
    with tracer.tensors("canary_stream"), spoken["de"].open("rb") as audio:
        events = list(client.audio.transcriptions.create(model="canary", file=audio, stream=True))
    assert events[-1].type == "transcript.text.done"
    assert tracer.inputs("source_language") == ["de"]


@pytest.fixture(scope="module")
def english_by_default(stack: Stack) -> Iterator[str]:
    """A second adapter on the same Triton whose DEFAULT_AUDIO_LANGUAGE setting skips identification."""
    url = stack.start_adapter(
        name="adapter-default-language", port=free_port(), env={"DEFAULT_AUDIO_LANGUAGE": "en", "OPENAI_API_KEYS": ""}
    )
    yield url
    stack.stop(names=["adapter-default-language"])


def test_the_default_language_setting_skips_identification(
    english_by_default: str, stack: Stack, spoken: dict[str, Path], langid_loaded: None
) -> None:
    tracer = Triton(stack)
    before = metric_value(triton_metrics(stack), "nv_inference_request_success", model="langid")
    with tracer.tensors("canary"):
        response = httpx.post(
            f"{english_by_default}/v1/audio/transcriptions", data={"model": "canary"}, files=_upload(spoken["de"]), timeout=300
        )
    assert response.status_code == 200, response.text
    assert tracer.inputs("source_language") == ["en"]
    assert metric_value(triton_metrics(stack), "nv_inference_request_success", model="langid") == before


def test_langid_is_described_for_native_clients(stack: Stack, langid_loaded: None) -> None:
    config = httpx.get(f"{stack.triton_http}/v2/models/langid/config").json()
    assert [tensor["name"] for tensor in config["input"]] == ["audio", "max_windows"]
    assert [tensor["name"] for tensor in config["output"]] == ["language", "languages", "probabilities", "window_times", "duration"]
    assert json.dumps(config).count("language_identification") == 1


def test_native_speaker_transcript_identifies_the_language_with_auto(
    http: httpx.Client, triton: grpcclient.InferenceServerClient, spoken: dict[str, Path]
) -> None:
    """`speaker_transcript` (BLS) asks `langid` when told "auto", and Canary gets the language it names."""
    response = http.post(
        "/v1/audio/transcriptions", data={"model": "canary", "response_format": "diarized_json"}, files=_upload(spoken["fr"])
    )
    assert response.status_code == 200, response.text  # loads langid, canary, pyannote and speaker_transcript
    for language in ("de", "fr"):
        pcm = _pcm(spoken[language])
        audio = grpcclient.InferInput("audio", [len(pcm)], "FP32")
        audio.set_data_from_numpy(pcm)
        source = grpcclient.InferInput("source_language", [1], "BYTES")
        source.set_data_from_numpy(np.array([b"auto"], dtype=np.object_))
        result = triton.infer("speaker_transcript", [audio, source], client_timeout=300)
        assert result.as_numpy("language")[0].decode() == language
        assert len(result.as_numpy("segment_speakers")) == len(result.as_numpy("segments")) > 0
    named = triton.infer("speaker_transcript", [audio], client_timeout=300)  # no source_language: Canary's default, en
    assert named.as_numpy("language")[0].decode() == "en"


def test_candidate_languages_narrow_the_identification(
    http: httpx.Client, stack: Stack, spoken: dict[str, Path], langid_loaded: None
) -> None:
    """OpenAI's `languages[]`: several candidates, the most probable of them; one, that one without identifying."""
    tracer = Triton(stack)
    with tracer.tensors("canary"):
        data = {"model": "canary", "languages[]": ["fr", "de"], "keywords[]": ["Wetter"]}
        assert http.post("/v1/audio/transcriptions", data=data, files=_upload(spoken["de"])).status_code == 200
    assert tracer.inputs("source_language") == ["de"]
    before = metric_value(triton_metrics(stack), "nv_inference_request_success", model="langid")
    with tracer.tensors("canary"):
        assert (
            http.post("/v1/audio/transcriptions", data={"model": "canary", "languages[]": ["fr"]}, files=_upload(spoken["de"])).status_code
            == 200
        )
    assert tracer.inputs("source_language") == ["fr"]
    assert metric_value(triton_metrics(stack), "nv_inference_request_success", model="langid") == before
    response = http.post("/v1/audio/transcriptions", data={"model": "canary", "languages[]": ["fr", "xx"]}, files=_upload(spoken["de"]))
    assert response.status_code == 400 and response.json()["error"]["param"] == "languages"
