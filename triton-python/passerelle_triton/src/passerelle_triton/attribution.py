"""Attribute transcribed words to diarized speakers (pure Python: no torch, no numpy).

Times are seconds, as floats. A word is a ``(text, start, end)`` tuple; a turn is a :class:`Turn`
(speaker label and time span) as produced by the diarization engine, preferably its
``exclusive_segments`` (at most one speaker at any instant, so that a word is rarely split between
two speakers).

Two values whose difference is at most :data:`TIE_TOLERANCE` count as equal wherever this module
compares overlaps or distances, so that floating-point noise (``1.15 - 1.0`` versus ``1.3 - 1.15``)
does not decide a tie.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypedDict

TIE_TOLERANCE = 1e-9

Word = tuple[str, float, float]
WordWithSpeaker = tuple[str, float, float, str | None]


@dataclass(frozen=True)
class Turn:
    """One speaker talking from ``start`` to ``end`` (seconds, ``start <= end``)."""

    speaker: str
    start: float
    end: float


class SpeakerSegment(TypedDict):
    speaker: str | None
    start: float
    end: float
    text: str


class _TurnIndex:
    """Turns of positive length sorted by start, for interval queries."""

    def __init__(self, turns: Iterable[Turn]) -> None:
        self.turns = sorted((turn for turn in turns if turn.end > turn.start), key=lambda turn: (turn.start, turn.end))
        self.starts = [turn.start for turn in self.turns]
        # max_end[i] is the latest end among turns[0..i]: a backward scan can stop once it is before the query.
        self.max_end: list[float] = []
        latest = float("-inf")
        for turn in self.turns:
            latest = max(latest, turn.end)
            self.max_end.append(latest)

    def touching(self, low: float, high: float) -> list[Turn]:
        """Turns whose closed span meets the closed interval [low, high]."""
        found = []
        index = bisect.bisect_right(self.starts, high) - 1
        while index >= 0 and self.max_end[index] >= low:
            if self.turns[index].end >= low:
                found.append(self.turns[index])
            index -= 1
        return found

    def nearest_distance(self, point: float) -> float:
        """Distance from ``point`` to the nearest turn (0 inside one); the index must not be empty."""
        index = bisect.bisect_right(self.starts, point)
        best = float("inf")
        if index > 0:
            best = max(0.0, point - self.max_end[index - 1])
        if index < len(self.turns):
            best = min(best, self.turns[index].start - point)
        return best


def _distance(point: float, turn: Turn) -> float:
    return max(turn.start - point, point - turn.end, 0.0)


def _overlap(start: float, end: float, turn: Turn) -> float:
    return max(0.0, min(end, turn.end) - max(start, turn.start))


def _nearest_speaker(midpoint: float, candidates: Iterable[Turn]) -> str:
    """Speaker of the candidate turn nearest to ``midpoint``; ties: earlier turn start, then smaller label."""
    turns = list(candidates)
    closest = min(_distance(midpoint, turn) for turn in turns)
    tied = (turn for turn in turns if _distance(midpoint, turn) <= closest + TIE_TOLERANCE)
    return min(tied, key=lambda turn: (turn.start, turn.speaker)).speaker


def assign_speakers(words: Sequence[Word], turns: Sequence[Turn], max_distance: float | None = None) -> list[str | None]:
    """Pick one speaker per word, aligned with ``words``.

    For a word spanning ``[start, end]``:

    1. Each speaker's overlap is the total time, summed over that speaker's turns, that its turns share
       with the word. The speaker with the largest positive overlap wins.
    2. If several speakers share the largest overlap (within ``TIE_TOLERANCE``), or no turn overlaps
       the word at all (a pause, or a zero-length word), the word goes to the turn nearest in time:
       the one whose span is closest to the word's midpoint ``(start + end) / 2`` (distance 0 when the
       midpoint lies inside it). In a tie only the tied speakers' turns compete; without overlap
       every turn does. Turns equally near (within ``TIE_TOLERANCE``) are decided by the earlier
       turn start, then by the speaker label's string order.
    3. The word gets ``None`` when there is no turn, or when ``max_distance`` is given and step 2
       found no turn within ``max_distance`` seconds of the midpoint. Words with an overlap are
       assigned whatever ``max_distance`` is.

    Turns whose ``end <= start`` are ignored. Words and turns may come in any order, and turns may
    overlap one another. Raises ``ValueError`` for a word whose end is before its start.
    """
    index = _TurnIndex(turns)
    speakers: list[str | None] = []
    for text, start, end in words:
        if end < start:
            raise ValueError(f"word {text!r} ends before it starts ({start} > {end})")
        if not index.turns:
            speakers.append(None)
            continue
        midpoint = (start + end) / 2

        overlaps: dict[str, float] = {}
        overlapping: list[Turn] = []
        for turn in index.touching(start, end):
            shared = _overlap(start, end, turn)
            if shared > 0:
                overlaps[turn.speaker] = overlaps.get(turn.speaker, 0.0) + shared
                overlapping.append(turn)
        if overlaps:
            best = max(overlaps.values())
            leaders = {speaker for speaker, shared in overlaps.items() if shared >= best - TIE_TOLERANCE}
            if len(leaders) == 1:
                speakers.append(leaders.pop())
            else:
                speakers.append(_nearest_speaker(midpoint, (turn for turn in overlapping if turn.speaker in leaders)))
            continue

        nearest = index.nearest_distance(midpoint)
        if max_distance is not None and nearest > max_distance:
            speakers.append(None)
            continue
        reach = nearest + TIE_TOLERANCE
        speakers.append(_nearest_speaker(midpoint, index.touching(midpoint - reach, midpoint + reach)))
    return speakers


def group_segments(
    words_with_speakers: Iterable[WordWithSpeaker], separator: str = " ", max_gap: float | None = None
) -> list[SpeakerSegment]:
    """Merge runs of consecutive words of one speaker into ``{speaker, start, end, text}`` segments.

    ``words_with_speakers`` holds ``(text, start, end, speaker)`` tuples, e.g.
    ``[(*word, speaker) for word, speaker in zip(words, assign_speakers(words, turns))]``.
    Words are first ordered by start time (stably: words with equal starts keep their input order).
    A new segment begins whenever the speaker changes (``None`` is a speaker value like any other,
    so unattributed words form their own segments) and, when ``max_gap`` is given, when the pause
    between a word's start and the latest end so far in the segment exceeds ``max_gap`` seconds.

    A segment's ``start`` is its first word's start, its ``end`` the latest end among its words, and
    its ``text`` the words' texts, each stripped of surrounding whitespace, joined with ``separator``
    (words that are empty after stripping add no text, but still extend the segment's time span).
    An empty input gives an empty list.
    """
    segments: list[SpeakerSegment] = []
    texts: list[list[str]] = []
    for text, start, end, speaker in sorted(words_with_speakers, key=lambda word: word[1]):
        current = segments[-1] if segments else None
        if current is not None and current["speaker"] == speaker and (max_gap is None or start - current["end"] <= max_gap):
            current["end"] = max(current["end"], end)
        else:
            segments.append({"speaker": speaker, "start": start, "end": end, "text": ""})
            texts.append([])
        if stripped := text.strip():
            texts[-1].append(stripped)
    for segment, parts in zip(segments, texts, strict=True):
        segment["text"] = separator.join(parts)
    return segments


def turn_segments(words: Sequence[Word], turns: Sequence[Turn], speakers: Sequence[str | None]) -> list[SpeakerSegment]:
    """One segment per speaker turn, holding the words attributed to it: "who said what, when".

    ``speakers`` is ``assign_speakers(words, turns)``. Each word goes to the turn of its speaker that
    overlaps it most, or else the nearest one (ties: the earlier turn). A segment spans its turn,
    widened to cover its words; its text is its words in time order. Turns without words stay, with
    empty text: the diarization heard someone even where the transcription found no word. Segments
    are ordered by start. With no turn of positive length, or words without a speaker, this falls
    back to :func:`group_segments` for those words.
    """
    index = _TurnIndex(turns)
    if not index.turns:
        return group_segments([(*word, speaker) for word, speaker in zip(words, speakers, strict=True)])
    positions = {id(turn): position for position, turn in enumerate(index.turns)}
    own: dict[str, list[int]] = {}
    for position, turn in enumerate(index.turns):
        own.setdefault(turn.speaker, []).append(position)
    own_starts = {speaker: [index.turns[position].start for position in found] for speaker, found in own.items()}
    buckets: dict[int, list[Word]] = {position: [] for position in range(len(index.turns))}
    orphans: list[WordWithSpeaker] = []
    for word, speaker in zip(words, speakers, strict=True):
        text, start, end = word
        if speaker not in own:
            orphans.append((text, start, end, speaker))
            continue
        midpoint = (start + end) / 2
        candidates = [
            positions[id(turn)] for turn in index.touching(start, end) if turn.speaker == speaker and _overlap(start, end, turn) > 0
        ]
        if not candidates:  # the speaker's turns just before and just after the word
            after = bisect.bisect_right(own_starts[speaker], midpoint)
            candidates = own[speaker][max(0, after - 1) : after + 1]
        best = max(
            candidates,
            key=lambda position: (_overlap(start, end, index.turns[position]), -_distance(midpoint, index.turns[position]), -position),
        )
        buckets[best].append(word)
    segments: list[SpeakerSegment] = []
    for position, turn in enumerate(index.turns):
        attached = sorted(buckets[position], key=lambda word: word[1])
        segments.append(
            {
                "speaker": turn.speaker,
                "start": min([turn.start, *(word[1] for word in attached)]),
                "end": max([turn.end, *(word[2] for word in attached)]),
                "text": " ".join(stripped for word in attached if (stripped := word[0].strip())),
            }
        )
    segments.extend(group_segments(orphans))
    return sorted(segments, key=lambda segment: (segment["start"], segment["end"]))
