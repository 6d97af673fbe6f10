"""A small Hugging Face Hub for tests: loopback only, in-memory repositories, the endpoints that
huggingface_hub's `snapshot_download` and our download manager use, nothing else.

Behaviour copied from the Hub as huggingface_hub 2.x reads it (its `hf_raise_for_status`,
`get_hf_file_metadata`, `HfApi.model_info` / `list_repo_tree`):

- `GET /api/models/{repo}[/revision/{rev}]` → model info (`id`, `sha`, `siblings`; sizes and
  LFS data with `?blobs=true`).
- `GET /api/models/{repo}/tree/{rev}[/{path}]?recursive=…` → the tree listing (`type`, `path`,
  `size`, `oid`, `lfs: {oid, size, pointerSize}`).
- `HEAD|GET /{repo}/resolve/{rev}/{path}` → `X-Repo-Commit`; a regular file is served here with
  `ETag` = its git blob id; an LFS file answers 302 to a CDN host (a second port, so another
  origin) with `X-Linked-Etag` = sha256 and `X-Linked-Size`, as the Hub does.
- The CDN (`/blobs/{sha256}?signature…`) serves bytes, with `Range` (206, `Content-Range`).
- Errors carry `X-Error-Code` (`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`,
  `GatedRepo`), `X-Error-Message` and a JSON `{"error": …}` body. An unknown repository is 401
  without a token and 404 with one (the Hub does not reveal private repositories). A gated
  repository's metadata is public, its files are not: 401 without a token, 403 with a token
  that has no access, served with the right one.

`throttle_bps` slows every body so that tests can watch progress and interrupt a transfer;
`hits` records every request (role, method, path, Range, Authorization, bytes sent).

Faults, all off by default: `corrupt` names files (paths) whose served bytes differ from the hash
announced for them (the last byte flipped, the size unchanged); `ignore_range` answers a `Range`
request with 200 and the whole file, as a server without range support does; `refuse_range`
answers every `Range` request with 416 (Range Not Satisfiable).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

PUBLIC_REPO = "passerelle-test/tiny-public"
GATED_REPO = "passerelle-test/tiny-gated"
RIGHT_TOKEN = "hf_passerelleRightToken0123456789abcdef"
WRONG_TOKEN = "hf_passerelleWrongToken9876543210fedcba"
BIG_FILE = "model.safetensors"
BIG_SIZE = 8 * 1024 * 1024
_CHUNK = 16 * 1024


@dataclass(frozen=True)
class HubFile:
    path: str
    data: bytes
    lfs: bool

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def git_oid(self) -> str:
        return hashlib.sha1(b"blob %d\0" % len(self.data) + self.data).hexdigest()

    @property
    def pointer(self) -> bytes:
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {self.size}\n".encode()


@dataclass
class HubRepo:
    repo_id: str
    files: dict[str, HubFile]
    gated: bool = False

    @property
    def sha(self) -> str:
        digest = hashlib.sha1(self.repo_id.encode())
        for path in sorted(self.files):
            digest.update(path.encode() + b"\0" + self.files[path].git_oid.encode())
        return digest.hexdigest()


@dataclass
class Hit:
    role: str  # "hub" or "cdn"
    method: str
    path: str
    range: str | None
    authorization: str | None
    status: int = 0
    bytes_sent: int = 0


def deterministic_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def default_repos() -> dict[str, HubRepo]:
    config = json.dumps({"model_type": "tiny", "hidden_size": 8}, indent=2).encode()
    public = HubRepo(
        PUBLIC_REPO,
        {
            "config.json": HubFile("config.json", config, lfs=False),
            "tokenizer/vocab.txt": HubFile("tokenizer/vocab.txt", b"\n".join(b"tok%d" % i for i in range(200)), lfs=False),
            BIG_FILE: HubFile(BIG_FILE, deterministic_bytes(BIG_SIZE, seed=1), lfs=True),
        },
    )
    gated = HubRepo(
        GATED_REPO,
        {
            "config.json": HubFile("config.json", config, lfs=False),
            BIG_FILE: HubFile(BIG_FILE, deterministic_bytes(256 * 1024, seed=2), lfs=True),
        },
        gated=True,
    )
    return {public.repo_id: public, gated.repo_id: gated}


_REPO = r"(?P<repo>[^/]+/[^/]+)"
_INFO = re.compile(rf"^/api/models/{_REPO}(?:/revision/(?P<rev>[^/]+))?$")
_TREE = re.compile(rf"^/api/models/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<sub>.*))?$")
_RESOLVE = re.compile(rf"^/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
_BLOB = re.compile(r"^/blobs/(?P<sha>[0-9a-f]{64})$")
_RANGE = re.compile(r"^bytes=(?P<start>\d+)-(?P<end>\d*)$")


@dataclass
class HubServer:
    repos: dict[str, HubRepo] = field(default_factory=default_repos)
    right_token: str = RIGHT_TOKEN
    throttle_bps: float | None = None
    hits: list[Hit] = field(default_factory=list)
    # A hostile Hub: this ETag for every regular (non-LFS) file, e.g. a path instead of a digest.
    etag_override: str | None = None
    corrupt: set[str] = field(default_factory=set)
    ignore_range: bool = False
    refuse_range: bool = False

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._hub = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self, "hub"))
        self._cdn = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self, "cdn"))
        for server in (self._hub, self._cdn):
            server.daemon_threads = True
        self._threads = [
            threading.Thread(target=s.serve_forever, name=f"hub-{i}", daemon=True) for i, s in enumerate((self._hub, self._cdn))
        ]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._hub.server_address[1]}"

    @property
    def cdn_url(self) -> str:
        return f"http://127.0.0.1:{self._cdn.server_address[1]}"

    def start(self) -> HubServer:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        for server in (self._hub, self._cdn):
            server.shutdown()
            server.server_close()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def record(self, hit: Hit) -> Hit:
        with self._lock:
            self.hits.append(hit)
        return hit

    def snapshot_hits(self) -> list[Hit]:
        with self._lock:
            return list(self.hits)

    def clear_hits(self) -> None:
        with self._lock:
            self.hits.clear()

    def served(self, file: HubFile) -> bytes:
        """The bytes sent for `file`: its own, or, when it is in `corrupt`, the same size with the last byte flipped."""
        if file.path not in self.corrupt:
            return file.data
        return file.data[:-1] + bytes([file.data[-1] ^ 0xFF])

    def file_gets(self, repo_id: str, path: str) -> list[Hit]:
        """GETs that carried the bytes of a file (resolve for regular files, the CDN for LFS ones)."""
        file = self.repos[repo_id].files[path]
        hits = self.snapshot_hits()
        if file.lfs:
            return [h for h in hits if h.role == "cdn" and h.method == "GET" and h.path.startswith(f"/blobs/{file.sha256}")]
        return [h for h in hits if h.role == "hub" and h.method == "GET" and "/resolve/" in h.path and h.path.endswith(f"/{path}")]


def _handler(hub: HubServer, role: str) -> type[BaseHTTPRequestHandler]:
    class Handler(_HubHandler):
        pass

    Handler.hub = hub
    Handler.role = role
    return Handler


class _HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: HubServer
    role: str

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    # Dispatch.

    def _serve(self, head: bool) -> None:
        split = urlsplit(self.path)
        self.hit = self.hub.record(Hit(self.role, self.command, self.path, self.headers.get("Range"), self.headers.get("Authorization")))
        path = split.path
        if self.role == "cdn":
            match = _BLOB.match(path)
            if match and "signature" in parse_qs(split.query):
                for repo in self.hub.repos.values():
                    for file in repo.files.values():
                        if file.lfs and file.sha256 == match["sha"]:
                            return self._send_bytes(self.hub.served(file), {"ETag": f'"{file.sha256}"'}, head)
            return self._error(404, "EntryNotFound", "Not found", head)
        if match := _INFO.match(path):
            return self._model_info(match["repo"], unquote(match["rev"] or "main"), "blobs" in parse_qs(split.query), head)
        if match := _TREE.match(path):
            return self._tree(match["repo"], unquote(match["rev"]), unquote(match["sub"] or ""), parse_qs(split.query), head)
        if match := _RESOLVE.match(path):
            return self._resolve(match["repo"], unquote(match["rev"]), unquote(match["file"]), head)
        return self._error(404, None, "Not found", head)

    # Hub endpoints.

    def _repo(self, repo_id: str, rev: str, head: bool) -> HubRepo | None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            # The Hub answers 401 to anonymous callers for a repository it does not show them.
            status = 404 if self.headers.get("Authorization") else 401
            self._error(status, "RepoNotFound", "Repository not found", head)
            return None
        if rev not in ("main", repo.sha):
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}", head, commit=None)
            return None
        return repo

    def _model_info(self, repo_id: str, rev: str, blobs: bool, head: bool) -> None:
        repo = self._repo(repo_id, rev, head)
        if repo is None:
            return
        siblings: list[dict[str, Any]] = []
        for file in repo.files.values():
            sibling: dict[str, Any] = {"rfilename": file.path}
            if blobs:
                sibling.update(size=file.size, blobId=file.git_oid)
                if file.lfs:
                    sibling["lfs"] = {"sha256": file.sha256, "size": file.size, "pointerSize": len(file.pointer)}
            siblings.append(sibling)
        body = {
            "_id": hashlib.md5(repo.repo_id.encode(), usedforsecurity=False).hexdigest()[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "sha": repo.sha,
            "private": False,
            "gated": "manual" if repo.gated else False,
            "disabled": False,
            "tags": [],
            "siblings": siblings,
        }
        self._send_json(body, head)

    def _tree(self, repo_id: str, rev: str, sub: str, query: dict[str, list[str]], head: bool) -> None:
        repo = self._repo(repo_id, rev, head)
        if repo is None:
            return
        recursive = query.get("recursive", ["False"])[0].lower() == "true"
        prefix = f"{sub.strip('/')}/" if sub.strip("/") else ""
        entries: dict[str, dict[str, Any]] = {}
        for file in repo.files.values():
            if not file.path.startswith(prefix):
                continue
            rest = file.path[len(prefix) :].split("/")
            for depth in range(1, len(rest)):  # folders on the way
                folder = prefix + "/".join(rest[:depth])
                if recursive or depth == 1:
                    entries.setdefault(
                        folder, {"type": "directory", "oid": hashlib.sha1(folder.encode()).hexdigest(), "size": 0, "path": folder}
                    )
            if recursive or len(rest) == 1:
                entry: dict[str, Any] = {"type": "file", "oid": file.git_oid, "size": file.size, "path": file.path}
                if file.lfs:
                    entry["lfs"] = {"oid": file.sha256, "size": file.size, "pointerSize": len(file.pointer)}
                entries[file.path] = entry
        self._send_json(list(entries.values()), head)

    def _resolve(self, repo_id: str, rev: str, name: str, head: bool) -> None:
        repo = self._repo(repo_id, rev, head)
        if repo is None:
            return
        if repo.gated:
            authorization = self.headers.get("Authorization")
            if authorization is None:
                message = (
                    f"Access to model {repo.repo_id} is restricted. You must have access to it and be authenticated to access it. "
                    "Please log in."
                )
                return self._error(401, "GatedRepo", message, head, commit=repo.sha)
            if authorization != f"Bearer {self.hub.right_token}":
                message = (
                    f"Access to model {repo.repo_id} is restricted and you are not in the authorized list. "
                    f"Visit {self.hub.url}/{repo.repo_id} to ask for access."
                )
                return self._error(403, "GatedRepo", message, head, commit=repo.sha)
        file = repo.files.get(name)
        if file is None:
            return self._error(404, "EntryNotFound", f'{name} does not exist on "{rev}"', head, commit=repo.sha)
        if file.lfs:
            signature = hashlib.sha256(f"{file.sha256}{time.time()}".encode()).hexdigest()[:16]
            headers = {
                "Location": f"{self.hub.cdn_url}/blobs/{file.sha256}?expires=3600&signature={signature}",
                "X-Repo-Commit": repo.sha,
                "X-Linked-Etag": f'"{file.sha256}"',
                "X-Linked-Size": str(file.size),
                "ETag": f'"{file.git_oid}"',
                "Content-Length": "0",
            }
            self.hit.status = 302
            self.send_response(302)
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            return None
        etag = self.hub.etag_override if self.hub.etag_override is not None else file.git_oid
        return self._send_bytes(self.hub.served(file), {"X-Repo-Commit": repo.sha, "ETag": f'"{etag}"'}, head)

    # Responses.

    def _error(self, status: int, code: str | None, message: str, head: bool, commit: str | None = None) -> None:
        body = json.dumps({"error": message}).encode()
        self.hit.status = status
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        if commit:
            self.send_header("X-Repo-Commit", commit)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _send_json(self, payload: Any, head: bool) -> None:
        body = json.dumps(payload).encode()
        self.hit.status = 200
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _send_bytes(self, data: bytes, headers: dict[str, str], head: bool) -> None:
        size = len(data)
        start, end, status = 0, size - 1, 200
        requested = None if self.hub.ignore_range else self.headers.get("Range")
        if requested is not None:
            match = _RANGE.match(requested.strip())
            if match is None or int(match["start"]) >= size or self.hub.refuse_range:
                self.hit.status = 416
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start = int(match["start"])
            end = min(int(match["end"]), size - 1) if match["end"] else size - 1
            status = 206
        self.hit.status = status
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if head:
            return
        began = time.monotonic()
        position = start
        try:
            while position <= end:
                chunk = data[position : min(position + _CHUNK, end + 1)]
                self.wfile.write(chunk)
                self.wfile.flush()
                position += len(chunk)
                self.hit.bytes_sent += len(chunk)
                rate = self.hub.throttle_bps
                if rate:
                    ahead = (position - start) / rate - (time.monotonic() - began)
                    if ahead > 0:
                        time.sleep(ahead)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
