"""Model downloads (passerelle.admin.downloads) against a local Hugging Face Hub (tests/hub_server.py).

huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE once, at import, and this test session
imports it offline; so the download manager runs in its own interpreter (DRIVER below) with the
endpoint pointing at the local Hub, and reports job snapshots and its captured log as JSON. The
Hub runs here, in the pytest process, and records every request. No Triton, loopback only.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hub_server import BIG_FILE, BIG_SIZE, GATED_REPO, PUBLIC_REPO, RIGHT_TOKEN, WRONG_TOKEN, HubServer

ADAPTER_SRC = Path(__file__).resolve().parents[1] / "adapter" / "src"
TOKEN_ROUTE = "PUT /api/admin/huggingface/token"

# Runs a list of steps against a DownloadManager; prints {"results": [...], "logs": "..."} as its last line.
DRIVER = r"""
import asyncio, io, json, logging, sys
from pathlib import Path

spec = json.loads(sys.argv[1])
captured = io.StringIO()
handler = logging.StreamHandler(captured)
handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
logging.getLogger().addHandler(handler)
logging.getLogger().setLevel(logging.DEBUG)

from passerelle.admin.downloads.manager import DownloadManager
from passerelle.core.shared import SharedState


def new_manager():
    cache = Path(spec["cache"])
    return DownloadManager(cache, lambda: spec.get("token"), offline=spec.get("offline", False), shared=SharedState(cache / ".passerelle"))


async def main():
    out = []
    manager = new_manager()
    for step in spec["steps"]:
        op, key = step["op"], step.get("key", "tiny")
        if op == "start":
            job = manager.start(key, step["repo"], step.get("revision"))
            out.append({"op": op, "snapshot": job.snapshot()})
        elif op == "join":  # start again once the first job has transferred some bytes
            job = manager.job(key)
            while job.state == "running" and job.snapshot()["bytes_done"] < step["after_bytes"]:
                await asyncio.sleep(0.01)
            again = manager.start(key, step["repo"], step.get("revision"))
            out.append({"op": op, "same_job": again is job, "running": job.state == "running", "snapshot": again.snapshot()})
        elif op == "watch":  # poll until the job ends
            job = manager.job(key)
            seen = []
            while job.state == "running":
                seen.append(job.snapshot())
                await asyncio.sleep(0.05)
            out.append({"op": op, "running": seen, "final": job.snapshot()})
        elif op == "wait":
            job = await manager.wait(key)
            out.append({"op": op, "final": job.snapshot()})
        elif op == "close_after":  # close the manager once the job has that many bytes
            job = manager.job(key)
            while job.state == "running" and job.snapshot()["bytes_done"] < step["bytes"]:
                await asyncio.sleep(0.01)
            before = job.snapshot()
            await manager.close()
            out.append({"op": op, "before": before, "final": job.snapshot()})
    await manager.close()
    return out


results = asyncio.run(main())
print(json.dumps({"results": results, "logs": captured.getvalue()}))
"""


def drive(
    hub_url: str, cache: Path, steps: list[dict[str, Any]], *, token: str | None = None, offline: bool = False
) -> tuple[list[dict[str, Any]], str, str]:
    """Run the steps in a fresh interpreter; returns (results, captured log, everything it printed)."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("HF_", "HUGGING")) and name.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }
    env.update(
        HF_ENDPOINT=hub_url,
        HF_HUB_OFFLINE="1" if offline else "0",
        HF_HOME=str(cache.parent / "hf-home"),  # no stored token from this machine
        HF_HUB_DISABLE_TELEMETRY="1",
        NO_PROXY="127.0.0.1,localhost",
        PYTHONPATH=str(ADAPTER_SRC),
    )
    spec = {"cache": str(cache), "token": token, "offline": offline, "steps": steps}
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(spec)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, f"driver failed ({proc.returncode}):\n{proc.stderr[-6000:]}"
    payload = json.loads(proc.stdout.strip().splitlines()[-1])
    return payload["results"], payload["logs"], proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def hub() -> Any:
    with HubServer() as server:
        yield server


