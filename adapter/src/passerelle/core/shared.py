"""State that the adapter's worker processes share: small JSON records and file locks under the model cache.

With ADAPTER_WORKERS > 1 (and with several adapter pods on one model cache), whatever one process
does must be visible to all. Every piece of state is of one of two kinds:

- derived from Triton (model readiness, its statistics and metrics, the monitor's history), which
  every process reads for itself; or
- kept in the shared model cache, here: records that one process writes whole (atomically: write a
  temporary file, then rename) and every process reads, and `flock` locks that say which process
  owns a piece of work (a download, the idle-unload checks) for as long as it runs. The kernel
  drops a lock when its process dies, so work is never owned by a dead process.

What can be neither is refused where it would be wrong (see docs/configuration.md, "Several workers").
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger("passerelle.shared")
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


class FileLock:
    """An exclusive `flock`, taken without waiting, held until `release` (or the process ends)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> bool:
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def held_elsewhere(self) -> bool:
        """Whether another process holds the lock now (checked by taking it and letting it go)."""
        if self._fd is not None:
            return False
        if not self.acquire():
            return True
        self.release()
        return False


class SharedState:
    """Records and locks under `root` (MODEL_CACHE_DIR/.passerelle)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @staticmethod
    def _name(name: str) -> str:
        return _SAFE.sub("_", name)

    def lock(self, kind: str, name: str) -> FileLock:
        return FileLock(self.root / kind / f"{self._name(name)}.lock")

    def write(self, kind: str, name: str, record: dict[str, Any]) -> None:
        folder = self.root / kind
        folder.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(handle, "w") as file:
                json.dump(record, file)
            os.replace(temporary, folder / f"{self._name(name)}.json")
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise

    def read(self, kind: str, name: str) -> dict[str, Any] | None:
        try:
            record = json.loads((self.root / kind / f"{self._name(name)}.json").read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            log.warning("shared record %s/%s is unreadable: %s", kind, name, error)
            return None
        return record if isinstance(record, dict) else None
