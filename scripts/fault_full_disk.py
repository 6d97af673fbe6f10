#!/usr/bin/env python3
"""Full disk in the model cache during a download (the one fault that is a harness, not a test: it
mounts a tmpfs, so it needs root).

An adapter of its own downloads the tests' public repository (an 8 MiB LFS file and small files)
from the tests' local Hub (tests/hub_server.py) into a model cache on a tmpfs of --small-mib (5).
Expected, and checked:
  1. the download fails with 507 and a message that says the cache is full and how to go on;
  2. the partial file `blobs/<sha256>.incomplete` is kept (documented in docs/downloads.md);
  3. after the tmpfs grows to --large-mib (64), the next start resumes it with a `Range` request
     from where it stopped, and the finished blob has the Hub's sha256.
Prints the figures (README's "Faults" section) and exits 1 when a check fails.

Usage: scripts/fault_full_disk [--small-mib 5] [--large-mib 64]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' local Hub

from hub_server import BIG_FILE, BIG_SIZE, PUBLIC_REPO, HubServer
from passerelle_stack.launcher import _wait_http, free_port

REPO = Path(__file__).resolve().parents[1]
ADMIN_KEY = "full-disk-" + os.urandom(8).hex()
MODEL = "hub_public"  # tests/model_repositories/lifecycle/hub_public names PUBLIC_REPO


def mount(point: Path, mib: int, remount: bool = False) -> None:
    options = f"{'remount,' if remount else ''}size={mib}m,mode=0700"
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], check=True)


def start_adapter(hub: HubServer, cache: Path, log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = dict(os.environ)
    env.update(
        ADAPTER_HOST="127.0.0.1",
        ADAPTER_PORT=str(port),
        TRITON_GRPC_URL=f"127.0.0.1:{free_port()}",  # no Triton: downloads do not need it
        TRITON_HTTP_URL=f"http://127.0.0.1:{free_port()}",
        MODEL_REPOSITORY=str(REPO / "tests" / "model_repositories" / "lifecycle"),
        MODEL_CACHE_DIR=str(cache),
        HF_ENDPOINT=hub.url,
        HF_HUB_OFFLINE="0",
        ADMIN_API_KEY=ADMIN_KEY,
        OPENAI_API_KEYS="",
        PROFILE="cpu",
    )
    env.pop("FRONTEND_DIST", None)
    log = log_path.open("ab")
    process = subprocess.Popen([sys.executable, "-m", "passerelle"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    _wait_http(f"{url}/openapi.json", 60, process, "adapter", log_path)
    return process, url


def download(url: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = httpx.post(
        f"{url}/api/admin/models/{MODEL}/download", params={"wait": "true"}, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=300
    )
    return response, time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small-mib", type=int, default=5)
    parser.add_argument("--large-mib", type=int, default=64)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("scripts/fault_full_disk mounts a tmpfs: run it as root")
        return 2

    checks: list[tuple[str, bool, str]] = []
    with tempfile.TemporaryDirectory(prefix="passerelle-full-disk-") as scratch, HubServer() as hub:
        cache = Path(scratch) / "cache"
        cache.mkdir()
        mount(cache, args.small_mib)
        process = None
        try:
            process, url = start_adapter(hub, cache, Path(scratch) / "adapter.log")
            full, full_s = download(url)
            error = full.json().get("error", {}) if full.headers.get("content-type", "").startswith("application/json") else {}
            checks.append(
                ("507 with a message that says what to do", full.status_code == 507 and "full" in error.get("message", ""), str(error))
            )
            partial = sorted(cache.glob("hub/models--*/blobs/*.incomplete"))
            kept = partial[0].stat().st_size if partial else 0
            checks.append(("the partial file is kept", bool(partial) and kept > 0, f"{len(partial)} file(s), {kept} bytes"))

            mount(cache, args.large_mib, remount=True)
            hub.clear_hits()
            done, done_s = download(url)
            ranges = [hit.range for hit in hub.file_gets(PUBLIC_REPO, BIG_FILE)]
            checks.append(("the next start succeeds", done.status_code == 200, done.text[:300]))
            checks.append(("it resumes with Range from the partial size", ranges == [f"bytes={kept}-"], f"Range headers sent: {ranges}"))
            blobs = [path for path in cache.glob("hub/models--*/blobs/*") if not path.name.endswith(".incomplete")]
            expected = hub.repos[PUBLIC_REPO].files[BIG_FILE].sha256
            big = [path for path in blobs if path.stat().st_size == BIG_SIZE]
            digest = hashlib.sha256(big[0].read_bytes()).hexdigest() if big else ""
            checks.append(("the finished blob has the Hub's sha256", digest == expected, f"{digest[:16]}… vs {expected[:16]}…"))
            leftovers = sorted(path.name for path in cache.glob("hub/models--*/blobs/*.incomplete"))
            checks.append(("no partial file left", not leftovers, str(leftovers)))
        finally:
            if process is not None:
                process.terminate()
                process.wait(timeout=30)
            subprocess.run(["umount", str(cache)], check=False)
            if not all(ok for _, ok, _ in checks):
                print((Path(scratch) / "adapter.log").read_text()[-3000:])

    print(f"\n## fault_full_disk: a {BIG_SIZE >> 20} MiB file into a {args.small_mib} MiB cache, then {args.large_mib} MiB\n")
    print(f"- first attempt: {full.status_code} after {full_s:.1f} s; partial file kept: {kept} bytes")
    print(f"- second attempt: {done.status_code} after {done_s:.1f} s, resumed at byte {kept}")
    for name, ok, detail in checks:
        print(f"- {'PASS' if ok else 'FAIL'}: {name} ({detail})")
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
