"""Prompts rendered with each model's own chat template and tokenizer, read from the shared model cache.

Triton's vLLM backend takes a raw prompt, so the adapter renders the chat template. The
template comes from the model's files (`chat_template.jinja`, `chat_template.json`, or
`tokenizer_config.json`, in that order, as Hugging Face processors look for it); a Hugging
Face id is resolved in the cache (`MODEL_CACHE_DIR/hub`) without downloading.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from huggingface_hub import snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError
from transformers import AutoTokenizer, PreTrainedTokenizerBase

log = logging.getLogger("passerelle.prompts")


class ModelFilesMissing(Exception):
    """The tokenizer or chat template is not in the model cache yet."""


def resolve_model_dir(source: str, cache_dir: Path) -> Path:
    path = Path(source)
    if path.is_dir():
        return path
    try:
        return Path(snapshot_download(source, cache_dir=cache_dir / "hub", local_files_only=True))
    except (LocalEntryNotFoundError, ValueError) as exc:
        raise ModelFilesMissing(f"'{source}' is not in the model cache {cache_dir / 'hub'}; download it first") from exc


def read_chat_template(model_dir: Path) -> str:
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    for name in ("chat_template.json", "tokenizer_config.json"):
        path = model_dir / name
        if path.is_file():
            template = json.loads(path.read_text(encoding="utf-8")).get("chat_template")
            if isinstance(template, str):
                return template
    raise ModelFilesMissing(f"no chat template in {model_dir}")


class PromptRenderer:
    def __init__(self, tokenizer: PreTrainedTokenizerBase, chat_template: str) -> None:
        self.tokenizer = tokenizer
        self.chat_template = chat_template

    @classmethod
    def load(cls, source: str, cache_dir: Path) -> PromptRenderer:
        model_dir = resolve_model_dir(source, cache_dir)
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        renderer = cls(tokenizer, read_chat_template(model_dir))
        renderer.render_chat([{"role": "user", "content": [{"type": "text", "text": "warm-up"}]}])
        log.info("chat template and tokenizer loaded from %s", model_dir)
        return renderer

    def render_chat(self, messages: list[dict[str, Any]]) -> str:
        rendered = self.tokenizer.apply_chat_template(
            messages, chat_template=self.chat_template, tokenize=False, add_generation_prompt=True
        )
        return str(rendered)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))
