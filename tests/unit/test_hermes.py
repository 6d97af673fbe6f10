"""The Hermes tool-call parser (chat/hermes.py): whole answers, streamed answers cut at every point, and
a differential run of the same texts through vLLM's own `hermes` parser in Triton's environment."""

from __future__ import annotations

import itertools
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from passerelle.chat.hermes import HermesStream, extract
from passerelle_stack.environments import triton_env
from passerelle_stack.paths import model_cache_dir

ORACLE = Path(__file__).with_name("vllm_hermes_oracle.py")

ONE_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}\n</tool_call>'
WELL_FORMED = {
    "no call": "Hello there, no tools here.",
    "one call": ONE_CALL,
    "text before a call": 'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Zürich"}}\n</tool_call>',
    "two calls": (
        '<tool_call>\n{"name": "a", "arguments": {"x": 1}}\n</tool_call>\n'
        '<tool_call>\n{"name": "b", "arguments": {"y": [1, 2, {"z": "</tool"}]}}\n</tool_call>'
    ),
    "compact": '<tool_call>{"name":"get_weather","arguments":{}}</tool_call>',
    "quotes and tags in strings": '<tool_call>\n{"name": "f", "arguments": {"q": "a \\"quoted\\" <tag> }"}}\n</tool_call>',
    "truncated arguments": 'Text then <tool_call>{"name": "f", "arguments": {"x": 1}',
}
# A raw control character inside a string (the engine's grammar let it through): vLLM returns the
# whole answer as content; ours reads the call and escapes the character.
CONTROL_CHARACTER = '<tool_call>\n{"name": "get_time", "arguments": { "zone":\r",IC\x1a\\"\x03"\n}}\n</tool_call>'
# Where ours differs from vLLM's streaming parser on purpose: it returns the text instead of dropping it.
MALFORMED = {
    "not JSON": "<tool_call>\nnot json at all\n</tool_call>",
    "a partial tag at the end": "ends with a partial tag <tool_",
    "no name": '<tool_call>\n{"arguments": {"x": 1}}\n</tool_call>',
}


def ids() -> Any:
    counter = itertools.count()
    return lambda: f"call_{next(counter)}"


def stream(deltas: list[str]) -> dict[str, Any]:
    """A stream's result as a client assembles it, with the order of the pieces checked."""
    parser = HermesStream(ids())
    content = ""
    calls: dict[int, dict[str, str]] = {}
    for piece in [*(parser.feed(delta) for delta in deltas), parser.finish()]:
        content += piece.content
        for call in piece.calls:
            if call.name is not None:
                assert call.index not in calls, "a call's name is sent once"
                assert call.id and call.arguments == ""
                calls[call.index] = {"name": call.name, "arguments": ""}
            else:
                assert call.index in calls, "arguments come after the name"
                calls[call.index]["arguments"] += call.arguments
    assert "<tool_call>" not in content or not calls, "markup leaked into content"
    return {"content": content, "calls": [[calls[i]["name"], calls[i]["arguments"]] for i in sorted(calls)]}


def splits(text: str) -> list[list[str]]:
    """Every two-piece cut, then one character at a time."""
    return [[part for part in (text[:i], text[i:]) if part] for i in range(len(text) + 1)] + [list(text)]


def whole(text: str) -> dict[str, Any]:
    found = extract(text, ids())
    return {"content": found.content, "calls": [[call.name, call.arguments] for call in found.calls]}


def test_one_call() -> None:
    assert whole(ONE_CALL) == {"content": None, "calls": [["get_weather", '{"city": "Paris", "unit": "c"}']]}
    assert stream([ONE_CALL]) == {"content": "", "calls": [["get_weather", '{"city": "Paris", "unit": "c"}']]}


def test_several_calls_and_text_before() -> None:
    text = 'Sure. <tool_call>{"name": "a", "arguments": {"x": 1}}</tool_call><tool_call>{"name": "b", "arguments": {}}</tool_call>'
    assert whole(text) == {"content": "Sure. ", "calls": [["a", '{"x": 1}'], ["b", "{}"]]}
    assert stream([text]) == {"content": "Sure. ", "calls": [["a", '{"x": 1}'], ["b", "{}"]]}


def test_whole_arguments_are_reserialised_keeping_non_ascii() -> None:
    text = '<tool_call>{"name": "f", "arguments": {"city":"Zürich"}}</tool_call>'
    assert whole(text)["calls"] == [["f", '{"city": "Zürich"}']]


@pytest.mark.parametrize("text", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_markup_is_content(text: str) -> None:
    assert whole(text) == {"content": text, "calls": []}
    for deltas in splits(text):
        assert stream(deltas) == {"content": text, "calls": []}


def test_control_characters_in_strings_are_escaped() -> None:
    expected = {"zone": ',IC\x1a"\x03'}
    assert whole(CONTROL_CHARACTER)["calls"] == [["get_time", json.dumps(expected)]]
    for deltas in splits(CONTROL_CHARACTER):
        [[name, arguments]] = stream(deltas)["calls"]
        assert name == "get_time" and json.loads(arguments) == expected  # strict JSON
        assert arguments == '{ "zone":\r",IC\\u001a\\"\\u0003"\n}'


def test_a_call_split_across_chunks_streams_the_name_first_then_fragments() -> None:
    parser = HermesStream(ids())
    pieces = ["<tool", '_call>\n{"na', 'me": "get_', 'weather", "argu', 'ments": {"city": "Pa', 'ris"}}\n</tool_', "call>"]
    out = [parser.feed(piece) for piece in pieces]
    assert [piece.content for piece in out] == [""] * len(pieces)
    assert out[2].calls == [] and out[3].calls[0].name == "get_weather" and out[3].calls[0].id == "call_0"
    fragments = [call.arguments for piece in out[4:] for call in piece.calls]
    assert fragments == ['{"city": "Pa', 'ris"}']
    assert parser.called and not parser.finish()


@pytest.mark.parametrize("text", list(WELL_FORMED.values()), ids=list(WELL_FORMED))
def test_the_streamed_result_does_not_depend_on_the_cuts(text: str) -> None:
    results = {json.dumps(stream(deltas)) for deltas in splits(text)}
    assert len(results) == 1, results


def test_same_results_as_vllms_hermes_parser() -> None:
    """The same texts through vLLM's parser (its Python, its package) and ours, whole and cut at every point."""
    texts = [*WELL_FORMED.values(), *MALFORMED.values(), CONTROL_CHARACTER]
    given = json.dumps({"tokenizer": str(model_cache_dir() / "passerelle-tiny" / "qwen3-vl-moe"), "texts": texts})
    python = triton_env() / "bin" / "python"
    done = subprocess.run([str(python), str(ORACLE)], input=given, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    theirs = json.loads(done.stdout)
    for text, result in zip(texts, theirs, strict=True):
        if text != CONTROL_CHARACTER:
            assert whole(text) == result["whole"], text
        ours = [stream(deltas) for deltas in splits(text)]
        if text in WELL_FORMED.values():
            assert ours == result["splits"], text
        elif text == CONTROL_CHARACTER:
            assert result["whole"] == {"content": text, "calls": []}  # vLLM: strict JSON or nothing
        else:
            # vLLM drops the text it cannot read as a call; we return it as content.
            assert all(theirs_one["calls"] == [] and text.startswith(theirs_one["content"]) for theirs_one in result["splits"])
            assert all(mine == {"content": text, "calls": []} for mine in ours)
