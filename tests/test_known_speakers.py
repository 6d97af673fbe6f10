"""Known speakers: `pyannote` names the diarized speakers after reference clips, and `speaker_transcript`
passes the clips through (native gRPC calls); the adapter takes OpenAI's known_speaker_names[] and
known_speaker_references[] (data URLs) on its diarized routes, streamed or not. The tiny embedding is fitted so that
espeak-ng's `en`, `en+f3` and `en+UniRobot` voices point in distinct directions, so who spoke when (not
what) is checked."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import tritonclient.grpc as grpcclient

from conftest import ImageServer, infer, png_bytes
from speech import SpeechSet, line_spans, reference_clip

THRESHOLD = 0.5  # pyannote's known_speaker_threshold (config.pbtxt; the CPU profile keeps the code's default)
# Sentences that neither the dialogue nor the tiny embedding's fit or check speaks.
REFERENCE_TEXT = {
    "en": "The library opens again next Thursday after the repairs.",
    "en+f3": "Could you bring the maps and a torch for the hike tomorrow?",
    "en+UniRobot": "Our train was late because of leaves on the line.",
}


@pytest.fixture(scope="module")
def references(speech: SpeechSet) -> dict[str, np.ndarray]:
    return {voice: pcm16k(reference_clip(speech.root / "references", voice, text)) for voice, text in REFERENCE_TEXT.items()}


@pytest.fixture(scope="module")
def loaded(http: httpx.Client, speech: SpeechSet) -> None:
    """Loads canary, pyannote and speaker_transcript (the models load on their first request)."""
    files = {"file": (speech.silence.name, speech.silence.read_bytes(), "audio/wav")}
    response = http.post("/v1/audio/transcriptions", data={"model": "canary", "response_format": "diarized_json"}, files=files)
    assert response.status_code == 200, response.text


def pcm16k(path: Path) -> np.ndarray:
    command = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-ac", "1", "-ar", "16000", "-f", "f32le", "-"]
    return np.frombuffer(subprocess.run(command, check=True, capture_output=True).stdout, dtype=np.float32)


def known(names: list[str], clips: list[np.ndarray]) -> dict[str, np.ndarray]:
    return {
        "known_speaker_names": np.array([name.encode() for name in names], dtype=np.object_),
        "known_speaker_references": np.concatenate(clips).astype(np.float32),
        "known_speaker_reference_lengths": np.array([len(clip) for clip in clips], dtype=np.int32),
    }


def decoded(result: grpcclient.InferResult, name: str) -> list[str]:
    return [value.decode() for value in result.as_numpy(name).reshape(-1)]


def coverage(span: tuple[float, float], turns: list[tuple[float, float]]) -> float:
    start, end = span
    return sum(max(0.0, min(end, b) - max(start, a)) for a, b in turns) / (end - start)


@pytest.mark.parametrize("order", ["as spoken", "swapped"])
def test_references_name_the_voices(
    triton: grpcclient.InferenceServerClient, speech: SpeechSet, references: dict[str, np.ndarray], loaded: None, order: str
) -> None:
    """Alice's reference is the `en` voice, Bob's `en+f3` (swapped: the other way round): each voice's lines are
    covered by turns carrying its name, in `speakers`, `exclusive_speakers` and `rttm` alike."""
    voices = ["en", "en+f3"] if order == "as spoken" else ["en+f3", "en"]
    name_of = dict(zip(voices, ["Alice", "Bob"], strict=True))
    result = infer(triton, "pyannote", {"audio": pcm16k(speech.dialogue), **known(["Alice", "Bob"], [references[v] for v in voices])})
    speakers, times = decoded(result, "speakers"), result.as_numpy("turn_times")
    assert set(speakers) == {"Alice", "Bob"}, speakers
    for voice, start, end in line_spans(speech):
        for labels, spans in ((speakers, times), (decoded(result, "exclusive_speakers"), result.as_numpy("exclusive_turn_times"))):
            own = [(float(a), float(b)) for label, (a, b) in zip(labels, spans, strict=True) if label == name_of[voice]]
            assert coverage((start, end), own) >= 0.8, (voice, start, end, list(zip(labels, spans.tolist(), strict=True)))
    rttm = result.as_numpy("rttm")[0].decode().strip().splitlines()
    assert [line.split()[7] for line in rttm] == speakers
    # Two speakers, two references: each speaker's own reference is far above the threshold, the other far below.
    pairs = decoded_pairs(result)
    similarities = result.as_numpy("speaker_similarities")
    assert similarities.shape == (2, 2) and [original for original, _ in pairs] == ["SPEAKER_00", "SPEAKER_01"]
    for row, (_, name) in enumerate(pairs):
        column = ["Alice", "Bob"].index(name)
        assert similarities[row, column] >= THRESHOLD > similarities[row, 1 - column], similarities


def decoded_pairs(result: grpcclient.InferResult) -> list[list[str]]:
    return [[value.decode() for value in row] for row in result.as_numpy("speaker_labels")]


def test_a_voice_nobody_speaks_gives_no_name(
    triton: grpcclient.InferenceServerClient, speech: SpeechSet, references: dict[str, np.ndarray], loaded: None
) -> None:
    """Carol's reference is a third voice: her similarities stay under the threshold, so the `en+f3` speaker keeps
    its SPEAKER_nn label while Alice (`en`) is named."""
    result = infer(
        triton, "pyannote", {"audio": pcm16k(speech.dialogue), **known(["Alice", "Carol"], [references["en"], references["en+UniRobot"]])}
    )
    similarities = result.as_numpy("speaker_similarities")
    assert similarities.shape == (2, 2) and similarities[:, 1].max() < THRESHOLD, similarities
    pairs = decoded_pairs(result)
    assert [label for _, label in pairs].count("Alice") == 1 and "Carol" not in [label for _, label in pairs]
    unnamed = [original for original, label in pairs if original == label]
    assert len(unnamed) == 1 and set(decoded(result, "speakers")) == {"Alice", unnamed[0]}
    f3_line = next((start, end) for voice, start, end in line_spans(speech) if voice == "en+f3")
    turns = [
        (float(a), float(b))
        for s, (a, b) in zip(decoded(result, "speakers"), result.as_numpy("turn_times"), strict=True)
        if s == unnamed[0]
    ]
    assert coverage(f3_line, turns) >= 0.8


def test_without_known_speakers_nothing_is_renamed(triton: grpcclient.InferenceServerClient, speech: SpeechSet, loaded: None) -> None:
    result = infer(triton, "pyannote", {"audio": pcm16k(speech.dialogue)})
    pairs = decoded_pairs(result)
    assert pairs and all(original == label for original, label in pairs)
    assert result.as_numpy("speaker_similarities").shape == (len(pairs), 0)
    assert set(decoded(result, "speakers")) == {original for original, _ in pairs}


def test_speaker_transcript_passes_the_names_through(
    triton: grpcclient.InferenceServerClient, speech: SpeechSet, references: dict[str, np.ndarray], loaded: None
) -> None:
    inputs = {"audio": pcm16k(speech.dialogue), **known(["Alice", "Bob"], [references["en"], references["en+f3"]])}
    result = infer(triton, "speaker_transcript", inputs)
    segment_speakers = decoded(result, "segment_speakers")
    assert segment_speakers and set(segment_speakers) == {"Alice", "Bob"}, segment_speakers
    assert set(decoded(result, "speakers")) == {"Alice", "Bob"}
    assert {speaker for speaker in decoded(result, "word_speakers") if speaker} <= {"Alice", "Bob"}


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("counts differ", "give one reference clip per name"),
        ("too long", "known_speaker_references[1] is 11.00 s long, longer than the 10 s maximum"),
        ("all zeros", "known_speaker_references[0] is silent"),
    ],
)
def test_bad_references_are_invalid_arguments(
    triton: grpcclient.InferenceServerClient,
    speech: SpeechSet,
    references: dict[str, np.ndarray],
    loaded: None,
    case: str,
    expected: str,
) -> None:
    if case == "counts differ":
        tensors = known(["Alice", "Bob"], [references["en"], references["en+f3"]])
        tensors["known_speaker_reference_lengths"] = np.array([tensors["known_speaker_references"].size], dtype=np.int32)
    elif case == "too long":
        tensors = known(["Alice", "Bob"], [references["en"], np.resize(references["en+f3"], 11 * 16000)])
    else:
        tensors = known(["Alice"], [np.zeros(3 * 16000, dtype=np.float32)])
    with pytest.raises(grpcclient.InferenceServerException) as error:
        infer(triton, "pyannote", {"audio": pcm16k(speech.silence), **tensors})
    assert "INVALID_ARG" in str(error.value.status()) and expected in error.value.message(), error.value.message()
    # Through speaker_transcript (BLS) the message comes back; Triton 2.51's BLS responses do not keep the
    # error's code, so its status is not checked here.
    with pytest.raises(grpcclient.InferenceServerException) as error:
        infer(triton, "speaker_transcript", {"audio": pcm16k(speech.silence), **tensors})
    message = error.value.message()
    assert message.startswith("pyannote: ") and expected in message, message


# Through the adapter: OpenAI's known_speaker_names[] / known_speaker_references[] (data URLs) -------------


def data_url(path: Path, mime: str = "audio/wav") -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


@pytest.fixture(scope="module")
def reference_urls(speech: SpeechSet) -> dict[str, str]:
    return {voice: data_url(reference_clip(speech.root / "references", voice, text)) for voice, text in REFERENCE_TEXT.items()}


def named_coverage(segments: list[dict[str, object]], speech: SpeechSet, name_of: dict[str, str]) -> None:
    for voice, start, end in line_spans(speech):
        own = [(float(s["start"]), float(s["end"])) for s in segments if s["speaker"] == name_of[voice]]  # type: ignore[arg-type]
        assert coverage((start, end), own) >= 0.8, (voice, start, end, segments)


@pytest.mark.parametrize("order", ["as spoken", "swapped"])
def test_the_sdk_names_known_speakers(client: openai.OpenAI, speech: SpeechSet, reference_urls: dict[str, str], order: str) -> None:
    voices = ["en", "en+f3"] if order == "as spoken" else ["en+f3", "en"]
    with speech.dialogue.open("rb") as audio:
        result = client.audio.transcriptions.create(
            model="canary",
            file=audio,
            response_format="diarized_json",
            known_speaker_names=["agent", "customer"],
            known_speaker_references=[reference_urls[voice] for voice in voices],
        )
    segments = result.model_dump()["segments"]
    assert {segment["speaker"] for segment in segments} == {"agent", "customer"}, segments
    named_coverage(segments, speech, dict(zip(voices, ["agent", "customer"], strict=True)))


def test_a_streamed_diarization_names_known_speakers(client: openai.OpenAI, speech: SpeechSet, reference_urls: dict[str, str]) -> None:
    with speech.dialogue.open("rb") as audio:
        events = list(
            client.audio.transcriptions.create(
                model="canary",
                file=audio,
                response_format="diarized_json",
                stream=True,
                known_speaker_names=["agent", "customer"],
                known_speaker_references=[reference_urls["en"], reference_urls["en+f3"]],
            )
        )
    segments = [event.model_dump() for event in events if event.type == "transcript.text.segment"]
    # canary_stream passed the clips to pyannote: the segments carry the names, never SPEAKER_nn. (Which word
    # gets which name is not checked here: the tiny Canary's word times come from a random aligner.)
    assert segments and {segment["speaker"] for segment in segments} <= {"agent", "customer"}, segments


def test_the_seed_diarization_route_names_known_speakers(http: httpx.Client, speech: SpeechSet, reference_urls: dict[str, str]) -> None:
    data = {"known_speaker_names[]": ["agent", "customer"], "known_speaker_references[]": [reference_urls["en"], reference_urls["en+f3"]]}
    files = {"file": (speech.dialogue.name, speech.dialogue.read_bytes(), "audio/wav")}
    response = http.post("/api/diarization/process", data={**data, "rttm": "true"}, files=files)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body["speakers"]) == {"agent", "customer"}
    named_coverage(body["segments"], speech, {"en": "agent", "en+f3": "customer"})
    assert {line.split()[7] for line in body["rttm"].strip().splitlines()} == {"agent", "customer"}


def _error(http: httpx.Client, speech: SpeechSet, data: dict[str, object]) -> dict[str, str]:
    files = {"file": (speech.dialogue.name, speech.dialogue.read_bytes(), "audio/wav")}
    response = http.post("/v1/audio/transcriptions", data={"model": "canary", "response_format": "diarized_json", **data}, files=files)
    assert response.status_code == 400, response.text
    error: dict[str, str] = response.json()["error"]
    return error


def test_names_and_references_of_different_counts_are_400(http: httpx.Client, speech: SpeechSet, reference_urls: dict[str, str]) -> None:
    error = _error(http, speech, {"known_speaker_names[]": ["agent", "customer"], "known_speaker_references[]": [reference_urls["en"]]})
    assert error["param"] == "known_speaker_references" and "2 entries" in error["message"]


def test_a_reference_that_is_not_audio_is_400(http: httpx.Client, speech: SpeechSet) -> None:
    png = "data:image/png;base64," + base64.b64encode(png_bytes(8, 8)).decode()
    error = _error(http, speech, {"known_speaker_names[]": ["agent"], "known_speaker_references[]": [png]})
    assert error["code"] == "invalid_reference" and "known_speaker_references[0]" in error["message"]


def test_a_reference_url_is_never_fetched(http: httpx.Client, speech: SpeechSet, image_server: ImageServer) -> None:
    url = f"{image_server.url}/reference.wav"
    error = _error(http, speech, {"known_speaker_names[]": ["agent"], "known_speaker_references[]": [url]})
    assert error["param"] == "known_speaker_references" and "data URL" in error["message"]
    assert "/reference.wav" not in image_server.hits


def test_a_reference_too_long_is_400(http: httpx.Client, speech: SpeechSet) -> None:
    long_clip = speech.root / "long-reference.wav"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(speech.dialogue), "-t", "12", str(long_clip)], check=True)
    error = _error(http, speech, {"known_speaker_names[]": ["agent"], "known_speaker_references[]": [data_url(long_clip)]})
    assert error["code"] == "reference_too_long" and "10 s" in error["message"]


def test_known_speakers_need_diarized_json(http: httpx.Client, speech: SpeechSet, reference_urls: dict[str, str]) -> None:
    files = {"file": (speech.dialogue.name, speech.dialogue.read_bytes(), "audio/wav")}
    data = {"model": "canary", "known_speaker_names[]": ["agent"], "known_speaker_references[]": [reference_urls["en"]]}
    response = http.post("/v1/audio/transcriptions", data=data, files=files)
    assert response.status_code == 400 and response.json()["error"]["param"] == "known_speaker_names"


def test_a_silent_reference_is_400(http: httpx.Client, speech: SpeechSet) -> None:
    error = _error(http, speech, {"known_speaker_names[]": ["agent"], "known_speaker_references[]": [data_url(speech.silence)]})
    assert error["code"] == "invalid_reference" and "known_speaker_references[0] is silent" in error["message"]
