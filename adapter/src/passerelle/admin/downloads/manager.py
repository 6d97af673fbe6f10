"""Model downloads from the Hugging Face Hub into the shared model cache (admin API).

A download fills `MODEL_CACHE_DIR/hub` in the Hugging Face cache layout
(`hub/models--org--name/{blobs,snapshots/<commit>,refs}`), where Triton and the adapter read
artifacts. One job per repository key; a second start while it runs joins it.

How, with huggingface_hub 2.x (the locked version is 2.4.0):

- `snapshot_download` no longer resumes anything across runs: each file goes to a
  process-unique `<etag>.<random>.incomplete` temporary file that is deleted when the download
  fails or is interrupted, and bytes arrive in 10 MiB reads. So the bytes of every missing file
  are fetched here first, with huggingface_hub's own metadata call (`get_hf_file_metadata`, the
  HEAD that `hf_hub_download` makes), its HTTP session and error mapping, into
  `blobs/<etag>.incomplete` under the same per-blob file lock huggingface_hub takes. An
  interrupted transfer leaves that file in place and the next start continues it with an HTTP
  `Range` request; the finished blob is checked against its content hash when the Hub's
  metadata provides one (sha256 for LFS files, the git blob id otherwise) before it is moved to
  `blobs/<etag>`.
- `snapshot_download` then lays out the snapshot exactly as huggingface_hub does (refs, the
  tree listing cache, the `snapshots/<commit>/...` links); it finds every blob present and
  transfers nothing, except files that appeared on the branch in between, whose bytes it
  reports through the `tqdm_class` given to it.
- Progress: `bytes_total` is the sum of the file sizes in the repository's tree listing at the
  resolved commit; `bytes_done` counts the bytes of files already complete in the cache, the
  bytes of partial files being resumed and every byte written since, as they are written; at
  the end both are re-read from the files in the snapshot.

Offline (`HF_HUB_OFFLINE`), nothing is fetched: a start checks that the snapshot is complete in
the cache (`snapshot_download(local_files_only=True)`).

The Hugging Face token comes from the `token` callable only (never from huggingface_hub's own
token file or `HF_TOKEN`, unless the callable returns it); it is sent to the Hub and never to a
CDN host, and it never appears in a job, a message or a log line.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from huggingface_hub import HfApi, constants, get_cached_repo_tree, get_hf_file_metadata, hf_hub_url, snapshot_download
from huggingface_hub.errors import (
    CachedRepoTreeNotFoundError,
    IncompleteSnapshotError,
    LocalEntryNotFoundError,
)
from huggingface_hub.file_download import repo_folder_name
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils import (  # type: ignore[attr-defined]  # public, lazily re-exported
    build_hf_headers,
)
from huggingface_hub.utils.tqdm import tqdm as hf_tqdm

from passerelle.admin.downloads.job import Aborted, Cancelled, DownloadConflict, DownloadJob, cancelled_message, describe, scrub
from passerelle.admin.downloads.transfer import TransferFailure, blob_lock, expected_digest, first_line, transfer
from passerelle.core.shared import FileLock, SharedState

log = logging.getLogger("passerelle.downloads")

MAX_PARALLEL_FILES = 8
CLOSE_TIMEOUT_S = 30.0
_BLOB_NAME = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
PUBLISH_INTERVAL_S = 0.5  # how often a running job shares its progress with the other worker processes


@dataclass
class _Run:
    job: DownloadJob
    task: asyncio.Task[None]
    cancel: threading.Event
    lock: FileLock


class DownloadManager:
    """Downloads into `cache_dir/hub`; one job per key. `start` must be called from the event loop."""

    def __init__(self, cache_dir: Path, token: Callable[[], str | None], offline: bool, shared: SharedState) -> None:
        self.cache_dir = Path(cache_dir)
        self.shared = shared
        self.hub_cache = self.cache_dir / "hub"
        self._token = token
        # huggingface_hub reads HF_HUB_OFFLINE once, at import: when it is set there, no request can leave anyway.
        self.offline = offline or constants.is_offline_mode()
        self.close_timeout_s = CLOSE_TIMEOUT_S
        self._jobs: dict[str, DownloadJob] = {}
        self._runs: dict[str, _Run] = {}
        # Shared records are written by the progress publisher (in a thread) and when a job ends:
        # one at a time, each with the job's state at the moment it writes, so a publish that was
        # still running when the job ended cannot leave "running" behind (others would report it failed).
        self._sharing = threading.Lock()
        self._closed = False

    # Public API.

    def start(self, key: str, repo_id: str, revision: str | None = None) -> DownloadJob:
        """Start (or join) the download of `repo_id` at `revision` (default branch if None) for `key`.

        A job running for the key is returned as it is. A finished one, done or failed, is started
        again: complete files are found in the cache and partial ones are resumed."""
        if self._closed:
            raise RuntimeError("the download manager is closed")
        run = self._runs.get(key)
        running = run.job if run is not None and not run.task.done() else None
        lock = self.shared.lock("downloads", key)
        if running is None and not lock.acquire():  # another worker process runs it
            running = self.job(key) or DownloadJob(key=key, repo_id=repo_id, revision=revision)
        if running is not None:
            if (running.repo_id, running.revision) != (repo_id, revision):
                raise DownloadConflict(
                    f"a download for '{key}' is already running ({running.repo_id}"
                    f"{'@' + running.revision if running.revision else ''}); wait for it to finish"
                )
            return running
        job = DownloadJob(key=key, repo_id=repo_id, revision=revision)
        self._share(job)
        cancel = threading.Event()
        task = asyncio.get_running_loop().create_task(self._run(job, cancel), name=f"download {key}")
        self._runs[key] = _Run(job=job, task=task, cancel=cancel, lock=lock)
        self._jobs[key] = job
        task.add_done_callback(lambda _: self._finished(key))
        return job

    def _share(self, job: DownloadJob) -> None:
        """Publish the job to the other workers. The record lives in the model cache: on a full disk it
        cannot be written, which must not fail the job (this worker still reports it) nor keep its lock."""
        with self._sharing:
            try:
                self.shared.write("downloads", job.key, job.snapshot())
            except OSError as error:
                log.warning("download %s: its state could not be shared with other workers: %s", job.key, error)

    def _finished(self, key: str) -> None:
        run = self._runs[key]
        try:
            self._share(run.job)
        finally:
            run.lock.release()

    async def wait(self, key: str) -> DownloadJob:
        """Wait for the key's current job to finish; cancelling the waiter does not cancel the download."""
        run = self._runs.get(key)
        if run is not None:
            await asyncio.wait({run.task})
            return run.job
        while (job := self.job(key)) is not None and job.state == "running":  # noqa: ASYNC110 - another process runs it; only its record tells
            await asyncio.sleep(PUBLISH_INTERVAL_S)
        if job is None:
            raise KeyError(key)
        return job

    def job(self, key: str) -> DownloadJob | None:
        """The key's latest job, whichever worker process runs or ran it."""
        run = self._runs.get(key)
        if run is not None and not run.task.done():
            return run.job
        record = self.shared.read("downloads", key)
        if record is None:
            return self._jobs.get(key)
        job = DownloadJob.from_snapshot(record)
        if job.state == "running" and not self.shared.lock("downloads", key).held_elsewhere():
            job.state, job.error = "failed", "the adapter process that ran this download stopped; start it again to resume it"
        return job

    async def _publish(self, job: DownloadJob) -> None:
        """Share the progress of a running job with the other worker processes."""
        while True:
            await asyncio.sleep(PUBLISH_INTERVAL_S)
            await asyncio.to_thread(self._share, job)

    async def close(self) -> None:
        """Stop running downloads (their partial files stay, so a later start resumes them)."""
        self._closed = True
        running = [run for run in self._runs.values() if not run.task.done()]
        for run in running:
            run.cancel.set()
        if not running:
            return
        _, pending = await asyncio.wait({run.task for run in running}, timeout=self.close_timeout_s)
        for run in running:
            if run.task in pending:
                log.warning("download %s: did not stop within %.0f s", run.job.key, self.close_timeout_s)
                run.task.cancel()

    # The job.

    async def _run(self, job: DownloadJob, cancel: threading.Event) -> None:
        token: str | None = None
        where = f"{job.repo_id}@{job.revision}" if job.revision else job.repo_id
        publisher = asyncio.create_task(self._publish(job), name=f"download {job.key} progress")
        try:
            token = self._token() or None
            if self.offline:
                log.info("download %s: checking %s in the cache %s (offline mode)", job.key, where, self.hub_cache)
                await asyncio.to_thread(self._verify_cached, job)
            else:
                log.info("download %s: %s into %s (%s)", job.key, where, self.hub_cache, "with a token" if token else "without a token")
                await asyncio.to_thread(self._download, job, token, cancel)
        except asyncio.CancelledError:
            cancel.set()
            job._finish("failed", error=cancelled_message(job))
            log.warning("download %s: cancelled", job.key)
            raise
        except Exception as exc:  # noqa: BLE001 - every failure ends the job, described
            message, status_code = describe(exc, job)
            message = scrub(message, token)
            job._finish("failed", error=message, status_code=status_code)
            log.warning("download %s: failed: %s", job.key, message)
        else:
            snap = job.snapshot()
            log.info(
                "download %s: done, %s files, %s bytes in %.1f s (%s)",
                job.key,
                snap["files_done"],
                snap["bytes_done"],
                (snap["finished_at"] or time.time()) - snap["started_at"],
                snap["path"],
            )
        finally:
            publisher.cancel()

    def _download(self, job: DownloadJob, token: str | None, cancel: threading.Event) -> None:
        auth: str | bool = token if token else False  # False: never fall back to huggingface_hub's stored token
        abort = threading.Event()

        def check() -> None:
            if cancel.is_set():
                raise Cancelled
            if abort.is_set():
                raise Aborted

        api = HfApi(token=auth)
        info = api.model_info(job.repo_id, revision=job.revision, timeout=constants.HF_HUB_ETAG_TIMEOUT)
        commit = info.sha
        if not commit:
            raise TransferFailure(f"the Hub gave no commit for {job.repo_id}")
        files = [entry for entry in api.list_repo_tree(job.repo_id, revision=commit, recursive=True) if isinstance(entry, RepoFile)]
        check()
        storage = self.hub_cache / repo_folder_name(repo_id=job.repo_id, repo_type="model")
        snapshot_dir = storage / "snapshots" / commit
        missing = [entry for entry in files if not (snapshot_dir / entry.path).exists()]
        present = [entry for entry in files if entry not in missing]
        job._plan(
            commit=commit,
            bytes_total=sum(entry.size for entry in files),
            files_total=len(files),
            bytes_done=sum(entry.size for entry in present),
            files_done=len(present),
        )
        if missing:
            log.info("download %s: %d of %d files to fetch at commit %s", job.key, len(missing), len(files), commit)
            with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_FILES, len(missing)), thread_name_prefix="download") as pool:
                futures = [pool.submit(self._fetch_file, job, entry, commit, storage, auth, check) for entry in missing]
                wait_futures(futures, return_when=FIRST_EXCEPTION)
                abort.set()
                wait_futures(futures)
            _raise_first(futures)
            abort.clear()
        check()
        # Lay the snapshot out as huggingface_hub does (refs, tree cache, links); every blob is present by now.
        path = snapshot_download(
            job.repo_id,
            revision=job.revision,
            cache_dir=self.hub_cache,
            token=auth,
            tqdm_class=_progress_class(job, check),
        )
        job._finish("done", counts=_snapshot_counts(job.repo_id, Path(path), self.hub_cache, files), path=path)

    def _fetch_file(
        self, job: DownloadJob, entry: RepoFile, commit: str, storage: Path, auth: str | bool, check: Callable[[], None]
    ) -> None:
        check()
        url = hf_hub_url(job.repo_id, entry.path, revision=commit)
        meta = get_hf_file_metadata(url, token=auth)
        if not meta.etag or not _BLOB_NAME.fullmatch(meta.etag):
            # The ETag names a file in the cache: only a hex digest (a git SHA-1 or a SHA-256) may.
            raise TransferFailure(f"the Hub sent no usable ETag for {entry.path}: is HF_ENDPOINT a Hugging Face Hub?")
        size = meta.size if meta.size is not None else entry.size
        blob = storage / "blobs" / meta.etag
        lock_path = self.hub_cache / ".locks" / storage.name / f"{meta.etag}.lock"
        blob.parent.mkdir(parents=True, exist_ok=True)
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with blob_lock(lock_path, check):
            if blob.exists():  # fetched earlier, or by another process meanwhile
                job._file_done(size)
                return
            partial = blob.with_name(f"{meta.etag}.incomplete")
            digest = expected_digest(entry, meta.etag, size)
            # A Hub location (same origin) gets the token; a CDN's signed URL must not.
            same_origin = _origin(meta.location) == _origin(url)
            headers = build_hf_headers(token=auth if same_origin else False)
            headers["Accept-Encoding"] = "identity"
            transfer(job.key, job._add_bytes, entry.path, meta.location, headers, partial, size, digest, check)
            os.replace(partial, blob)
            job._file_done()

    def _verify_cached(self, job: DownloadJob) -> None:
        where = f"{job.repo_id}@{job.revision}" if job.revision else job.repo_id
        try:
            path = Path(snapshot_download(job.repo_id, revision=job.revision, cache_dir=self.hub_cache, local_files_only=True))
        except IncompleteSnapshotError as exc:
            raise TransferFailure(
                f"{where} is only partly in the cache {self.hub_cache} and offline mode is on (HF_HUB_OFFLINE), "
                f"so the rest cannot be downloaded: {first_line(exc)}"
            ) from exc
        except LocalEntryNotFoundError as exc:
            raise TransferFailure(
                f"{where} is not in the cache {self.hub_cache} and offline mode is on (HF_HUB_OFFLINE): "
                "download it where the Hub can be reached, or turn offline mode off"
            ) from exc
        job._finish("done", counts=_snapshot_counts(job.repo_id, path, self.hub_cache, None), path=str(path))


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return (parts.scheme, (parts.hostname or "").lower(), parts.port)


