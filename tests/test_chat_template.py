"""Prompts rendered from the model's own chat template: the tiny model ships Qwen3-VL's, byte for byte."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from passerelle.core.catalog import PromptRenderer, read_chat_template

QWEN3_VL_TEMPLATE_SHA256 = "3636d0f0bd6bef02654cdffdc447b79cb2cef8ab02cc75267345946291a489e4"

VISION = "<|vision_start|><|image_pad|><|vision_end|>"


@pytest.fixture(scope="module")
def renderer(tiny_model_dir: Path) -> PromptRenderer:
    return PromptRenderer.load(str(tiny_model_dir), tiny_model_dir.parent)


def text(value: str) -> dict[str, str]:
    return {"type": "text", "text": value}


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        (
            [{"role": "user", "content": [text("Hello")]}],
            "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n",
        ),
        (
            [{"role": "system", "content": [text("Be brief.")]}, {"role": "user", "content": [text("Hi")]}],
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
        ),
        (
            [
                {"role": "user", "content": [text("Hi")]},
                {"role": "assistant", "content": [text("Hello!")]},
                {"role": "user", "content": [text("Again")]},
            ],
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
            "<|im_start|>user\nAgain<|im_end|>\n<|im_start|>assistant\n",
        ),
        (
            [{"role": "user", "content": [text("Compare "), {"type": "image"}, text(" and "), {"type": "image"}]}],
            f"<|im_start|>user\nCompare {VISION} and {VISION}<|im_end|>\n<|im_start|>assistant\n",
        ),
        (
            [{"role": "user", "content": [{"type": "image"}, text("What is this?")]}],
            f"<|im_start|>user\n{VISION}What is this?<|im_end|>\n<|im_start|>assistant\n",
        ),
    ],
    ids=["one-turn", "system", "multi-turn", "two-images", "image-first"],
)
def test_rendered_prompts(renderer: PromptRenderer, messages: list[dict[str, Any]], expected: str) -> None:
    assert renderer.render_chat(messages) == expected


def test_template_is_read_from_the_model_files(tiny_model_dir: Path) -> None:
    template = read_chat_template(tiny_model_dir)
    assert template == (tiny_model_dir / "chat_template.jinja").read_text()
    assert hashlib.sha256(template.encode()).hexdigest() == QWEN3_VL_TEMPLATE_SHA256


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TOOLS_HEADER = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
    '{"type": "function", "function": {"name": "get_weather", "description": "Current weather", '
    '"parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}'
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)


def test_a_tool_round_trip_renders_qwens_format(renderer: PromptRenderer) -> None:
    """Tools in the system turn, the assistant's call as Hermes JSON, results as <tool_response> in a user turn."""
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    other = {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}
    messages = [
        {"role": "system", "content": [text("Be brief.")]},
        {"role": "user", "content": [text("Weather in Paris and Rome?")]},
        {"role": "assistant", "content": [], "tool_calls": [call, other]},
        {"role": "tool", "content": [text("18 C")]},
        {"role": "tool", "content": [text("21 C")]},
        {"role": "assistant", "content": [text("Rome is warmer.")]},
        {"role": "user", "content": [text("Thanks")]},
    ]
    expected = (
        f"<|im_start|>system\nBe brief.\n\n{TOOLS_HEADER}<|im_end|>\n"
        "<|im_start|>user\nWeather in Paris and Rome?<|im_end|>\n"
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\n18 C\n</tool_response>\n<tool_response>\n21 C\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\nRome is warmer.<|im_end|>\n"
        "<|im_start|>user\nThanks<|im_end|>\n<|im_start|>assistant\n"
    )
    prompt = renderer.render_chat(messages, [WEATHER])
    assert prompt == expected
    tokens = renderer.tokenizer.convert_ids_to_tokens(renderer.tokenizer.encode(prompt, add_special_tokens=False))
    # The markup is Qwen's added tokens, one token each, as in the real vocabulary.
    assert tokens.count("<tool_call>") == 4 and tokens.count("</tool_call>") == 4  # two in the instructions, two calls
    assert tokens.count("<tool_response>") == 2 and tokens.count("</tool_response>") == 2
    assert tokens.count("<|im_start|>") == 7


def test_tools_without_a_system_message(renderer: PromptRenderer) -> None:
    prompt = renderer.render_chat([{"role": "user", "content": [text("Hi")]}], [WEATHER])
    assert prompt == f"<|im_start|>system\n{TOOLS_HEADER}<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize(
    "prompt",
    [
        "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n",
        f"<|im_start|>user\n{VISION}Qu'est-ce que c'est ? 这是什么 🌍<|im_end|>\n<|im_start|>assistant\n",
        "no markup at all, " * 50,
    ],
    ids=["one-turn", "image-and-scripts", "long-plain"],
)
def test_token_count_agrees_with_the_tokenizer_file_read_independently(renderer: PromptRenderer, tiny_model_dir: Path, prompt: str) -> None:
    """The oracle: the `tokenizers` library reading tokenizer.json itself (not the adapter's loading
    through transformers), whose ids must also spell the prompt back, and Qwen's markup as single
    tokens with the ids that tokenizer.json assigns them."""
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))
    ids = raw.encode(prompt, add_special_tokens=False).ids
    assert renderer.count_tokens(prompt) == len(ids)
    assert raw.decode(ids, skip_special_tokens=False) == prompt
    added = {token["content"]: token["id"] for token in json.loads((tiny_model_dir / "tokenizer.json").read_text())["added_tokens"]}
    markup = re.findall(r"<\|[a-z_]+\|>", prompt)
    assert [added[token] for token in markup] == [i for i in ids if i in added.values()]
