"""Prompts rendered from the model's own chat template (the tiny model's, written in Qwen-VL's format)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from passerelle.core.catalog import PromptRenderer, read_chat_template

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
    assert "<|image_pad|>" in template


def test_token_count_uses_the_model_tokenizer(renderer: PromptRenderer) -> None:
    prompt = renderer.render_chat([{"role": "user", "content": [text("Hello")]}])
    ids = renderer.tokenizer.encode(prompt, add_special_tokens=False)
    assert renderer.count_tokens(prompt) == len(ids)
    assert ids[0] == renderer.tokenizer.convert_tokens_to_ids("<|im_start|>")
