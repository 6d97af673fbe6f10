"""A download job's state and progress, and how its failures are told to the admin (never with the token)."""

from __future__ import annotations

import errno
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx2
from huggingface_hub import constants
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from passerelle.admin.downloads.transfer import TransferFailure, first_line

TOKEN_ROUTE = "PUT /api/admin/huggingface/token"
JobState = Literal["running", "done", "failed"]


@dataclass
class DownloadJob:
    """One download of a repository into the model cache; mutated by the worker, read with `snapshot()`."""

    key: str
    repo_id: str
    revision: str | None
    state: JobState = "running"
    bytes_done: int = 0
    bytes_total: int | None = None
    percent: float | None = None
    files_done: int = 0
    files_total: int | None = None
    error: str | None = None
    status_code: int | None = None
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    commit: str | None = None
    path: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    @classmethod
    def from_snapshot(cls, snapshot: dict[str, Any]) -> DownloadJob:
        """A read-only copy of a job that another worker process runs or ran (its shared record)."""
        fields = {name: snapshot[name] for name in cls.__dataclass_fields__ if not name.startswith("_") and name in snapshot}
        return cls(**fields)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "key": self.key,
                "repo_id": self.repo_id,
                "revision": self.revision,
                "state": self.state,
                "bytes_done": self.bytes_done,
                "bytes_total": self.bytes_total,
                "percent": self.percent,
                "files_done": self.files_done,
                "files_total": self.files_total,
                "error": self.error,
                "status_code": self.status_code,
                "started_at": self.started_at,
                "finished_at": self.finished_at,
                "commit": self.commit,
                "path": self.path,
            }

    # Updates (worker threads).

    def _set_percent(self) -> None:
        if self.bytes_total is None:
            self.percent = None
        elif self.bytes_total == 0:
            self.percent = 100.0 if self.state == "done" else 0.0
        else:
            self.percent = round(100.0 * self.bytes_done / self.bytes_total, 2)

    def _plan(self, *, commit: str, bytes_total: int, files_total: int, bytes_done: int, files_done: int) -> None:
        with self._lock:
            self.commit = commit
            self.bytes_total = bytes_total
            self.files_total = files_total
            self.bytes_done = bytes_done
            self.files_done = files_done
            self._set_percent()

    def _add_bytes(self, n: int) -> None:
        with self._lock:
            self.bytes_done += n
            self._set_percent()

    def _file_done(self, added_bytes: int = 0) -> None:
        with self._lock:
            self.bytes_done += added_bytes
            self.files_done += 1
            self._set_percent()

    def _finish(
        self,
        state: Literal["done", "failed"],
        *,
        error: str | None = None,
        status_code: int | None = None,
        counts: tuple[int, int, int, int] | None = None,
        path: str | None = None,
    ) -> None:
        with self._lock:
            self.state = state
            self.error = error
            self.status_code = status_code
            if counts is not None:
                self.bytes_done, self.bytes_total, self.files_done, self.files_total = counts
            if path is not None:
                self.path = path
                self.commit = Path(path).name
            self.finished_at = time.time()
            self._set_percent()


class DownloadConflict(Exception):
    """A download for this key is running for another repository or revision."""


class Cancelled(Exception):
    """The manager is closing: the worker stops, keeping partial files for the next start."""


class Aborted(Exception):
    """Another file of the same job failed: this one stops too."""


def cancelled_message(job: DownloadJob) -> str:
    return (
        f"cancelled: the adapter stopped the download of {job.repo_id}; what was fetched, partial files included, "
        "stays in the cache and a new start resumes it"
    )


def describe(exc: BaseException, job: DownloadJob) -> tuple[str, int | None]:
    """A message for the operator and the HTTP status that caused it, if any."""
    repo = job.repo_id
    where = f"{repo}@{job.revision}" if job.revision else repo
    page = f"{constants.ENDPOINT}/{repo}"
    token_hint = f"set a Hugging Face token ({TOKEN_ROUTE})"
    if isinstance(exc, Cancelled):
        return cancelled_message(job), None
    if isinstance(exc, TransferFailure):
        return str(exc), exc.status_code
    if isinstance(exc, GatedRepoError):
        status = exc.response.status_code
        why = (
            "no valid token was sent"
            if status == 401
            else "the token's account has not been granted access"
            if status == 403
            else first_line(exc)
        )
        return (
            f"{repo} is a gated model ({status}: {why}): {token_hint} for an account that has accepted "
            f"the model's license on the Hub ({page})",
            status,
        )
    if isinstance(exc, RevisionNotFoundError):
        return f"revision {job.revision!r} not found in {repo} on the Hub ({exc.response.status_code})", 404
    if isinstance(exc, RemoteEntryNotFoundError):
        return f"a file of {where} is missing on the Hub: {first_line(exc)}", 404
    if isinstance(exc, RepositoryNotFoundError):
        return (
            f"{repo} was not found on the Hub (it answered {exc.response.status_code}); if it is private or gated, "
            f"{token_hint} with access to it",
            404,
        )
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code
        if status == 401:
            return f"the Hub refused the Hugging Face token (401): {token_hint} that is valid", 401
        if status == 403:
            return (
                f"the Hub refused access to {repo} (403): {token_hint} with read access, and accept the model's "
                f"license on the Hub ({page})",
                403,
            )
        return f"the Hub answered {status} for {where}: {first_line(exc)}", status
    if isinstance(exc, OfflineModeIsEnabled):
        return f"offline mode is on (HF_HUB_OFFLINE): {where} cannot be downloaded", None
    if isinstance(exc, HFValidationError):
        return f"invalid repository id or revision: {first_line(exc)}", None
    if isinstance(exc, httpx2.TransportError | ConnectionError | TimeoutError):
        return f"network error while downloading {where} from {constants.ENDPOINT}: {type(exc).__name__}: {first_line(exc)}", None
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            f"{where}: the model cache is full (no space left on device). The bytes fetched so far stay in "
            "blobs/<etag>.incomplete: free space in MODEL_CACHE_DIR and start the download again, it resumes where it stopped",
            507,
        )
    if isinstance(exc, OSError):
        return f"{where}: {type(exc).__name__}: {exc}", None
    return f"{where}: unexpected error {type(exc).__name__}: {first_line(exc)}", None


_SIGNED_QUERY = re.compile(r"(https?://[^\s?'\"]+)\?[^\s'\"]*")


def scrub(message: str, token: str | None) -> str:
    """No token and no signed URL query string in anything shown or logged."""
    if token:
        message = message.replace(token, "<token>")
    return _SIGNED_QUERY.sub(r"\1?<redacted>", message)
