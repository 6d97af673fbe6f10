"""Hostile clients against an adapter of its own: schemathesis's requests from the adapter's OpenAPI,
hostile input by hand, and the cap on one API key's requests in flight (docs/security.md).

The fuzzed adapter can reach nothing but the session's Triton and the tests' local Hub:
`HF_ENDPOINT` is the local Hub and image URLs are off (`ALLOW_IMAGE_URLS=false`). It keeps its own
model cache (`MODEL_CACHE_DIR`), so the Hugging Face token it is sent and deletes, and anything it
downloads, are its own. What is neutralised, and why:

- Load and unload share the session's Triton. A generated model name that is a real model other
  than `tiny_echo` is skipped: unloading `qwen` or `canary` would break the rest of the session,
  and loading the audio models costs minutes. Names that are no model are sent as generated, and
  some load and unload cases name `tiny_echo` (a test-only echo model), with at most 2 instances;
  it is unloaded again at the end. Downloads may name the local Hub's `hub_public` and `hub_gated`
  (into the adapter's own cache), and some do.
- A request that names `qwen` gets at most 4 new tokens (a generated request without `max_tokens`
  would generate up to the whole context), keeping the module within about three minutes here.
  Some generated requests are pointed at `qwen` and `canary`, so that they pass the model lookup
  and reach the preparation, the engine and the decoder.

Everything else is as schemathesis generated it, positive (valid by the schema) and negative.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import socket
import struct
import subprocess
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance, status_code_conformance

from conftest import ADMIN_KEY, API_KEYS, start_hub_adapter
from hub_server import HubServer
from passerelle_stack.launcher import Stack

Case = schemathesis.Case[Any]
NAME = "adapter-fuzz"
BODY_LIMIT = 4 * 1024 * 1024
UPLOAD_LIMIT = 8 * 1024 * 1024
DURATION_LIMIT_S = 60
CAP = 2
# Generated cases per operation and mode (positive, negative); operations without parameters give one.
EXAMPLES = 25
SEED = int(os.environ.get("PASSERELLE_FUZZ_SEED", "13"))
REQUEST_TIMEOUT_S = 60
HARMLESS_MODEL = "tiny_echo"
# Real models a generated load or unload must not name (the catalog, less tiny_echo); downloads may
# name the two models of the local Hub (into the adapter's own cache).
TOUCHY = frozenset({"qwen", "qwen_spare", "canary", "canary_stream", "pyannote", "speaker_transcript", "langid", "system"})
TOUCHY |= {"slow_echo", "ttl_echo", "broken", "hub_public", "hub_gated"}
HUB_MODELS = frozenset({"hub_public", "hub_gated"})
HELLO = [{"role": "user", "content": "hi"}]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


@dataclass
class Fuzzed:
    url: str
    pid: int
    log: Path


@pytest.fixture(scope="module")
def fuzzed(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    cache = tmp_path_factory.mktemp("fuzz-cache")
    with HubServer() as hub:
        limits = {
            "ALLOW_IMAGE_URLS": "false",
            "IMAGE_URL_ALLOWED_HOSTS": "",
            "IMAGE_URL_ALLOWED_PRIVATE_NETWORKS": "",
            "MAX_REQUEST_BODY_BYTES": str(BODY_LIMIT),
            "MAX_AUDIO_UPLOAD_BYTES": str(UPLOAD_LIMIT),
            "MAX_AUDIO_DURATION_S": str(DURATION_LIMIT_S),
            "MAX_CONCURRENT_REQUESTS_PER_KEY": str(CAP),
        }
        url = start_hub_adapter(stack, hub, cache, NAME, status_interval_s=5.0, env=limits)
        try:
            yield Fuzzed(url, stack.processes[NAME].pid, stack.config.run_dir / f"{NAME}.log")
        finally:
            stack.stop(names=[NAME])


# Schemathesis -----------------------------------------------------------------------------------


@dataclass
class Report:
    statuses: Counter[int] = field(default_factory=Counter)
    per_operation: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    skipped: int = 0

    @property
    def cases(self) -> int:
        return sum(self.statuses.values())


def _auth(path: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_KEY if path.startswith('/api/admin') else API_KEYS[0]}"}


def _aim(case: Case, aim: bool) -> None:
    """Points some generated bodies at the real models, and bounds what qwen may generate."""
    body = case.body
    if not isinstance(body, dict):
        return
    path = case.operation.path
    if aim and path.startswith(("/v1/chat", "/v1/completions", "/v1/responses")):
        body["model"] = "qwen"
    elif aim and path.startswith(("/v1/audio", "/api/audio", "/api/diarization")):
        body["model"] = "canary"
    if body.get("model") == "qwen":
        limits = [name for name in ("max_tokens", "max_completion_tokens", "max_output_tokens") if name in body]
        for name in limits or ["max_output_tokens" if path == "/v1/responses" else "max_tokens"]:
            value = body.get(name)
            body[name] = min(value, 4) if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else 4
        if isinstance(body.get("min_tokens"), int):
            body["min_tokens"] = 0


def _bound_instances(case: Case) -> None:
    if isinstance(case.body, dict) and isinstance(instances := case.body.get("instances"), int):
        case.body["instances"] = min(max(instances, 1), 2)


def _header(response: schemathesis.Response, name: str) -> str | None:
    values = response.headers.get(name)
    return ", ".join(values) if values else None


def _media_type(response: schemathesis.Response) -> str:
    return (_header(response, "content-type") or "").split(";")[0].strip()


def _explained_media_type(case: Case, response: schemathesis.Response) -> bool:
    """Success answers the OpenAPI does not list: a stream (`stream: true`) and the audio text formats."""
    media_type = _media_type(response)
    body = case.body if isinstance(case.body, dict) else {}
    if media_type == "text/event-stream":
        return body.get("stream") in (True, "true")
    if media_type in ("text/plain", "text/vtt"):
        return case.operation.path.startswith("/v1/audio/") and body.get("response_format") in ("text", "srt", "vtt")
    return False


def _check(case: Case, response: schemathesis.Response, report: Report) -> None:
    label = case.operation.label
    status = response.status_code
    report.statuses[status] += 1
    report.per_operation[label] += 1
    if status >= 500 and status != 503:
        report.problems.append(f"{label}: {status} {response.text[:300]!r}\n{case.as_curl_command()[:600]}")
        return
    if status == 503 and not _header(response, "retry-after"):
        report.problems.append(f"{label}: 503 without Retry-After {response.text[:300]!r}")
    if status == 429:  # one sequential client never has two requests in flight
        report.problems.append(f"{label}: 429 for a sequential client")
    checks = [status_code_conformance]
    media_type = _media_type(response)
    if media_type == "application/json" or not (200 <= status < 300 and _explained_media_type(case, response)):
        checks += [content_type_conformance, response_schema_conformance]
    try:
        case.validate_response(response, checks=checks)
    except Exception as failure:  # noqa: BLE001 - schemathesis's failure group: every check's finding, in words
        report.problems.append(f"{label}: {status} does not conform: {str(failure)[:800]}")


def _run(strategy: Any, examples: int, url: str, report: Report, *, aimed: bool) -> None:
    @hypothesis_seed(SEED)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: findings are collected, not raised
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy, aim=st.booleans())
    def fuzz(case: Case, aim: bool) -> None:
        path = case.operation.path
        key = (case.path_parameters or {}).get("key")
        if "{key}" in path and key in TOUCHY and not (path.endswith("/download") and key in HUB_MODELS):
            report.skipped += 1
            return
        if aimed:
            _bound_instances(case)
        _aim(case, aim)
        try:
            response = case.call(base_url=url, headers=_auth(path), timeout=REQUEST_TIMEOUT_S)
        except requests.Timeout:
            report.problems.append(f"{case.operation.label}: no answer within {REQUEST_TIMEOUT_S} s\n{case.as_curl_command()[:600]}")
            return
        except requests.ConnectionError as error:
            report.problems.append(f"{case.operation.label}: connection failed: {error}")
            return
        except schemathesis.errors.SerializationNotPossible:
            report.skipped += 1  # a generated body that no HTTP client could send
            return
        _check(case, response, report)

    with contextlib.suppress(Unsatisfiable):  # negative cases of an operation that takes nothing: nothing to get wrong
        fuzz()


def run_schemathesis(url: str) -> Report:
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", timeout=30)
    report = Report()
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            _run(operation.as_strategy(generation_mode=mode), EXAMPLES, url, report, aimed=False)
        if operation.path in ("/api/admin/models/{key}/load", "/api/admin/models/{key}/unload"):
            _run(operation.as_strategy(path_parameters={"key": HARMLESS_MODEL}), 3, url, report, aimed=True)
        if operation.path == "/api/admin/models/{key}/download":
            _run(operation.as_strategy(path_parameters={"key": "hub_public"}), 3, url, report, aimed=True)
    return report


def test_generated_requests_get_no_server_error_and_conform(fuzzed: Fuzzed, stack: Stack) -> None:
    triton = httpx.Client(base_url=stack.triton_http, timeout=60)
    echo_was_ready = triton.get(f"/v2/models/{HARMLESS_MODEL}/ready").status_code == 200
    before = rss_mib(fuzzed.pid)
    started = time.monotonic()
    try:
        report = run_schemathesis(fuzzed.url)
    finally:
        if not echo_was_ready:
            httpx.post(f"{fuzzed.url}/api/admin/models/{HARMLESS_MODEL}/unload", headers=_auth("/api/admin"), timeout=120)
    seconds = time.monotonic() - started
    after = rss_mib(fuzzed.pid)
    print(
        f"schemathesis: {report.cases} cases in {seconds:.0f} s ({report.skipped} skipped), "
        f"statuses {dict(sorted(report.statuses.items()))}, per operation {dict(report.per_operation)}; "
        f"adapter RSS {before:.0f} → {after:.0f} MiB"
    )
    assert not report.problems, "\n\n".join(report.problems[:20])
    assert report.cases >= 300, report
    operations = sum(len(methods) for methods in httpx.get(f"{fuzzed.url}/openapi.json").json()["paths"].values())
    assert len(report.per_operation) == operations, report.per_operation  # every operation ran
    assert after - before < 300, (before, after)


# Hostile input by hand ----------------------------------------------------------------------------


def _raw(url: str, head: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """One request over a raw socket (the head as given, maybe the start of its body), then the answer's
    head and its Content-Length of body."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(head.encode("latin-1") + body)
        reader = sock.makefile("rb")
        status = int(reader.readline().split()[1])
        headers = {}
        while (line := reader.readline().decode("latin-1").rstrip("\r\n")) != "":
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding") == "chunked":
            payload = b""
            while size := int(reader.readline().split(b";")[0], 16):
                payload += reader.read(size)
                reader.readline()
        else:
            payload = reader.read(int(headers.get("content-length", "0")))
    return status, headers, payload


