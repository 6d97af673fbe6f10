"""Where things live: the clone (read-only inputs) and PASSERELLE_HOME (caches, outside the clone)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def home() -> Path:
    return Path(os.environ.get("PASSERELLE_HOME", Path.home() / ".cache" / "passerelle")).expanduser()


def model_cache_dir() -> Path:
    return Path(os.environ.get("MODEL_CACHE_DIR", home() / "models")).expanduser()


def digest(*paths: Path) -> str:
    """A short content hash of files (or of every file under folders), for cache keys."""
    hasher = hashlib.sha256()
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts) if path.is_dir() else [path]
        for file in files:
            hasher.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
            hasher.update(file.read_bytes())
    return hasher.hexdigest()[:16]


def local_wheels() -> str | None:
    """The folder of local wheels that this machine's pip is configured with (torch's CPU build)."""
    try:
        found = subprocess.run(["pip", "config", "get", "global.find-links"], capture_output=True, text=True, check=False).stdout.strip()
    except FileNotFoundError:
        found = ""
    return found or None


def uv() -> str:
    found = shutil.which("uv")
    if not found:
        raise SystemExit("uv is not on PATH; run scripts/serve or scripts/test, which install it")
    return found
