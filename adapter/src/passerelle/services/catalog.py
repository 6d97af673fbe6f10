"""What the model repository serves, read from the repository Triton runs (the one source of truth).

Each model directory says what it is: `backend: "vllm"` with `<version>/model.json` is a
chat/completions model whose engine arguments name the weights, tokenizer and limits.
Names that clients may use resolve here: the repository key, the served (Hugging Face)
name, its last path segment, in any case.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

log = logging.getLogger("passerelle.catalog")


@dataclass(frozen=True)
class ServedModel:
    key: str
    task: str
    root: str
    aliases: tuple[str, ...]
    engine_args: dict[str, Any]

    @property
    def max_model_len(self) -> int | None:
        value = self.engine_args.get("max_model_len")
        return int(value) if value is not None else None

    @property
    def image_limit(self) -> int:
        limits = self.engine_args.get("limit_mm_per_prompt") or {}
        return int(limits.get("image", 1)) if isinstance(limits, dict) else 1

    @property
    def tokenizer_source(self) -> str:
        return str(self.engine_args.get("tokenizer") or self.engine_args["model"])


def _latest_version(model_dir: Path) -> Path | None:
    versions = sorted((int(p.name), p) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
    return versions[-1][1] if versions else None


def _read_config(model_dir: Path) -> model_config_pb2.ModelConfig:
    config = model_config_pb2.ModelConfig()
    text_format.Parse((model_dir / "config.pbtxt").read_text(encoding="utf-8"), config)
    return config


def _served_name(engine_args: dict[str, Any]) -> str:
    served = engine_args.get("served_model_name")
    if isinstance(served, list) and served:
        return str(served[0])
    return str(served or engine_args["model"])


def _describe(model_dir: Path) -> ServedModel | None:
    config = _read_config(model_dir)
    if config.backend != "vllm":
        return None
    version = _latest_version(model_dir)
    if version is None or not (version / "model.json").is_file():
        log.warning("%s: vLLM model without <version>/model.json, skipped", model_dir.name)
        return None
    engine_args = json.loads((version / "model.json").read_text(encoding="utf-8"))
    root = _served_name(engine_args)
    aliases = {model_dir.name, root, root.rsplit("/", 1)[-1]}
    return ServedModel(
        key=model_dir.name,
        task="chat",
        root=root,
        aliases=tuple(sorted(alias.lower() for alias in aliases)),
        engine_args=engine_args,
    )


class Catalog:
    def __init__(self, models: list[ServedModel]) -> None:
        self.models = {model.key: model for model in models}
        self._by_alias: dict[str, ServedModel] = {}
        for model in models:
            for alias in model.aliases:
                self._by_alias.setdefault(alias, model)

    @classmethod
    def from_repositories(cls, repositories: list[Path]) -> Catalog:
        models = []
        for repository in repositories:
            for model_dir in sorted(p for p in repository.iterdir() if (p / "config.pbtxt").is_file()):
                described = _describe(model_dir)
                if described is not None:
                    models.append(described)
        return cls(models)

    def resolve(self, name: str) -> ServedModel | None:
        return self._by_alias.get(name.strip().lower())
