"""Set-up steps that fail with one plain line: which step, the log with the detail, and what to try."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path


class SetupFailed(RuntimeError):
    def __init__(self, step: str, log: Path | None, hint: str) -> None:
        super().__init__(step)
        self.step, self.log, self.hint = step, log, hint

    def line(self) -> str:
        where = f"; details in {self.log}" if self.log else ""
        return f"set-up failed at '{self.step}'{where}; {self.hint}"


@contextlib.contextmanager
def step(name: str, log: Path | None, hint: str) -> Iterator[None]:
    """Turn any failure inside into SetupFailed(name, log, hint)."""
    try:
        yield
    except SetupFailed:
        raise
    except (subprocess.CalledProcessError, OSError, RuntimeError) as error:
        raise SetupFailed(name, log, f"{hint} ({type(error).__name__}: {error})") from error