def _raise_first(futures: list[Future[None]]) -> None:
    errors = [future.exception() for future in futures]
    for error in errors:
        if error is not None and not isinstance(error, Aborted):
            raise error


def _progress_class(job: DownloadJob, check: Callable[[], None]) -> type[hf_tqdm]:
    """The `tqdm_class` for snapshot_download: its byte bar reports into the job; every bar stops on close()."""

    class JobProgress(hf_tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            # snapshot_download's byte bar for the files it writes (its other bars count files or network bytes).
            self._counts_bytes = kwargs.get("name") == "huggingface_hub.snapshot_download"
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]

        def update(self, n: float | None = 1) -> bool | None:
            check()
            if self._counts_bytes and n:
                job._add_bytes(int(n))
            result: bool | None = super().update(n)
            return result

    return JobProgress


def _snapshot_counts(repo_id: str, path: Path, hub_cache: Path, files: list[RepoFile] | None) -> tuple[int, int, int, int]:
    """(bytes_done, bytes_total, files_done, files_total) read from the snapshot on disk and its tree listing."""
    try:
        listed = {entry.path: entry.size for entry in get_cached_repo_tree(repo_id, revision=path.name, cache_dir=hub_cache)}
    except CachedRepoTreeNotFoundError:
        listed = {entry.path: entry.size for entry in files} if files is not None else {}
    if not listed:  # no listing cached: what the snapshot holds
        listed = {p.relative_to(path).as_posix(): p.stat().st_size for p in path.rglob("*") if p.is_file()}
    on_disk = {name: (path / name).stat().st_size for name in listed if (path / name).is_file()}
    return (sum(on_disk.values()), sum(listed.values()), len(on_disk), len(listed))


# Messages.
