"""Qwen3-VL's tool calls in Hermes markup, `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`,
read out of the model's text: whole (`extract`) or as it streams (`HermesStream`).

What vLLM's `hermes` parser does, we do (a differential test runs both on the same texts):
  - text before the first `<tool_call>` is content; text after the calls is not kept;
  - whole answers carry the arguments re-serialised (`json.dumps`, non-ASCII kept), and any call
    that is not a JSON object with a string "name" and "arguments" turns the whole text into content;
  - streamed answers send each call's name once it is complete, then its arguments as the model
    writes them, holding back what may be the start of a tag.
Where vLLM's streaming parser drops text, ours returns it as content when the stream ends: a
trailing partial tag that never completed, or a call whose markup is not JSON. And where a raw
control character sits inside a JSON string (xgrammar's JSON grammar lets the engine write one;
strict JSON forbids it), vLLM turns the whole answer into content; we read the call and escape the
character (`\u001a`), so that the arguments clients receive are always strict JSON.
partial-json-parser decides when a streamed name is complete and whether a call is still a valid
JSON prefix; once a call stops being one, no more calls are read from that answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from partial_json_parser import Allow
from partial_json_parser import loads as partial_loads

from passerelle.chat.structured import ControlEscaper

START, END = "<tool_call>", "</tool_call>"
_REGION = re.compile(r"<tool_call>(.*?)</tool_call>|<tool_call>(.*)", re.DOTALL)
_ARGUMENTS = re.compile(r'"arguments"\s*:\s*')
_COMPLETE_STRINGS_ONLY = Allow.ALL & ~Allow.STR  # a name still being written is left out
_lenient_loads = partial(json.loads, strict=False)  # control characters inside strings are accepted


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Extracted:
    content: str | None
    calls: list[ToolCall]


def extract(text: str, new_id: Callable[[], str]) -> Extracted:
    """The calls in a whole answer, or the whole answer as content when its markup is malformed."""
    if START not in text:
        return Extracted(text, [])
    calls = []
    try:
        for closed, unclosed in _REGION.findall(text):
            call = _lenient_loads(closed or unclosed)
            name, arguments = call["name"], call["arguments"]
            if not isinstance(name, str):
                raise TypeError("the name is not a string")
            calls.append(ToolCall(new_id(), name, json.dumps(arguments, ensure_ascii=False)))
    except (ValueError, KeyError, TypeError, IndexError):
        return Extracted(text, [])
    content = text[: text.index(START)]
    return Extracted(content or None, calls)


def tag_overlap(text: str, tag: str) -> int:
    """Length of the longest proper prefix of `tag` that ends `text`."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0


def _is_json(text: str) -> bool:
    try:
        _lenient_loads(text)
    except ValueError:
        return False
    return True


def _partial(body: str) -> Any:
    """The call's JSON so far (strings only once complete); raises ValueError when it cannot become JSON."""
    if not body:
        return {}
    try:
        return partial_loads(body, _COMPLETE_STRINGS_ONLY, parser=_lenient_loads)
    except Exception as exc:  # the library raises several kinds (MalformedJSON, IndexError) for bad input
        raise ValueError(str(exc)) from exc


@dataclass
class CallDelta:
    """OpenAI's streamed tool call: id and name once, then argument fragments."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass
class StreamDelta:
    content: str = ""
    calls: list[CallDelta] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.content or self.calls)


@dataclass
class _Call:
    start: int  # where its <tool_call> begins
    id: str | None = None
    name: str | None = None
    arguments: str = ""  # the model's text sent so far
    escape: ControlEscaper = field(default_factory=ControlEscaper)


class HermesStream:
    """One choice's streamed text in, OpenAI content and tool-call deltas out.

    The result depends on the text alone, never on where the stream cut it: each feed re-reads
    the calls not yet closed from the accumulated text.
    """

    def __init__(self, new_id: Callable[[], str]) -> None:
        self.new_id = new_id
        self.text = ""
        self.sent = 0  # content characters sent
        self.calls: list[_Call] = []
        self.next_start: int | None = None  # where the next call to read begins
        self.stopped = False  # a call stopped being JSON: read no more calls

    @property
    def called(self) -> bool:
        return any(call.name is not None for call in self.calls)

    def feed(self, text: str) -> StreamDelta:
        self.text += text
        delta = StreamDelta()
        if self.next_start is None:
            found = self.text.find(START, self.sent)
            end = len(self.text) - tag_overlap(self.text, START) if found < 0 else found
            if end > self.sent:
                delta.content = self.text[self.sent : end]
                self.sent = end
            if found >= 0:
                self.next_start = found
        if self.next_start is not None and not self.stopped:
            self._read_calls(delta)
        return delta

    def finish(self) -> StreamDelta:
        """At the end of the stream: the text that became neither content nor a call, as content."""
        delta = StreamDelta()
        if self.next_start is None:
            delta.content = self.text[self.sent :]
        else:
            unnamed = next((call.start for call in self.calls if call.name is None), None)
            if unnamed is not None:
                delta.content = self.text[unnamed:]
        self.sent = len(self.text)
        return delta

    def _read_calls(self, delta: StreamDelta) -> None:
        position = self.next_start
        index = sum(1 for call in self.calls if call.start < (position or 0))
        while position is not None:
            start = self.text.find(START, position)
            if start < 0:
                return
            body_start = start + len(START)
            body_end = self.text.find(END, body_start)
            if body_end >= 0:
                body, complete, following = self.text[body_start:body_end].strip(), True, body_end + len(END)
            else:
                raw = self.text[body_start:]
                raw = raw[: len(raw) - tag_overlap(raw, END)]
                body = raw.strip()
                complete, following = bool(body) and _is_json(body), None
            if index == len(self.calls):
                self.calls.append(_Call(start))
            call = self.calls[index]
            try:
                shape = _partial(body)
            except ValueError:
                self.stopped = True
                return
            if call.name is None:
                name = shape.get("name") if isinstance(shape, dict) else None
                if not isinstance(name, str) or not name:
                    return
                call.id, call.name = self.new_id(), name
                delta.calls.append(CallDelta(index, id=call.id, name=name))
            arguments = self._arguments(body, complete)
            if arguments is not None and len(arguments) > len(call.arguments):
                delta.calls.append(CallDelta(index, arguments=call.escape(arguments[len(call.arguments) :])))
                call.arguments = arguments
            if following is None:
                return
            position = following
            self.next_start = following
            index += 1

    @staticmethod
    def _arguments(body: str, complete: bool) -> str | None:
        """The arguments' text as the model wrote it; a complete call loses the brace closing the call."""
        found = _ARGUMENTS.search(body)
        if found is None:
            return None
        raw = body[found.end() :]
        if complete:
            raw = raw.rstrip()
            if raw.endswith("}"):
                raw = raw[:-1].rstrip()
        return raw
