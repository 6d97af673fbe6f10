"""Where a model's files are: a local directory, or a Hugging Face repo id resolved offline.

Triton's models never download. Weights come from the shared model cache (`HF_HUB_CACHE`),
filled beforehand by the admin API's download action or by `hf download`; the CPU profile
points at directories that set-up builds locally.
"""

from __future__ import annotations

import os
from pathlib import Path


class ArtifactsMissing(RuntimeError):
    """The model's files are not on this machine."""


def resolve_model_dir(source: str) -> Path:
    """`source` is an existing directory, or a repo id whose snapshot is in the Hugging Face cache."""
    local = Path(source).expanduser()
    if local.is_absolute() or source.startswith("."):
        if not local.is_dir():
            raise ArtifactsMissing(f"model directory {local} does not exist")
        return local.resolve()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(source, local_files_only=True))
    except LocalEntryNotFoundError as exc:
        cache = os.environ.get("HF_HUB_CACHE", "the Hugging Face cache")
        raise ArtifactsMissing(
            f"{source} is not in {cache}; download it first (admin API: POST /api/admin/models/<model>/download)"
        ) from exc


def resolve_model_file(source: str, filename: str) -> Path:
    path = resolve_model_dir(source) / filename
    if not path.is_file():
        raise ArtifactsMissing(f"{filename} is missing from {path.parent}")
    return path