@pytest.fixture
def fresh_hub(hub: HubServer) -> HubServer:
    hub.clear_hits()
    hub.throttle_bps = None
    hub.etag_override = None
    hub.corrupt = set()
    hub.ignore_range = hub.refuse_range = False
    return hub


def repo_dir(cache: Path, repo_id: str) -> Path:
    return cache / "hub" / ("models--" + repo_id.replace("/", "--"))


def assert_complete_snapshot(hub: HubServer, cache: Path, repo_id: str, final: dict[str, Any]) -> Path:
    repo = hub.repos[repo_id]
    storage = repo_dir(cache, repo_id)
    snapshot = storage / "snapshots" / repo.sha
    total = sum(f.size for f in repo.files.values())
    assert final["state"] == "done", final
    assert final["error"] is None and final["status_code"] is None
    assert final["path"] == str(snapshot) and final["commit"] == repo.sha
    assert (final["bytes_done"], final["bytes_total"], final["percent"]) == (total, total, 100.0)
    assert (final["files_done"], final["files_total"]) == (len(repo.files), len(repo.files))
    for name, file in repo.files.items():
        assert (snapshot / name).read_bytes() == file.data, name
        assert (snapshot / name).is_symlink(), name  # the Hugging Face layout: snapshots link to blobs
    assert (storage / "refs" / "main").read_text() == repo.sha
    assert not list(storage.glob("blobs/*.incomplete"))
    return snapshot


@pytest.mark.timeout(90)
def test_public_download_lands_in_the_cache_with_visible_progress(fresh_hub: HubServer, tmp_path: Path) -> None:
    fresh_hub.throttle_bps = 4 * 1024 * 1024  # the 8 MiB file takes about 2 s
    cache = tmp_path / "models"
    results, logs, _ = drive(fresh_hub.url, cache, [{"op": "start", "repo": PUBLIC_REPO}, {"op": "watch"}])
    started, watched = results
    assert started["snapshot"]["state"] == "running" and started["snapshot"]["repo_id"] == PUBLIC_REPO
    assert_complete_snapshot(fresh_hub, cache, PUBLIC_REPO, watched["final"])

    total = watched["final"]["bytes_total"]
    seen = [s["bytes_done"] for s in watched["running"] if s["bytes_total"] is not None]
    assert seen == sorted(seen), "bytes_done never goes back"
    midway = sorted({b for b in seen if 0 < b < total})
    assert len(midway) >= 3, f"progress was not observed while running: {seen}"
    for snap in watched["running"]:
        if snap["bytes_total"]:
            assert snap["percent"] == round(100 * snap["bytes_done"] / snap["bytes_total"], 2)
    assert "passerelle.downloads" in logs and "done" in logs


@pytest.mark.timeout(90)
def test_a_second_start_joins_the_running_download(fresh_hub: HubServer, tmp_path: Path) -> None:
    fresh_hub.throttle_bps = 4 * 1024 * 1024
    cache = tmp_path / "models"
    steps: list[dict[str, Any]] = [
        {"op": "start", "repo": PUBLIC_REPO},
        {"op": "join", "repo": PUBLIC_REPO, "after_bytes": 512 * 1024},
        {"op": "wait"},
    ]
    results, _, _ = drive(fresh_hub.url, cache, steps)
    started, joined, waited = results
    assert joined["running"] and joined["same_job"]
    assert joined["snapshot"]["started_at"] == started["snapshot"]["started_at"]
    assert_complete_snapshot(fresh_hub, cache, PUBLIC_REPO, waited["final"])
    for name in fresh_hub.repos[PUBLIC_REPO].files:
        gets = fresh_hub.file_gets(PUBLIC_REPO, name)
        assert len(gets) == 1, (name, gets)
    metadata_calls = [h for h in fresh_hub.snapshot_hits() if h.path.startswith(f"/api/models/{PUBLIC_REPO}") and "/tree/" not in h.path]
    assert len(metadata_calls) == 2, "one job: its own look-up plus snapshot_download's"


