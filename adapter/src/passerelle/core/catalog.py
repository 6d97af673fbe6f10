"""What the model repository serves, read from the repository Triton runs (the one source of truth),
and, for language models, the tokenizer and chat template that prompts are rendered with.

Each model directory says what it is:
  - `backend: "vllm"` with `<version>/model.json` is a chat/completions model whose engine
    arguments name the weights, tokenizer and limits;
  - a config parameter `passerelle_task` marks the audio models: `transcription` (canary),
    `diarization` (pyannote), `speaker_transcription` (the pipeline that combines the two,
    whose `transcription_model` and `diarization_model` parameters name them) and
    `transcription_stream` (canary_stream, whose `transcription_model` names the one it streams)
    and `language_identification` (langid, which names the spoken language).
Names that clients may use resolve here: the repository key, the served (Hugging Face)
name, its last path segment, in any case.

Triton's vLLM backend takes a raw prompt, so the adapter renders the chat template. The
template comes from the model's files (`chat_template.jinja`, `chat_template.json`, or
`tokenizer_config.json`, in that order, as Hugging Face processors look for it); a Hugging
Face id is resolved in the cache (`MODEL_CACHE_DIR/hub`) without downloading.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from google.protobuf import json_format, text_format
from huggingface_hub import snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError
from transformers import AutoTokenizer, PreTrainedTokenizerBase
from tritonclient.grpc import model_config_pb2

from passerelle.core.errors import NotFound, Unavailable

log = logging.getLogger("passerelle.catalog")


@dataclass(frozen=True)
class RepositoryModel:
    """Any model directory of the repositories Triton serves, as the admin API shows it."""

    key: str
    path: Path
    backend: str
    instance_groups: tuple[dict[str, Any], ...]
    config: dict[str, Any]
    engine_args: dict[str, Any]

    @property
    def artifact_source(self) -> str | None:
        """Where its weights come from: a Hugging Face repo id or a local path (None: nothing to fetch)."""
        source = self.engine_args.get("model") or self.config.get("parameters", {}).get("hf_repo", {}).get("string_value")
        return str(source) if source else None


@dataclass(frozen=True)
class ServedModel:
    key: str
    task: str
    root: str
    aliases: tuple[str, ...]
    engine_args: dict[str, Any]
    parameters: dict[str, str] = field(default_factory=dict)

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
        # No token stands for more characters than the longest entry of the vocabulary (byte-level
        # vocabularies spell each byte as one character), which bounds a prompt before it is tokenized.
        self.max_token_chars = max((len(token) for token in tokenizer.get_vocab()), default=1)
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self._backend: Any = backend

    @classmethod
    def load(cls, source: str, cache_dir: Path) -> PromptRenderer:
        model_dir = resolve_model_dir(source, cache_dir)
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        renderer = cls(tokenizer, read_chat_template(model_dir))
        renderer.render_chat([{"role": "user", "content": [{"type": "text", "text": "warm-up"}]}])
        log.info("chat template and tokenizer loaded from %s", model_dir)
        return renderer

    def max_prompt_chars(self, context_tokens: int) -> int:
        """More characters than this cannot fit in `context_tokens` tokens."""
        return context_tokens * self.max_token_chars

    def render_chat(self, messages: list[dict[str, Any]], tools: list[dict[Any, Any]] | None = None) -> str:
        rendered = self.tokenizer.apply_chat_template(
            messages, tools=list(tools) if tools else None, chat_template=self.chat_template, tokenize=False, add_generation_prompt=True
        )
        return str(rendered)

    def count_tokens(self, text: str) -> int:
        """CPU-bound: call it off the event loop. The Rust tokenizer's batch call releases the GIL
        (its single-text call holds it throughout), so the loop keeps running meanwhile."""
        if self._backend is not None:
            return len(self._backend.encode_batch([text], add_special_tokens=False)[0])
        return len(self.tokenizer.encode(text, add_special_tokens=False))


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


def _inspect(model_dir: Path) -> RepositoryModel:
    config = _read_config(model_dir)
    version = _latest_version(model_dir)
    engine_file = version / "model.json" if version is not None else None
    engine_args = json.loads(engine_file.read_text(encoding="utf-8")) if engine_file and engine_file.is_file() else {}
    as_dict = json_format.MessageToDict(config, preserving_proto_field_name=True)
    return RepositoryModel(
        key=model_dir.name,
        path=model_dir,
        backend=config.backend or config.platform,
        instance_groups=tuple(as_dict.get("instance_group", [])),
        config=as_dict,
        engine_args=engine_args,
    )


def _parameters(entry: RepositoryModel) -> dict[str, str]:
    return {key: str(value.get("string_value", "")) for key, value in entry.config.get("parameters", {}).items()}


def _describe_audio(entry: RepositoryModel, parameters: dict[str, str]) -> ServedModel:
    root = parameters.get("served_name") or parameters.get("hf_repo") or entry.key
    aliases = {entry.key, root, root.rsplit("/", 1)[-1]}
    return ServedModel(
        key=entry.key,
        task=parameters["passerelle_task"],
        root=root,
        aliases=tuple(sorted(alias.lower() for alias in aliases)),
        engine_args={},
        parameters=parameters,
    )


def _describe(entry: RepositoryModel) -> ServedModel | None:
    parameters = _parameters(entry)
    if parameters.get("passerelle_task"):
        return _describe_audio(entry, parameters)
    if entry.backend != "vllm":
        return None
    if not entry.engine_args:
        log.warning("%s: vLLM model without <version>/model.json, skipped", entry.key)
        return None
    engine_args = entry.engine_args
    model_dir = entry.path
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
    def __init__(
        self,
        models: list[ServedModel],
        entries: list[RepositoryModel] | None = None,
        *,
        model_cache_dir: Path | None = None,
        retry_after_s: int = 10,
    ) -> None:
        self.models = {model.key: model for model in models}
        self.entries = {entry.key: entry for entry in entries or []}
        self._by_alias: dict[str, ServedModel] = {}
        for model in models:
            for alias in model.aliases:
                self._by_alias.setdefault(alias, model)
        self.model_cache_dir = model_cache_dir or Path.home() / ".cache" / "passerelle" / "models"
        self.retry_after_s = retry_after_s
        self._renderers: dict[str, PromptRenderer] = {}
        self._renderer_lock = asyncio.Lock()

    @classmethod
    def from_repositories(cls, repositories: list[Path], *, model_cache_dir: Path | None = None, retry_after_s: int = 10) -> Catalog:
        entries = [
            _inspect(model_dir)
            for repository in repositories
            for model_dir in sorted(p for p in repository.iterdir() if (p / "config.pbtxt").is_file())
        ]
        models = [served for served in map(_describe, entries) if served is not None]
        return cls(models, entries, model_cache_dir=model_cache_dir, retry_after_s=retry_after_s)

    def require(self, name: str, *, task: str) -> ServedModel:
        """The model a request names, for an endpoint of `task`; 404 in the API's shape otherwise."""
        model = self.resolve(name)
        if model is None or model.task != task:
            known = ", ".join(m.key for m in self.models.values() if m.task == task) or "none"
            raise NotFound(f"The model '{name}' does not exist. Models for this endpoint: {known}.", param="model", code="model_not_found")
        return model

    async def renderer(self, model: ServedModel) -> PromptRenderer:
        """The model's chat template and tokenizer, loaded once from the model cache."""
        if model.key not in self._renderers:
            async with self._renderer_lock:
                if model.key not in self._renderers:
                    try:
                        self._renderers[model.key] = await asyncio.to_thread(
                            PromptRenderer.load, model.tokenizer_source, self.model_cache_dir
                        )
                    except ModelFilesMissing as exc:
                        raise Unavailable(
                            f"The tokenizer of '{model.key}' is not available: {exc}.",
                            retry_after_s=self.retry_after_s,
                            code="model_files_missing",
                        ) from exc
        return self._renderers[model.key]

    async def warm_up(self) -> None:
        """Load every chat model's renderer now, so the first request does not wait for it."""
        for model in self.models.values():
            if model.task == "chat":
                try:
                    await self.renderer(model)
                except Unavailable as exc:
                    log.warning("%s: %s (will retry on first request)", model.key, exc.message)

    def resolve(self, name: str) -> ServedModel | None:
        return self._by_alias.get(name.strip().lower())

    def first(self, task: str) -> ServedModel | None:
        return next((model for model in self.models.values() if model.task == task), None)

    def language_identifier(self) -> ServedModel | None:
        """The model that names the spoken language when a request does not, if the repository has one."""
        return self.first("language_identification")

    def speaker_pipeline(self, transcriber: str) -> ServedModel | None:
        """The pipeline that attributes `transcriber`'s words to speakers, if the repository has one."""
        return self._built_on(transcriber, "speaker_transcription")

    def transcript_stream(self, transcriber: str) -> ServedModel | None:
        """The model that streams `transcriber`'s transcript window by window, if the repository has one."""
        return self._built_on(transcriber, "transcription_stream")

    def _built_on(self, transcriber: str, task: str) -> ServedModel | None:
        return next(
            (model for model in self.models.values() if model.task == task and model.parameters.get("transcription_model") == transcriber),
            None,
        )
