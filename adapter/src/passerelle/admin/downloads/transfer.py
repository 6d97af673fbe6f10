"""Resumable transfer of one file into the Hugging Face cache, for `downloads.py`.

huggingface_hub 2.x restarts interrupted files from zero; this continues a
`blobs/<etag>.incomplete` file with an HTTP `Range` request through huggingface_hub's own HTTP
session and error mapping, and checks the finished bytes against the Hub's content hash.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx2
from filelock import Timeout as LockTimeout
from huggingface_hub import constants
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils import (  # type: ignore[attr-defined]  # public, lazily re-exported
    WeakFileLock,
    get_session,
    hf_raise_for_status,
)

log = logging.getLogger("passerelle.downloads")
TRANSFER_RETRIES = 5
_HASH_BLOCK = 8 * 1024 * 1024
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SHA1 = re.compile(r"[0-9a-f]{40}")


class TransferFailure(Exception):
    """A failure already described for the user."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def transfer(
    label: str,
    progress: Callable[[int], None],
    name: str,
    url: str,
    headers: dict[str, str],
    partial: Path,
    size: int,
    digest: tuple[str, str] | None,
    check: Callable[[], None],
) -> None:
    """Fill `partial` up to `size` bytes from `url`, continuing what is there; check its hash if known."""
    done = partial.stat().st_size if partial.exists() else 0
    if done > size:
        partial.unlink()
        done = 0
    hasher = Hasher(digest, size)
    if done:
        hasher.feed_file(partial, done, check)
        log.info("download %s: resuming %s at byte %d of %d", label, name, done, size)
    else:
        partial.write_bytes(b"")
    progress(done)
    failures = 0
    while done < size:
        check()
        request_headers = dict(headers)
        if done:
            request_headers["Range"] = f"bytes={done}-"
        try:
            with get_session().stream(
                "GET", url, headers=request_headers, timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT, follow_redirects=True
            ) as response:
                hf_raise_for_status(response)
                if done and response.status_code != 206:  # the server ignored the range: start over
                    log.info("download %s: %s: the server ignored the range request, starting over", label, name)
                    partial.write_bytes(b"")
                    progress(-done)
                    done = 0
                    hasher.reset()
                elif done and not response.headers.get("Content-Range", "").startswith(f"bytes {done}-"):
                    raise TransferFailure(f"{name}: the server answered a range request with {response.headers.get('Content-Range')!r}")
                with partial.open("ab") as out:
                    for chunk in response.iter_bytes():
                        check()
                        if done + len(chunk) > size:
                            raise TransferFailure(f"{name}: the server sent more than the {size} bytes announced")
                        out.write(chunk)
                        hasher.update(chunk)
                        done += len(chunk)
                        progress(len(chunk))
                        failures = 0
            if done < size:
                raise httpx2.RemoteProtocolError(f"the response ended at byte {done} of {size}")
        except HfHubHTTPError as exc:
            if exc.response.status_code != 416 or not done:
                raise
            log.warning("download %s: %s: range %d- refused (416), starting over", label, name, done)
            partial.write_bytes(b"")
            progress(-done)
            done = 0
            hasher.reset()
        except httpx2.TransportError as exc:
            failures += 1
            if failures > TRANSFER_RETRIES:
                raise
            log.warning("download %s: %s interrupted at byte %d (%s); resuming", label, name, done, first_line(exc))
            pause(1.0, check)
    if digest is not None and hasher.hexdigest() != digest[1]:
        partial.unlink(missing_ok=True)
        progress(-done)
        raise TransferFailure(
            f"{name}: the downloaded bytes do not match the Hub's {digest[0]} {digest[1]}; the file was discarded, try again"
        )


class Hasher:
    """The Hub's content hash of a file: sha256 for LFS files, the git blob id (sha1) for the others."""

    def __init__(self, digest: tuple[str, str] | None, size: int) -> None:
        self.kind = digest[0] if digest else None
        self.size = size
        self.reset()

    def reset(self) -> None:
        self._hash: Any = None
        if self.kind == "sha256":
            self._hash = hashlib.sha256()
        elif self.kind == "git-sha1":
            self._hash = hashlib.sha1(f"blob {self.size}\0".encode(), usedforsecurity=False)

    def update(self, data: bytes) -> None:
        if self._hash is not None:
            self._hash.update(data)

    def feed_file(self, path: Path, length: int, check: Callable[[], None]) -> None:
        if self._hash is None:
            return
        with path.open("rb") as src:
            remaining = length
            while remaining:
                check()
                block = src.read(min(_HASH_BLOCK, remaining))
                if not block:
                    break
                self._hash.update(block)
                remaining -= len(block)

    def hexdigest(self) -> str | None:
        return None if self._hash is None else str(self._hash.hexdigest())


def expected_digest(entry: RepoFile, etag: str, size: int) -> tuple[str, str] | None:
    """The hash to check, when the tree listing and the file's ETag agree on it."""
    if entry.lfs is not None:
        if entry.lfs.sha256 == etag and _SHA256.fullmatch(etag):
            return ("sha256", etag)
        return None
    if entry.blob_id == etag and _SHA1.fullmatch(etag) and entry.size == size:
        return ("git-sha1", etag)
    return None


@contextmanager
def blob_lock(lock_path: Path, check: Callable[[], None]) -> Iterator[None]:
    """huggingface_hub's per-blob lock (same path), waited for in short steps so a close() is not blocked."""
    with ExitStack() as stack:
        while True:
            check()
            try:
                stack.enter_context(WeakFileLock(lock_path, timeout=1.0))
                break
            except LockTimeout:
                continue
        yield


def pause(seconds: float, check: Callable[[], None]) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        check()
        time.sleep(0.05)