@pytest.mark.timeout(120)
def test_an_interrupted_download_resumes_where_it_stopped(fresh_hub: HubServer, tmp_path: Path) -> None:
    cache = tmp_path / "models"
    big = fresh_hub.repos[PUBLIC_REPO].files[BIG_FILE]
    blobs = repo_dir(cache, PUBLIC_REPO) / "blobs"

    fresh_hub.throttle_bps = 2 * 1024 * 1024
    results, logs, _ = drive(fresh_hub.url, cache, [{"op": "start", "repo": PUBLIC_REPO}, {"op": "close_after", "bytes": 2 * 1024 * 1024}])
    closed = results[1]
    assert closed["before"]["state"] == "running"
    assert closed["final"]["state"] == "failed" and "cancelled" in closed["final"]["error"]
    partial = blobs / f"{big.sha256}.incomplete"
    assert partial.is_file(), sorted(p.name for p in blobs.iterdir())
    kept = partial.stat().st_size
    assert 1024 * 1024 <= kept < BIG_SIZE, kept
    assert partial.read_bytes() == big.data[:kept], "the partial file holds the file's first bytes"
    assert not (blobs / big.sha256).exists()
    first_transfer = fresh_hub.file_gets(PUBLIC_REPO, BIG_FILE)
    assert [h.range for h in first_transfer] == [None]

    fresh_hub.clear_hits()
    fresh_hub.throttle_bps = None
    results, logs, _ = drive(fresh_hub.url, cache, [{"op": "start", "repo": PUBLIC_REPO}, {"op": "wait"}])
    assert_complete_snapshot(fresh_hub, cache, PUBLIC_REPO, results[1]["final"])
    resumed = fresh_hub.file_gets(PUBLIC_REPO, BIG_FILE)
    assert [(h.range, h.status) for h in resumed] == [(f"bytes={kept}-", 206)], resumed
    assert resumed[0].bytes_sent == BIG_SIZE - kept, "only the missing bytes were sent"
    assert f"resuming {BIG_FILE} at byte {kept}" in logs
    # The small files were complete: the second run did not fetch them again.
    assert fresh_hub.file_gets(PUBLIC_REPO, "config.json") == []


@pytest.mark.timeout(60)
def test_gated_repo_without_token_fails_with_401_and_says_what_to_do(fresh_hub: HubServer, tmp_path: Path) -> None:
    results, logs, _ = drive(fresh_hub.url, tmp_path / "models", [{"op": "start", "repo": GATED_REPO}, {"op": "wait"}])
    final = results[1]["final"]
    assert final["state"] == "failed" and final["status_code"] == 401, final
    assert TOKEN_ROUTE in final["error"] and "token" in final["error"] and "license" in final["error"]
    assert f"{fresh_hub.url}/{GATED_REPO}" in final["error"]
    assert [h for h in fresh_hub.snapshot_hits() if h.role == "cdn"] == []
    assert "failed" in logs and TOKEN_ROUTE in logs


@pytest.mark.timeout(60)
def test_gated_repo_with_a_token_without_access_fails_with_403(fresh_hub: HubServer, tmp_path: Path) -> None:
    results, _, printed = drive(
        fresh_hub.url, tmp_path / "models", [{"op": "start", "repo": GATED_REPO}, {"op": "wait"}], token=WRONG_TOKEN
    )
    final = results[1]["final"]
    assert final["state"] == "failed" and final["status_code"] == 403, final
    assert TOKEN_ROUTE in final["error"] and "license" in final["error"]
    assert WRONG_TOKEN not in printed, "the token leaked into a snapshot or the log"
    assert any(h.authorization == f"Bearer {WRONG_TOKEN}" for h in fresh_hub.snapshot_hits()), "the token was sent to the Hub"


