"""Test audio, spoken by espeak-ng and encoded by ffmpeg (both real, installed by set-up).

The dialogue alternates two voices with silences between the turns, so that the VAD has clear
speech regions and the diarization has two speakers to find. The long file repeats it to more
than ten minutes. Every supported container is made from the same dialogue.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

LINES = (
    ("en", "Good morning. Today we look at the weather report for the whole week."),
    ("en+f3", "Thank you. It will be sunny on Monday, with some rain later on Tuesday."),
    ("en", "And what about the weekend, should we plan a trip to the mountains?"),
    ("en+f3", "Yes, the weekend looks dry and warm, a good time for a long walk."),
)
GAP_S = 1.5
LONG_REPEATS = 26  # about 26 x 24 s: more than ten minutes
# container → ffmpeg output options
ENCODINGS = {
    "wav": [],
    "flac": [],
    "mp3": ["-c:a", "libmp3lame"],
    "ogg": ["-c:a", "libvorbis"],
    "opus": ["-c:a", "libopus"],
    "m4a": ["-c:a", "aac"],
    "aac": ["-c:a", "aac", "-f", "adts"],
    "webm": ["-c:a", "libopus"],
}


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def duration_s(path: Path) -> float:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "json", str(path)], check=True, capture_output=True
    ).stdout
    return float(json.loads(out)["format"]["duration"])


@dataclass
class SpeechSet:
    root: Path
    dialogue: Path  # 16 kHz mono WAV
    silence: Path
    long: Path
    encoded: dict[str, Path] = field(default_factory=dict)

    @property
    def dialogue_s(self) -> float:
        return duration_s(self.dialogue)


def build(root: Path) -> SpeechSet:
    root.mkdir(parents=True, exist_ok=True)
    parts: list[Path] = []
    gap = root / "gap.wav"
    ffmpeg("-f", "lavfi", "-i", f"anullsrc=r=16000:cl=mono:d={GAP_S}", str(gap))
    for index, (voice, text) in enumerate(LINES):
        raw = root / f"line{index}.raw.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(raw), text], check=True)
        line = root / f"line{index}.wav"
        ffmpeg("-i", str(raw), "-ar", "16000", "-ac", "1", str(line))
        parts += [gap, line]
    parts.append(gap)
    listing = root / "parts.txt"
    listing.write_text("".join(f"file '{part}'\n" for part in parts))
    dialogue = root / "dialogue.wav"
    ffmpeg("-f", "concat", "-safe", "0", "-i", str(listing), "-ar", "16000", "-ac", "1", "-c:a", "pcm_s16le", str(dialogue))
    silence = root / "silence.wav"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono:d=4", str(silence))
    long = root / "long.wav"
    ffmpeg("-stream_loop", str(LONG_REPEATS - 1), "-i", str(dialogue), "-c", "copy", str(long))
    speech = SpeechSet(root, dialogue, silence, long)
    for container, options in ENCODINGS.items():
        target = root / f"encoded.{container}"
        ffmpeg("-i", str(dialogue), *options, str(target))
        speech.encoded[container] = target
    return speech


def reference_clip(root: Path, voice: str, text: str) -> Path:
    """A known speaker's reference clip: espeak-ng's `voice` saying `text`, as 16 kHz mono WAV."""
    root.mkdir(parents=True, exist_ok=True)
    name = "".join(character if character.isalnum() else "-" for character in f"{voice}-{text}")[:80]
    raw, clip = root / f"ref-{name}.raw.wav", root / f"ref-{name}.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(raw), text], check=True)
    ffmpeg("-i", str(raw), "-ar", "16000", "-ac", "1", str(clip))
    return clip


def line_spans(speech: SpeechSet) -> list[tuple[str, float, float]]:
    """(voice, start, end) of each line of the dialogue, in seconds, as `build` laid them out."""
    spans: list[tuple[str, float, float]] = []
    position = 0.0
    for index, (voice, _) in enumerate(LINES):
        position += GAP_S
        length = duration_s(speech.root / f"line{index}.wav")
        spans.append((voice, position, position + length))
        position += length
    return spans
