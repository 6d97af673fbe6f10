"""Known speakers: OpenAI's `known_speaker_names[]` and `known_speaker_references[]` (reference clips as
data URLs), checked and decoded here, then matched inside Triton (`pyannote`, see docs/triton.md).

Only `data:` URLs are read: nothing is ever fetched, so a reference cannot make the gateway call a
URL. Each clip's size is checked before its base64 is decoded, and its length before it goes to
Triton; every problem is a 400 naming the field and the clip's index.
"""

from __future__ import annotations

import base64
import binascii
import re

import numpy as np

from passerelle.audio.decoding import SAMPLE_RATE, AudioDecoder
from passerelle.audio.tensors import KnownSpeakers
from passerelle.core.errors import APIError, InvalidRequest

MAX_KNOWN_SPEAKERS = 4  # as OpenAI
MAX_NAME_CHARS = 64
# A 10 s clip as 48 kHz stereo 16-bit WAV is 1.9 MB, 2.6 MB in base64: this leaves room for that.
MAX_REFERENCE_CHARS = 4 * 1024 * 1024
SILENT_RMS = 1e-4  # -80 dBFS, as pyannote's check (passerelle_triton.speakers)
_DATA_URL = re.compile(r"data:(?P<type>[\w.+-]+/[\w.+-]+)?(?:;[\w.+-]+=[^;,]*)*;base64,(?P<data>.*)", re.S)
_RESERVED_NAME = re.compile(r"SPEAKER_\d+")


def _invalid(message: str, param: str, code: str = "invalid_value") -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


def check_names(names: list[str], references: list[str]) -> None:
    """The checks that need no decoding: counts, names, and each reference's form and size."""
    if len(names) != len(references):
        raise _invalid(
            f"known_speaker_names has {len(names)} entries and known_speaker_references {len(references)}; give one reference per name.",
            "known_speaker_references",
        )
    if len(names) > MAX_KNOWN_SPEAKERS:
        raise _invalid(f"At most {MAX_KNOWN_SPEAKERS} known speakers are supported; {len(names)} were given.", "known_speaker_names")
    for name in names:
        if not name.strip() or len(name) > MAX_NAME_CHARS or _RESERVED_NAME.fullmatch(name.strip()):
            raise _invalid(
                f"Known speaker name {name[:MAX_NAME_CHARS]!r} must be 1 to {MAX_NAME_CHARS} characters and not of the SPEAKER_nn form.",
                "known_speaker_names",
            )
    if len({name.strip() for name in names}) != len(names):
        raise _invalid("known_speaker_names must be distinct.", "known_speaker_names")
    for index, reference in enumerate(references):
        if len(reference) > MAX_REFERENCE_CHARS:
            raise _invalid(
                f"known_speaker_references[{index}] is {len(reference)} characters; the limit is {MAX_REFERENCE_CHARS}.",
                "known_speaker_references",
                "reference_too_large",
            )
        if _DATA_URL.fullmatch(reference) is None:
            raise _invalid(
                f"known_speaker_references[{index}] must be a base64 data URL (data:audio/wav;base64,...); URLs are not fetched.",
                "known_speaker_references",
            )


async def read_known_speakers(
    names: list[str], references: list[str], decoder: AudioDecoder, *, min_seconds: float, max_seconds: float
) -> KnownSpeakers | None:
    """The named reference clips as one PCM vector with their lengths; None when none were given."""
    if not names and not references:
        return None
    check_names(names, references)
    clips = []
    for index, reference in enumerate(references):
        match = _DATA_URL.fullmatch(reference)
        assert match is not None
        try:
            data = base64.b64decode(match.group("data"), validate=True)
        except (binascii.Error, ValueError):
            raise _invalid(f"known_speaker_references[{index}] is not valid base64.", "known_speaker_references") from None
        if not data:
            raise _invalid(f"known_speaker_references[{index}] is empty.", "known_speaker_references")
        try:
            pcm = await decoder.decode_clip(data, max_seconds)
        except APIError as error:
            raise _invalid(
                f"known_speaker_references[{index}] is not audio that can be used: {error.message}",
                "known_speaker_references",
                "invalid_reference",
            ) from error
        seconds = pcm.size / SAMPLE_RATE
        if not np.isfinite(pcm).all() or float(np.sqrt(np.mean(np.square(pcm)))) < SILENT_RMS:
            raise _invalid(f"known_speaker_references[{index}] is silent.", "known_speaker_references", "invalid_reference")
        if not min_seconds <= seconds <= max_seconds:
            raise _invalid(
                f"known_speaker_references[{index}] lasts {seconds:.1f} s; reference clips must last {min_seconds:g} to {max_seconds:g} s.",
                "known_speaker_references",
                "reference_too_long" if seconds > max_seconds else "reference_too_short",
            )
        clips.append(pcm)
    return KnownSpeakers(names=[name.strip() for name in names], pcm=np.concatenate(clips), lengths=[clip.size for clip in clips])
