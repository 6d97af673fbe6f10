"""Downloads through the admin API, against the tests' local Hub (HF_ENDPOINT), in adapters of their own.

huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE at import, so each case runs an adapter
process started with them; the rest of the session stays offline.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import ADMIN_KEY, start_hub_adapter
from hub_server import BIG_FILE, BIG_SIZE, GATED_REPO, PUBLIC_REPO, RIGHT_TOKEN, HubServer, default_repos
from passerelle_stack.launcher import Stack


@pytest.fixture(scope="module")
def hub() -> Iterator[HubServer]:
    with HubServer(throttle_bps=4 * 1024 * 1024) as server:
        yield server


def test_stored_token_is_restored_at_start_and_used_for_gated_downloads(stack: Stack, hub: HubServer, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    token_file = cache / ".hf_token"
    token_file.write_text(RIGHT_TOKEN)
    os.chmod(token_file, 0o600)
    url = start_hub_adapter(stack, hub, cache, "adapter-hub-token")
    try:
        with httpx.Client(base_url=f"{url}/api/admin", headers={"X-Admin-Key": ADMIN_KEY}, timeout=120) as admin:
            response = admin.post("/models/hub_gated/download", params={"wait": "true"})
            assert response.status_code == 200, response.text
            assert response.json()["download"]["state"] == "done" and response.json()["download"]["percent"] == 100
            snapshot = next((cache / "hub" / "models--passerelle-test--tiny-gated" / "snapshots").iterdir())
            assert (snapshot / "config.json").is_file()
        log = (stack.config.run_dir / "adapter-hub-token.log").read_text()
        assert "token restored" in log and RIGHT_TOKEN not in log
    finally:
        stack.stop(names=["adapter-hub-token"])


def test_downloads_report_progress_join_and_explain_missing_tokens(stack: Stack, hub: HubServer, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    url = start_hub_adapter(stack, hub, cache, "adapter-hub-anonymous")
    try:
        with httpx.Client(base_url=f"{url}/api/admin", headers={"X-Admin-Key": ADMIN_KEY}, timeout=120) as admin:
            first = admin.post("/models/hub_public/download")
            assert first.status_code == 202 and first.json()["download"]["state"] == "running"
            second = admin.post("/models/hub_public/download")
            assert second.json()["download"]["started_at"] == first.json()["download"]["started_at"]  # joined, not restarted
            seen: list[float] = []
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                download = admin.get("/status").json()["models"]["hub_public"]["download"]
                if download and download["percent"] is not None:
                    seen.append(download["percent"])
                if download and download["state"] != "running":
                    break
                time.sleep(0.3)
            assert download["state"] == "done" and download["bytes_done"] >= BIG_SIZE
            assert any(0 < value < 100 for value in seen), seen  # progress was visible while it ran
            assert len(hub.file_gets(PUBLIC_REPO, BIG_FILE)) == 1  # the joined call fetched nothing twice
            status = admin.get("/status").json()["models"]["hub_public"]
            assert status["cache"]["cached"] and status["cache"]["size_bytes"] >= BIG_SIZE

            gated = admin.post("/models/hub_gated/download", params={"wait": "true"})
            assert gated.status_code == 401  # this adapter has no token: the Hub's answer to anonymous callers
            message = gated.json()["error"]["message"]
            assert "gated model (401: no valid token was sent)" in message and "/api/admin/huggingface/token" in message
    finally:
        stack.stop(names=["adapter-hub-anonymous"])


def test_failures_map_to_the_route_and_a_put_token_is_used_for_gated_downloads(stack: Stack, tmp_path: Path) -> None:
    """A Hub without the repository: 404 in the API's error shape, with the job. A Hub that sends bytes
    not matching their hash: 502. A token PUT through the admin API: the gated download sends it and succeeds."""
    cache = tmp_path / "cache"
    with HubServer(repos={GATED_REPO: default_repos()[GATED_REPO]}) as hub:  # no PUBLIC_REPO: hub_public names a missing repository
        url = start_hub_adapter(stack, hub, cache, "adapter-hub-put-token")
        try:
            with httpx.Client(base_url=f"{url}/api/admin", headers={"X-Admin-Key": ADMIN_KEY}, timeout=120) as admin:
                missing = admin.post("/models/hub_public/download", params={"wait": "true"})
                assert missing.status_code == 404, missing.text
                error = missing.json()["error"]
                assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "download_failed", "key")
                assert error["message"].startswith(f"{PUBLIC_REPO} was not found on the Hub (it answered 401)"), error
                assert "/api/admin/huggingface/token" in error["message"]
                job = missing.json()["download"]
                assert job["state"] == "failed" and job["status_code"] == 404 and job["error"] == error["message"]

                assert admin.get("/huggingface/token").json()["configured"] is False
                stored = admin.put("/huggingface/token", json={"token": RIGHT_TOKEN})
                assert stored.status_code == 200 and stored.json()["configured"] is True

                hub.corrupt = {"config.json"}
                corrupt = admin.post("/models/hub_gated/download", params={"wait": "true"})
                assert corrupt.status_code == 502, corrupt.text
                assert corrupt.json()["error"]["code"] == "download_failed"
                assert "config.json: the downloaded bytes do not match the Hub's git-sha1" in corrupt.json()["error"]["message"]

                hub.corrupt = set()
                hub.clear_hits()
                gated = admin.post("/models/hub_gated/download", params={"wait": "true"})
                assert gated.status_code == 200, gated.text
                assert gated.json()["download"]["state"] == "done" and gated.json()["download"]["percent"] == 100
            resolves = [h for h in hub.snapshot_hits() if h.role == "hub" and f"/{GATED_REPO}/resolve/" in h.path]
            assert resolves and all(h.authorization == f"Bearer {RIGHT_TOKEN}" for h in resolves), resolves
            assert all(h.status in (200, 302) for h in resolves), resolves
            snapshot = cache / "hub" / "models--passerelle-test--tiny-gated" / "snapshots" / hub.repos[GATED_REPO].sha
            for name, file in hub.repos[GATED_REPO].files.items():
                assert (snapshot / name).read_bytes() == file.data, name
            assert RIGHT_TOKEN not in (stack.config.run_dir / "adapter-hub-put-token.log").read_text()
        finally:
            stack.stop(names=["adapter-hub-put-token"])
