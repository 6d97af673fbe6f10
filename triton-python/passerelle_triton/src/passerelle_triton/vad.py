"""Speech detection with silero-vad and chunk planning for long audio.

All times are seconds from the start of the audio; PCM is 16 kHz mono float32.

``speech_regions`` runs silero-vad (the TorchScript model bundled with the ``silero-vad`` package, loaded once
per process on first use) over the whole signal.  It reads the caller's array through a zero-copy tensor
view, so an hour of audio (230 MB of float32) is never duplicated.  Torch's intra-op thread count is
process-wide: it is set to 1 while silero runs (calls are serialized) and restored afterwards, and the
``torch.set_num_threads(1)`` that ``import silero_vad`` performs is undone as well.

``plan_chunks`` turns those regions into contiguous windows of at most ``max_chunk_s`` that cover
``[0, duration]``:

- consecutive speech regions are packed greedily into one window while they fit;
- between two windows the boundary is the middle of the silence separating them, or the point of that
  silence nearest to the middle that keeps both windows within ``max_chunk_s``;
- silence too long for the neighbouring windows to hold becomes windows of its own (equal parts), which
  contain no speech: callers skip them, ``windows_with_speech`` selects the others;
- a speech region longer than ``max_chunk_s`` is split into ``ceil(length / max_chunk_s)`` equal parts.  This
  is the only case where a boundary falls inside speech.

With no speech at all ``plan_chunks`` returns ``[]``: there is nothing to transcribe, and callers report an
empty result without running a model.
"""

from __future__ import annotations

import itertools
import math
import threading
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

SAMPLE_RATE = 16000

Interval = tuple[float, float]

_EPS = 1e-9

_silero_api: tuple[Any, Any] | None = None
_load_lock = threading.Lock()
# The silero model is stateful (reset at the start of each call), so calls must not interleave.
_run_lock = threading.Lock()


def _silero() -> tuple[Any, Any]:
    """Return ``(model, get_speech_timestamps)``, importing silero-vad and loading its model on first use."""
    global _silero_api
    with _load_lock:
        if _silero_api is None:
            import torch

            threads = torch.get_num_threads()
            try:
                # Importing silero_vad runs torch.set_num_threads(1) for the whole process; undo that.
                from silero_vad import get_speech_timestamps, load_silero_vad
            finally:
                torch.set_num_threads(threads)
            _silero_api = (load_silero_vad(onnx=False), get_speech_timestamps)
        return _silero_api


def speech_regions(
    pcm: np.ndarray,
    *,
    threshold: float = 0.5,
    min_speech_ms: int = 250,
    min_silence_ms: int = 100,
    speech_pad_ms: int = 30,
) -> list[Interval]:
    """Speech regions of ``pcm`` (16 kHz mono float32), as sorted, disjoint ``(start, end)`` seconds.

    The keyword arguments are silero-vad's ``get_speech_timestamps`` settings, with its defaults.
    """
    audio = as_pcm(pcm)
    if audio.size == 0:
        return []
    import torch

    model, get_speech_timestamps = _silero()
    with warnings.catch_warnings():
        # A read-only array (np.frombuffer, Triton tensors) gives a read-only view; silero only reads it.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        tensor = torch.from_numpy(audio)
    with _run_lock, torch.inference_mode():
        threads = torch.get_num_threads()
        # silero runs one 32 ms window at a time: with several intra-op threads it was >10x slower (2-core CPU).
        torch.set_num_threads(1)
        try:
            stamps = get_speech_timestamps(
                tensor,
                model,
                threshold=threshold,
                sampling_rate=SAMPLE_RATE,
                min_speech_duration_ms=min_speech_ms,
                min_silence_duration_ms=min_silence_ms,
                speech_pad_ms=speech_pad_ms,
                return_seconds=False,
            )
        finally:
            torch.set_num_threads(threads)
    return [(stamp["start"] / SAMPLE_RATE, stamp["end"] / SAMPLE_RATE) for stamp in stamps]