def _error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["message"] and error["type"] == "invalid_request_error", error
    if code is not None:
        assert error["code"] == code, error
    return error


@pytest.fixture(scope="module")
def api(fuzzed: Fuzzed) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fuzzed.url, headers={"Authorization": f"Bearer {API_KEYS[0]}"}, timeout=120) as client:
        yield client


def test_json_just_over_the_body_limit_is_refused_before_it_is_read(fuzzed: Fuzzed) -> None:
    """Only the head and 64 KiB of a body one byte over the limit are sent: the 413 comes anyway,
    in the error shape."""
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {API_KEYS[0]}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {BODY_LIMIT + 1}\r\n\r\n"
    )
    status, headers, payload = _raw(fuzzed.url, head, b'{"model": "qwen", "messages": [' + b" " * 65536)
    assert status == 413 and headers["content-type"] == "application/json"
    assert json.loads(payload)["error"]["code"] == "request_too_large"


def test_deeply_nested_json_is_a_400(api: httpx.Client, fuzzed: Fuzzed) -> None:
    unhandled = fuzzed.log.read_text(errors="replace").count("unhandled error")
    json_headers = {"Content-Type": "application/json"}
    lists = b'{"model": "qwen", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    _error(api.post("/v1/chat/completions", content=lists, headers=json_headers), 400)
    admin = {"Authorization": f"Bearer {ADMIN_KEY}", **json_headers}
    _error(api.put("/api/admin/huggingface/token", content=b'{"token": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", headers=admin), 400)
    # A JSON Schema 300 levels deep parses, then overflowed the schema validator's recursion (a 500).
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(300):
        schema = {"type": "object", "properties": {"a": schema}}
    tool = {"type": "function", "function": {"name": "f", "parameters": schema}}
    _error(
        api.post("/v1/chat/completions", json={"model": "qwen", "messages": HELLO, "max_tokens": 1, "tools": [tool]}),
        400,
        "nesting_too_deep",
    )
    response_format = {"type": "json_schema", "json_schema": {"name": "deep", "schema": schema}}
    chat = {"model": "qwen", "messages": HELLO, "max_tokens": 1, "response_format": response_format}
    _error(api.post("/v1/chat/completions", json=chat), 400, "nesting_too_deep")
    # 100 levels that the schema validator takes (unknown keywords) but vLLM refuses (64 at most): it
    # came back as the engine's failure, a 503.
    shallow: dict[str, Any] = {"type": "string"}
    for _ in range(100):
        shallow = {"a": shallow}
    chat["response_format"] = {"type": "json_schema", "json_schema": {"name": "deep", "schema": shallow}}
    assert "nested too deeply" in _error(api.post("/v1/chat/completions", json=chat), 400, "invalid_value")["message"]
    assert fuzzed.log.read_text(errors="replace").count("unhandled error") == unhandled


def test_an_empty_prompt_is_a_400(api: httpx.Client) -> None:
    """vLLM refuses an empty prompt; that came back as the engine's failure, a 503 (found by the fuzzer)."""
    error = _error(api.post("/v1/completions", json={"model": "qwen", "prompt": "", "max_tokens": 4}), 400, "invalid_value")
    assert "prompt cannot be empty" in error["message"]


def test_invalid_utf8_in_a_json_body_is_a_400(api: httpx.Client) -> None:
    body = b'{"model": "qwen", "max_tokens": 1, "messages": [{"role": "user", "content": "caf\xe9 \xff\xfe"}]}'
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/responses"):
        _error(api.post(path, content=body, headers={"Content-Type": "application/json"}), 400)
    admin = {"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"}
    _error(api.put("/api/admin/huggingface/token", content=b'{"token": "hf_\xff\xfe"}', headers=admin), 400)


def test_a_1_gb_upload_is_refused_early_and_never_held(fuzzed: Fuzzed) -> None:
    """A chunked upload to an audio route that would last 1 GiB: the 413 arrives once the upload
    limit (8 MiB here) is passed, long before the end, and the adapter's resident size stays put."""
    before = rss_mib(fuzzed.pid)
    host, port = fuzzed.url.removeprefix("http://").split(":")
    head = (
        f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {API_KEYS[0]}\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    part = b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\ncanary\r\n--b\r\n'
    part += b'Content-Disposition: form-data; name="file"; filename="a.wav"\r\nContent-Type: audio/wav\r\n\r\nRIFF'
    block = b"\0" * (1 << 20)
    sent = 0
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(head.encode() + f"{len(part):x}\r\n".encode() + part + b"\r\n")
        try:
            while sent < 1 << 30 and not select.select([sock], [], [], 0)[0]:
                sock.sendall(f"{len(block):x}\r\n".encode() + block + b"\r\n")
                sent += len(block)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed after answering
        status_line = sock.makefile("rb").readline().decode()
    assert status_line.split()[1] == "413", status_line
    assert sent < 64 * 1024 * 1024, sent
    assert rss_mib(fuzzed.pid) - before < 100


def _flac(seconds: int, directory: Path) -> bytes:
    """`seconds` of 8 kHz silence in FLAC: a few bytes per second, 64 KiB per second once decoded."""
    path = directory / "silence.flac"
    command = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", str(seconds), "-c:a", "flac", str(path)]
    subprocess.run(command, check=True, timeout=120)
    return path.read_bytes()


def test_audio_that_decodes_to_hours_is_refused_by_the_duration_limit(api: httpx.Client, fuzzed: Fuzzed, tmp_path: Path) -> None:
    """Three hours of silence as a 2 MB FLAC (691 MB of PCM once decoded), with its duration
    declared, and again with the header's sample count zeroed (length unknown): both are refused
    by the duration limit (60 s here), the second after decoding one second past it."""
    declared = _flac(3 * 3600, tmp_path)
    assert len(declared) < UPLOAD_LIMIT
    undeclared = bytearray(declared)
    assert undeclared[:4] == b"fLaC" and undeclared[4] & 0x7F == 0  # STREAMINFO first; its 36-bit sample count at 21..25
    undeclared[21] &= 0xF0
    undeclared[22:26] = bytes(4)
    before = rss_mib(fuzzed.pid)
    for data, seconds in ((declared, "10800"), (bytes(undeclared), str(DURATION_LIMIT_S + 1))):
        files = {"file": ("quiet.flac", data, "audio/flac")}
        error = _error(api.post("/v1/audio/transcriptions", data={"model": "canary"}, files=files), 413, "audio_too_long")
        assert f"lasts {seconds} s" in error["message"], error
    assert rss_mib(fuzzed.pid) - before < 100


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares its size and holds almost nothing: decoding it would fail, or take gigabytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(1024))) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [100_000, 4096])
def test_images_declaring_gigapixels_are_refused_before_decoding(api: httpx.Client, side: int) -> None:
    """Refused on the declared size (image_too_large); a decode of the truncated data would have
    been `invalid_image`."""
    url = "data:image/png;base64," + base64.b64encode(_png_header(side, side)).decode()
    content = [{"type": "text", "text": "see"}, {"type": "image_url", "image_url": {"url": url}}]
    response = api.post("/v1/chat/completions", json={"model": "qwen", "max_tokens": 1, "messages": [{"role": "user", "content": content}]})
    error = _error(response, 400, "image_too_large")
    assert str(side * side) in error["message"]


