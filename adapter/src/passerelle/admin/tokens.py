"""The Hugging Face token, stored once on disk (mode 0600) under the model cache.

Thread- and process-safe: a lock file serialises writers across processes (adapter workers,
set-up scripts), and every write replaces the file atomically. The token is never logged and
never returned whole; `masked()` is what the API shows. Triton reads the same file through
HF_TOKEN_PATH, so downloads by vLLM inside Triton use it too.
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_VALID = re.compile(r"^[A-Za-z0-9_\-.]{8,256}$")


class InvalidToken(ValueError):
    pass


class TokenStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    @contextmanager
    def _locked(self, exclusive: bool) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, open(self.path.with_name(self.path.name + ".lock"), "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def get(self) -> str | None:
        with self._locked(exclusive=False):
            try:
                token = self.path.read_text(encoding="utf-8").strip()
            except FileNotFoundError:
                return None
        return token or None

    def set(self, token: str) -> None:
        token = token.strip()
        if not _VALID.match(token):
            raise InvalidToken("a Hugging Face token is 8 to 256 characters of letters, digits, '_', '-' or '.'")
        with self._locked(exclusive=True):
            # The folder is shared (Triton's container reads the token): an unpredictable name, created
            # here and now (O_EXCL), never through a link someone else planted (O_NOFOLLOW).
            staging = self.path.with_name(f".{self.path.name}.{secrets.token_hex(16)}.tmp")
            descriptor = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                handle.write(token)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(staging, 0o600)
            os.replace(staging, self.path)

    def delete(self) -> bool:
        with self._locked(exclusive=True):
            try:
                self.path.unlink()
            except FileNotFoundError:
                return False
        return True


def masked(token: str | None) -> str | None:
    if not token:
        return None
    return f"{token[:3]}…{token[-4:]}" if len(token) > 12 else "…" + token[-2:]
