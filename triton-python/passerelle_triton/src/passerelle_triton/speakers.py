"""Known speakers: name the diarization's speakers after short reference clips (OpenAI's
``known_speaker_names[]`` and ``known_speaker_references[]``).

The clips arrive as three tensors: the names, the clips' 16 kHz mono PCM concatenated, and each
clip's length in samples (same count as the names). :func:`parse_known_speakers` checks them
(``ValueError``, which the Triton models turn into INVALID_ARG). Each clip is embedded by the
diarization pipeline's own speaker-embedding model, and :func:`match_speakers` compares the
references with the diarization's speaker centroids (pyannote 4's
``DiarizeOutput.speaker_embeddings``, one row per label in sorted order) by cosine similarity: the
pairs are matched one to one (Hungarian assignment on the similarities, scipy's
``linear_sum_assignment``), and a pair gives its name only when its similarity reaches the
threshold. Speakers left without a name keep their ``SPEAKER_nn`` label.

Threshold. The default, 0.5, is for pyannote's WeSpeaker ResNet34 embeddings (community-1): the
cosine between two utterances of one speaker usually lies around 0.5 to 0.8 and between two
speakers around 0 to 0.3; a cluster centroid averages many chunk embeddings, which raises the
same-speaker side. 0.5 therefore prefers leaving ``SPEAKER_nn`` to giving a wrong name. The CPU
profile's tiny embedding is fitted (scripts/build_tiny_pyannote.py) so that its voices land above
0.7 and below 0.3 on held-out speech, on either side of the same default.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16000
DEFAULT_THRESHOLD = 0.5
DEFAULT_MIN_SECONDS = 1.0
DEFAULT_MAX_SECONDS = 10.0
# A clip whose RMS level is below this (-80 dBFS) holds no voice to embed.
SILENCE_RMS = 1e-4
GENERATED_LABEL = re.compile(r"SPEAKER_\d+")
NAMES, REFERENCES, LENGTHS = "known_speaker_names", "known_speaker_references", "known_speaker_reference_lengths"
KNOWN_SPEAKER_INPUTS = (NAMES, REFERENCES, LENGTHS)  # what the pipelines pass on to `pyannote` as they are

__all__ = [
    "DEFAULT_MAX_SECONDS",
    "DEFAULT_MIN_SECONDS",
    "DEFAULT_THRESHOLD",
    "KNOWN_SPEAKER_INPUTS",
    "KnownSpeakers",
    "SpeakerMatch",
    "match_speakers",
    "parse_known_speakers",
    "rttm_label",
]


@dataclass(frozen=True)
class KnownSpeakers:
    """Checked known speakers: ``names[i]`` is spoken in ``clips[i]`` (16 kHz mono float32)."""

    names: list[str]
    clips: list[np.ndarray]


@dataclass(frozen=True)
class SpeakerMatch:
    """``similarities[i, j]``: cosine between the i-th diarized speaker (sorted original labels) and reference j
    (NaN where the speaker has no centroid). ``labels`` maps every original label to the one it gets."""

    similarities: np.ndarray
    labels: dict[str, str]


def parse_known_speakers(
    names: Sequence[str] | None,
    references: np.ndarray | None,
    lengths: np.ndarray | None,
    min_seconds: float = DEFAULT_MIN_SECONDS,
    max_seconds: float = DEFAULT_MAX_SECONDS,
) -> KnownSpeakers | None:
    """The known speakers of a request, or None when it gives none (all three absent, or no names).

    ``ValueError`` when only some of the three are given, the counts differ, a name is empty,
    duplicated or of the ``SPEAKER_nn`` form (which the unnamed speakers keep), a length is not
    positive, the lengths do not add up to the PCM's size, or a clip is shorter than
    ``min_seconds``, longer than ``max_seconds``, silent or holds NaN or infinite samples.
    """
    given = [value is not None for value in (names, references, lengths)]
    if not any(given):
        return None
    if not all(given):
        missing = [name for name, present in zip((NAMES, REFERENCES, LENGTHS), given, strict=True) if not present]
        raise ValueError(f"{NAMES}, {REFERENCES} and {LENGTHS} go together; missing: {', '.join(missing)}")
    assert names is not None and references is not None and lengths is not None
    names = list(names)
    pcm = np.asarray(references).reshape(-1)
    counts = np.asarray(lengths).reshape(-1)
    if len(names) != counts.size:
        raise ValueError(f"{len(names)} {NAMES} but {counts.size} {LENGTHS}: give one reference clip per name")
    if not names:
        if pcm.size:
            raise ValueError(f"{REFERENCES} holds {pcm.size} samples but no {NAMES} were given")
        return None
    seen: set[str] = set()
    for index, name in enumerate(names):
        if not name.strip():
            raise ValueError(f"{NAMES}[{index}] is empty")
        if name in seen:
            raise ValueError(f"{NAMES}[{index}] {name!r} is given twice")
        if GENERATED_LABEL.fullmatch(name):
            raise ValueError(f"{NAMES}[{index}] {name!r} has the form of the labels unnamed speakers keep (SPEAKER_nn)")
        seen.add(name)
    if np.any(counts <= 0):
        index = int(np.argmax(counts <= 0))
        raise ValueError(f"{LENGTHS}[{index}] is {int(counts[index])}: every clip needs at least one sample")
    if int(counts.sum()) != pcm.size:
        raise ValueError(f"{LENGTHS} add up to {int(counts.sum())} samples but {REFERENCES} holds {pcm.size}")
    pcm = pcm.astype(np.float32, copy=False)
    clips: list[np.ndarray] = []
    start = 0
    for index, count in enumerate(int(count) for count in counts):
        clip = pcm[start : start + count]
        start += count
        seconds = count / SAMPLE_RATE
        if seconds < min_seconds:
            raise ValueError(f"{REFERENCES}[{index}] is {seconds:.2f} s long, shorter than the {min_seconds:g} s minimum")
        if seconds > max_seconds:
            raise ValueError(f"{REFERENCES}[{index}] is {seconds:.2f} s long, longer than the {max_seconds:g} s maximum")
        if not np.isfinite(clip).all():
            raise ValueError(f"{REFERENCES}[{index}] holds NaN or infinite samples")
        if float(np.sqrt(np.mean(np.square(clip, dtype=np.float64)))) < SILENCE_RMS:
            raise ValueError(f"{REFERENCES}[{index}] is silent (its level is below -80 dBFS)")
        clips.append(np.ascontiguousarray(clip))
    return KnownSpeakers(names, clips)


def _cosines(centroids: np.ndarray, references: np.ndarray) -> np.ndarray:
    """Cosine of every centroid with every reference; NaN for a zero (or non-finite) centroid."""
    rows = np.asarray(centroids, dtype=np.float64)
    columns = np.asarray(references, dtype=np.float64)
    row_norms = np.linalg.norm(rows, axis=1, keepdims=True)
    column_norms = np.linalg.norm(columns, axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        similarities: np.ndarray = (rows / row_norms) @ (columns / column_norms).T
    similarities[~np.isfinite(similarities)] = math.nan
    return similarities


def match_speakers(
    labels: Sequence[str], centroids: np.ndarray | None, references: np.ndarray, names: Sequence[str], threshold: float
) -> SpeakerMatch:
    """Give ``names[j]`` to ``labels[i]`` for the one-to-one assignment of largest total similarity, keeping only the
    pairs whose cosine reaches ``threshold``. ``centroids`` has one row per label (None: no centroids, nothing matches)."""
    from scipy.optimize import linear_sum_assignment

    if centroids is None or len(labels) == 0:
        similarities = np.full((len(labels), len(names)), math.nan)
    else:
        similarities = _cosines(centroids, references)
    mapping = {label: label for label in labels}
    if similarities.size:
        rows, columns = linear_sum_assignment(np.nan_to_num(similarities, nan=-2.0), maximize=True)
        for row, column in zip(rows, columns, strict=True):
            if similarities[row, column] >= threshold:  # False for NaN
                mapping[labels[row]] = names[column]
    return SpeakerMatch(similarities.astype(np.float32), mapping)


def rttm_label(label: str) -> str:
    """A label as an RTTM field: RTTM is space-separated, so whitespace in a name becomes ``_``."""
    return re.sub(r"\s+", "_", label.strip())