def _no_split(headers: httpx.Headers) -> None:
    assert "x-injected" not in headers
    for name, value in headers.multi_items():
        assert "\r" not in value and "\n" not in value, (name, value)


def test_cr_lf_in_echoed_fields_never_splits_a_response_header(api: httpx.Client, fuzzed: Fuzzed) -> None:
    for model in ("qwen\r\nX-Injected: 1", "qwen\nX-Injected: 1", "qwen\rX-Injected: 1"):
        response = api.post("/v1/chat/completions", json={"model": model, "max_tokens": 1, "messages": HELLO})
        assert _error(response, 404)["param"] == "model"
        _no_split(response.headers)
    files = {"file": ('a.wav"\r\nX-Injected: 1\r\n\r\n', b"RIFF\0\0\0\0WAVE", "audio/wav")}
    response = api.post("/v1/audio/transcriptions", data={"model": "canary", "response_format": "text"}, files=files)
    _error(response, 400)
    _no_split(response.headers)
    # A request id with a bare CR or LF never reaches the app: uvicorn's parser refuses the request.
    for request_id in ("abc\nX-Injected: 1", "abc\rX-Injected: 1", "abc\n"):
        head = f"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {API_KEYS[0]}\r\nX-Request-ID: {request_id}\r\n\r\n"
        status, headers, _ = _raw(fuzzed.url, head)
        assert status == 400 and "x-injected" not in headers, (request_id, status, headers)
    # One the parser lets through but the adapter does not echo: it makes its own.
    response = api.get("/v1/models", headers={"X-Request-ID": "a;b=c, <script>"})
    assert response.status_code == 200 and response.headers["x-request-id"] != "a;b=c, <script>"
    assert len(response.headers["x-request-id"]) == 32 and response.headers["x-request-id"].isalnum()