@pytest.mark.timeout(60)
def test_gated_repo_with_the_right_token_downloads_and_never_shows_the_token(fresh_hub: HubServer, tmp_path: Path) -> None:
    cache = tmp_path / "models"
    results, logs, printed = drive(fresh_hub.url, cache, [{"op": "start", "repo": GATED_REPO}, {"op": "wait"}], token=RIGHT_TOKEN)
    assert_complete_snapshot(fresh_hub, cache, GATED_REPO, results[1]["final"])
    assert RIGHT_TOKEN not in printed, "the token leaked into a snapshot or the log"
    assert "passerelle.downloads" in logs and "with a token" in logs
    hits = fresh_hub.snapshot_hits()
    resolves = [h for h in hits if h.role == "hub" and "/resolve/" in h.path]
    assert resolves and all(h.authorization == f"Bearer {RIGHT_TOKEN}" for h in resolves)
    cdn = [h for h in hits if h.role == "cdn"]
    assert cdn and all(h.authorization is None for h in cdn), "the token must not go to the CDN host"


@pytest.mark.timeout(60)
def test_unknown_repo_fails_with_404(fresh_hub: HubServer, tmp_path: Path) -> None:
    results, _, _ = drive(fresh_hub.url, tmp_path / "models", [{"op": "start", "repo": "passerelle-test/no-such-model"}, {"op": "wait"}])
    final = results[1]["final"]
    assert final["state"] == "failed" and final["status_code"] == 404, final
    assert "not found" in final["error"] and TOKEN_ROUTE in final["error"]
    # The Hub answered 401 to an anonymous caller; the job says what it means.
    assert [h.status for h in fresh_hub.snapshot_hits() if h.path.startswith("/api/models/")] == [401]


@pytest.mark.timeout(90)
def test_offline_mode_checks_the_cache_and_never_calls_the_hub(fresh_hub: HubServer, tmp_path: Path) -> None:
    cache = tmp_path / "models"
    results, _, _ = drive(fresh_hub.url, cache, [{"op": "start", "repo": PUBLIC_REPO}, {"op": "wait"}])
    online = results[1]["final"]
    assert online["state"] == "done"

    fresh_hub.clear_hits()
    results, _, _ = drive(fresh_hub.url, cache, [{"op": "start", "repo": PUBLIC_REPO}, {"op": "wait"}], offline=True)
    assert_complete_snapshot(fresh_hub, cache, PUBLIC_REPO, results[1]["final"])

    results, _, _ = drive(fresh_hub.url, tmp_path / "empty", [{"op": "start", "repo": PUBLIC_REPO}, {"op": "wait"}], offline=True)
    final = results[1]["final"]
    assert final["state"] == "failed" and final["status_code"] is None, final
    assert "not in the cache" in final["error"] and "offline mode is on" in final["error"]
    assert fresh_hub.snapshot_hits() == [], "offline mode sent requests"


