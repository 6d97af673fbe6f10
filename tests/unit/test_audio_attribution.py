"""Word → speaker assignment (passerelle_triton.attribution), on synthetic words and turns whose
right answer is known. The module is pure Python, so it is imported here from the source tree."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "triton-python" / "passerelle_triton" / "src"))

from passerelle_triton.attribution import Turn, assign_speakers, group_segments, turn_segments

TURNS = [Turn("A", 0.0, 2.0), Turn("B", 2.5, 5.0), Turn("A", 5.0, 7.0)]


def test_words_inside_a_turn_get_its_speaker() -> None:
    words = [("hello", 0.2, 0.6), ("there", 0.7, 1.1), ("yes", 3.0, 3.4), ("again", 5.5, 6.0)]
    assert assign_speakers(words, TURNS) == ["A", "A", "B", "A"]


def test_a_word_across_a_change_goes_to_the_larger_overlap() -> None:
    # 1.8-2.6: 0.2 s with A, 0.1 s with B; 4.8-5.4: 0.2 s with B, 0.4 s with A.
    assert assign_speakers([("cross", 1.8, 2.6), ("over", 4.8, 5.4)], TURNS) == ["A", "A"]
    assert assign_speakers([("late", 1.9, 2.9)], TURNS) == ["B"]  # 0.1 s with A, 0.4 s with B


def test_a_word_in_a_pause_goes_to_the_nearest_turn() -> None:
    assert assign_speakers([("um", 2.05, 2.15)], TURNS) == ["A"]  # 0.1 s after A, 0.4 s before B
    assert assign_speakers([("uh", 2.35, 2.45)], TURNS) == ["B"]
    assert assign_speakers([("late", 9.0, 9.5)], TURNS) == ["A"]


def test_max_distance_leaves_far_words_unattributed() -> None:
    assert assign_speakers([("far", 20.0, 20.5), ("near", 6.5, 6.9)], TURNS, max_distance=1.0) == [None, "A"]


def test_no_turns_means_no_speaker() -> None:
    assert assign_speakers([("alone", 0.0, 1.0)], []) == [None]


def test_overlapping_turns_pick_the_speaker_with_more_shared_time() -> None:
    turns = [Turn("A", 0.0, 3.0), Turn("B", 1.0, 1.5)]
    assert assign_speakers([("both", 0.8, 1.6)], turns) == ["A"]  # A 0.8 s, B 0.5 s


def test_a_word_ending_before_it_starts_is_refused() -> None:
    with pytest.raises(ValueError, match="ends before it starts"):
        assign_speakers([("bad", 2.0, 1.0)], TURNS)


def test_group_segments_merges_runs_of_one_speaker() -> None:
    words = [("hello", 0.2, 0.6), ("there", 0.7, 1.1), ("yes", 3.0, 3.4), ("sure", 3.5, 3.9), ("bye", 5.5, 6.0)]
    speakers = assign_speakers(words, TURNS)
    segments = group_segments([(*word, speaker) for word, speaker in zip(words, speakers, strict=True)])
    assert segments == [
        {"speaker": "A", "start": 0.2, "end": 1.1, "text": "hello there"},
        {"speaker": "B", "start": 3.0, "end": 3.9, "text": "yes sure"},
        {"speaker": "A", "start": 5.5, "end": 6.0, "text": "bye"},
    ]


def test_group_segments_orders_words_by_start_and_splits_on_long_pauses() -> None:
    words = [("b", 1.0, 1.2, "A"), ("a", 0.0, 0.3, "A"), ("c", 9.0, 9.2, "A")]
    assert group_segments(words, max_gap=2.0) == [
        {"speaker": "A", "start": 0.0, "end": 1.2, "text": "a b"},
        {"speaker": "A", "start": 9.0, "end": 9.2, "text": "c"},
    ]
    assert group_segments([]) == []


def test_turn_segments_give_each_turn_its_words() -> None:
    words = [("hello", 0.2, 0.6), ("there", 1.9, 2.3), ("yes", 3.0, 3.4), ("bye", 5.5, 6.0), ("late", 7.1, 7.3)]
    speakers = assign_speakers(words, TURNS)
    assert speakers == ["A", "A", "B", "A", "A"]
    assert turn_segments(words, TURNS, speakers) == [
        {"speaker": "A", "start": 0.0, "end": 2.3, "text": "hello there"},  # widened to its last word
        {"speaker": "B", "start": 2.5, "end": 5.0, "text": "yes"},
        {"speaker": "A", "start": 5.0, "end": 7.3, "text": "bye late"},  # the nearest of A's turns takes "late"
    ]


def test_turn_segments_keep_silent_turns_and_fall_back_without_turns() -> None:
    assert turn_segments([], TURNS, []) == [
        {"speaker": "A", "start": 0.0, "end": 2.0, "text": ""},
        {"speaker": "B", "start": 2.5, "end": 5.0, "text": ""},
        {"speaker": "A", "start": 5.0, "end": 7.0, "text": ""},
    ]
    assert turn_segments([("solo", 1.0, 1.5)], [], [None]) == [{"speaker": None, "start": 1.0, "end": 1.5, "text": "solo"}]