# The per-key cap -----------------------------------------------------------------------------------


def test_one_key_holds_at_most_its_cap_of_requests_in_flight(fuzzed: Fuzzed) -> None:
    """MAX_CONCURRENT_REQUESTS_PER_KEY=2: two long streams hold both of the key's slots; a third
    request gets 429 (OpenAI's shape, Retry-After) while another key is served; once the streams
    end, the key is served again."""
    capped = {"Authorization": f"Bearer {API_KEYS[1]}"}
    long_stream = {"model": "qwen", "messages": HELLO, "max_tokens": 4000, "ignore_eos": True, "stream": True}
    short = {"model": "qwen", "messages": HELLO, "max_tokens": 1}
    with contextlib.ExitStack() as streams:
        readers = []  # kept: a line iterator that is dropped closes its connection
        for _ in range(CAP):
            client = streams.enter_context(httpx.Client(base_url=fuzzed.url, headers=capped, timeout=120))
            response = streams.enter_context(client.stream("POST", "/v1/chat/completions", json=long_stream))
            assert response.status_code == 200
            readers.append(response.iter_lines())
            assert next(readers[-1]).startswith("data: ")  # generating, so in flight
        refused = httpx.post(f"{fuzzed.url}/v1/chat/completions", headers=capped, json=short, timeout=60)
        assert refused.status_code == 429, refused.text
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "rate_limit_exceeded" and refused.json()["error"]["type"] == "requests"
        other = httpx.post(f"{fuzzed.url}/v1/chat/completions", headers={"Authorization": f"Bearer {API_KEYS[0]}"}, json=short, timeout=60)
        assert other.status_code == 200, other.text
    deadline = time.monotonic() + 60  # the streams are closed: the adapter notices and frees the slots
    while (again := httpx.post(f"{fuzzed.url}/v1/chat/completions", headers=capped, json=short, timeout=60)).status_code == 429:
        assert time.monotonic() < deadline, "the slots were never freed"
        time.sleep(0.2)
    assert again.status_code == 200, again.text
    assert API_KEYS[1] not in fuzzed.log.read_text(errors="replace")