@pytest.mark.timeout(60)
def test_an_unreachable_hub_fails_with_a_network_error(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    results, _, _ = drive(closed_url, tmp_path / "models", [{"op": "start", "repo": PUBLIC_REPO}, {"op": "wait"}])
    final = results[1]["final"]
    assert final["state"] == "failed" and final["status_code"] is None, final
    assert "network error" in final["error"] and closed_url in final["error"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("etag", ["../../../../escaped", "abc", "0" * 39 + "/"])
def test_an_etag_that_is_not_a_digest_never_names_a_file(fresh_hub: HubServer, tmp_path: Path, etag: str) -> None:
    """The blob's file name comes from the Hub's ETag: a hostile or broken Hub that sends a path, or
    anything but a hex digest, fails the download and writes nothing outside the cache's blobs."""
    fresh_hub.etag_override = etag
    cache = tmp_path / "models"
    results, _, _ = drive(fresh_hub.url, cache, [{"op": "start", "repo": PUBLIC_REPO}, {"op": "wait"}])
    final = results[1]["final"]
    assert final["state"] == "failed" and "ETag" in final["error"], final
    assert not (tmp_path / "escaped").exists() and not list(tmp_path.rglob("escaped*"))
    blobs = repo_dir(cache, PUBLIC_REPO) / "blobs"
    if blobs.is_dir():
        assert all(len(blob.name.split(".")[0]) in (40, 64) for blob in blobs.iterdir())


def write_partial(cache: Path, hub: HubServer, kept: int) -> Path:
    """A partial download of the big file, as an interrupted run leaves it: its first `kept` bytes."""
    big = hub.repos[PUBLIC_REPO].files[BIG_FILE]
    blobs = repo_dir(cache, PUBLIC_REPO) / "blobs"
    blobs.mkdir(parents=True)
    partial = blobs / f"{big.sha256}.incomplete"
    partial.write_bytes(big.data[:kept])
    return partial


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", [BIG_FILE, "config.json"])  # an LFS file (sha256) and a regular one (git blob id)
def test_bytes_that_do_not_match_the_announced_hash_fail_and_are_discarded(fresh_hub: HubServer, tmp_path: Path, name: str) -> None:
    fresh_hub.corrupt = {name}
    cache = tmp_path / "models"
    results, logs, _ = drive(fresh_hub.url, cache, [{"op": "start", "repo": PUBLIC_REPO}, {"op": "wait"}])
    final = results[1]["final"]
    file = fresh_hub.repos[PUBLIC_REPO].files[name]
    kind, digest = ("sha256", file.sha256) if file.lfs else ("git-sha1", file.git_oid)
    assert final["state"] == "failed" and final["path"] is None, final
    assert f"{name}: the downloaded bytes do not match the Hub's {kind} {digest}; the file was discarded" in final["error"], final
    assert len(fresh_hub.file_gets(PUBLIC_REPO, name)) == 1, "the bytes were fetched"
    storage = repo_dir(cache, PUBLIC_REPO)
    assert not (storage / "blobs" / digest).exists(), "the bad bytes became the blob"
    assert not (storage / "blobs" / f"{digest}.incomplete").exists(), "the bad bytes were kept for a resume"
    assert not list(storage.glob(f"snapshots/*/{name}"))
    assert "failed" in logs


@pytest.mark.timeout(60)
def test_a_hub_that_ignores_range_gets_the_whole_file_once(fresh_hub: HubServer, tmp_path: Path) -> None:
    """A 200 to a ranged resume carries the whole file: it replaces the partial bytes, never follows them."""
    cache = tmp_path / "models"
    kept = 3 * 1024 * 1024
    write_partial(cache, fresh_hub, kept)
    fresh_hub.ignore_range = True
    results, logs, _ = drive(fresh_hub.url, cache, [{"op": "start", "repo": PUBLIC_REPO}, {"op": "wait"}])
    assert_complete_snapshot(fresh_hub, cache, PUBLIC_REPO, results[1]["final"])
    gets = fresh_hub.file_gets(PUBLIC_REPO, BIG_FILE)
    assert [(h.range, h.status, h.bytes_sent) for h in gets] == [(f"bytes={kept}-", 200, BIG_SIZE)], gets
    assert f"{BIG_FILE}: the server ignored the range request, starting over" in logs


@pytest.mark.timeout(60)
def test_a_range_refused_with_416_starts_the_file_over(fresh_hub: HubServer, tmp_path: Path) -> None:
    cache = tmp_path / "models"
    kept = 3 * 1024 * 1024
    write_partial(cache, fresh_hub, kept)
    fresh_hub.refuse_range = True
    results, logs, _ = drive(fresh_hub.url, cache, [{"op": "start", "repo": PUBLIC_REPO}, {"op": "wait"}])
    assert_complete_snapshot(fresh_hub, cache, PUBLIC_REPO, results[1]["final"])
    gets = fresh_hub.file_gets(PUBLIC_REPO, BIG_FILE)
    assert [(h.range, h.status) for h in gets] == [(f"bytes={kept}-", 416), (None, 200)], gets
    assert gets[1].bytes_sent == BIG_SIZE
    assert f"{BIG_FILE}: range {kept}- refused (416), starting over" in logs