def plan_chunks(regions: Iterable[Interval], duration_s: float, max_chunk_s: float) -> list[Interval]:
    """Contiguous windows covering ``[0, duration_s]``, each at most ``max_chunk_s``, cut in silence.

    See the module docstring for the rules.  Returns ``[]`` when ``regions`` holds no speech inside the audio.
    """
    if not max_chunk_s > 0:
        raise ValueError(f"max_chunk_s must be positive, got {max_chunk_s}")
    if duration_s < 0:
        raise ValueError(f"duration_s must not be negative, got {duration_s}")
    speech = normalize_regions(regions, duration_s)
    if not speech:
        return []
    if duration_s <= max_chunk_s:
        return [(0.0, float(duration_s))]

    groups = _pack(_split_long(speech, max_chunk_s), max_chunk_s)
    duration = float(duration_s)
    chunks: list[Interval] = []
    start = max(0.0, groups[0][1] - max_chunk_s)
    chunks.extend(_equal_parts(0.0, start, max_chunk_s))
    for i, (_, group_end) in enumerate(groups):
        if i + 1 == len(groups):
            end = min(duration, start + max_chunk_s)
            chunks.append((start, end))
            chunks.extend(_equal_parts(end, duration, max_chunk_s))
            break
        next_start, next_end = groups[i + 1]
        middle = (group_end + next_start) / 2
        # A cut in [lowest, highest] keeps both this window and the next one within max_chunk_s.
        lowest = max(group_end, next_end - max_chunk_s)
        highest = min(next_start, start + max_chunk_s)
        if lowest <= highest:
            cut = min(max(middle, lowest), highest)
            chunks.append((start, cut))
            start = cut
        else:
            # Too much silence for two windows: what neither can hold gets windows of its own.
            end = min(middle, start + max_chunk_s)
            chunks.append((start, end))
            start = max(middle, next_end - max_chunk_s)
            chunks.extend(_equal_parts(end, start, max_chunk_s))
    return chunks


def windows_with_speech(chunks: Sequence[Interval], regions: Iterable[Interval]) -> list[int]:
    """Indices of the ``chunks`` that overlap at least one speech region."""
    speech = sorted(regions)
    hits: list[int] = []
    j = 0
    for i, (start, end) in enumerate(chunks):
        while j < len(speech) and speech[j][1] <= start:
            j += 1
        if j < len(speech) and speech[j][0] < end:
            hits.append(i)
    return hits


def normalize_regions(regions: Iterable[Interval], duration_s: float) -> list[Interval]:
    """Sort, clip to ``[0, duration_s]``, drop empty regions and merge overlapping ones."""
    merged: list[Interval] = []
    for raw_start, raw_end in sorted((float(s), float(e)) for s, e in regions):
        start, end = max(raw_start, 0.0), min(raw_end, float(duration_s))
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _split_long(speech: list[Interval], max_chunk_s: float) -> list[Interval]:
    parts: list[Interval] = []
    for start, end in speech:
        parts.extend(_equal_parts(start, end, max_chunk_s))
    return parts


def _pack(parts: list[Interval], max_chunk_s: float) -> list[Interval]:
    """Greedily merge consecutive parts while the merged span fits in a window."""
    groups: list[Interval] = []
    for start, end in parts:
        if groups and end - groups[-1][0] <= max_chunk_s + _EPS:
            groups[-1] = (groups[-1][0], end)
        else:
            groups.append((start, end))
    return groups


def _equal_parts(start: float, end: float, max_len: float) -> list[Interval]:
    """``[start, end]`` cut into the fewest equal parts of at most ``max_len``; ``[]`` if empty."""
    length = end - start
    if length <= _EPS:
        return []
    n = max(1, math.ceil(length / max_len - _EPS))
    bounds = [start + length * k / n for k in range(n)] + [end]
    return list(itertools.pairwise(bounds))


def as_pcm(pcm: np.ndarray) -> np.ndarray:
    """``pcm`` as a one-dimensional float32 array: the same array (no copy) when it already is one."""
    audio = np.asarray(pcm)
    if audio.ndim == 2 and 1 in audio.shape:
        audio = audio.reshape(-1)
    if audio.ndim != 1:
        raise ValueError(f"expected mono PCM (one dimension), got shape {audio.shape}")
    return np.ascontiguousarray(audio, dtype=np.float32)
