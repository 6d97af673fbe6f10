"""Hostile and malformed input that a review found mishandled: each case gets a clear 4xx in the
API's error shape, before any work, and leaves nothing behind (docs/security.md)."""

from __future__ import annotations

import io
import secrets
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from conftest import ADMIN_KEY, API_KEYS, metric_value
from passerelle_stack.launcher import Stack, free_port
from speech import SpeechSet

HELLO = [{"role": "user", "content": "hi"}]


def _chat(**fields: Any) -> dict[str, Any]:
    return {"model": "qwen", "messages": HELLO, "max_tokens": 1} | fields


# A JSON text with a lone surrogate escape: what json.dumps cannot write, so it is spelled out.
LONE = '"a\\ud800b"'


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "/v1/chat/completions",
            '{"model": "qwen", "max_tokens": 1, "messages": [{"role": "user", "content": $LONE}]}'.replace("$LONE", LONE),
        ),
        (
            "/v1/chat/completions",
            '{"model": "qwen", "max_tokens": 1, "messages": [{"role": "user", "content": [{"type": "text", "text": $LONE}]}]}'.replace(
                "$LONE", LONE
            ),
        ),
        (
            "/v1/chat/completions",
            '{"model": "qwen", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}], "stop": [$LONE]}'.replace("$LONE", LONE),
        ),
        ("/v1/chat/completions", '{"model": "qwen", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}], "user": "\\udc00"}'),
        ("/v1/completions", '{"model": "qwen", "max_tokens": 1, "prompt": $LONE}'.replace("$LONE", LONE)),
        ("/v1/responses", '{"model": "qwen", "max_output_tokens": 16, "input": $LONE}'.replace("$LONE", LONE)),
        ("/v1/responses", '{"model": "qwen", "max_output_tokens": 16, "input": "hi", "instructions": $LONE}'.replace("$LONE", LONE)),
    ],
    ids=["chat-content", "chat-part", "chat-stop", "chat-user", "completion-prompt", "responses-input", "responses-instructions"],
)
def test_lone_surrogate_escapes_get_400_not_500(http: httpx.Client, path: str, body: str, stack: Stack) -> None:
    log = stack.config.run_dir / "adapter.log"
    before = log.read_text(errors="replace").count("Exception in ASGI application")
    response = http.post(path, content=body.encode(), headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_unicode"
    assert log.read_text(errors="replace").count("Exception in ASGI application") == before


def test_an_escaped_surrogate_pair_is_text(http: httpx.Client) -> None:
    body = '{"model": "qwen", "max_tokens": 1, "messages": [{"role": "user", "content": "smile \\ud83d\\ude00"}]}'
    response = http.post("/v1/chat/completions", content=body.encode(), headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/chat/completions", _chat(stream="yes"), "stream"),
        ("/v1/chat/completions", _chat(stream=1), "stream"),
        ("/v1/chat/completions", _chat(max_tokens="5"), "max_tokens"),
        ("/v1/chat/completions", _chat(max_tokens=2.5), "max_tokens"),
        ("/v1/chat/completions", _chat(temperature="0.5"), "temperature"),
        ("/v1/chat/completions", _chat(logprobs="true"), "logprobs"),
        ("/v1/completions", {"model": "qwen", "prompt": "hi", "max_tokens": "1"}, "max_tokens"),
        ("/v1/responses", {"model": "qwen", "input": "hi", "stream": "true"}, "stream"),
    ],
)
def test_json_booleans_and_numbers_are_strict(http: httpx.Client, path: str, body: dict[str, Any], param: str) -> None:
    response = http.post(path, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_json_integers_are_numbers_where_a_float_is_wanted(http: httpx.Client) -> None:
    assert http.post("/v1/chat/completions", json=_chat(temperature=1, top_p=1)).status_code == 200


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"timestamps": "yes"}, "timestamps"),
        ({"timestamps": "1"}, "timestamps"),
        ({"diarization": "True"}, "diarization"),
        ({"num_speakers": "2.0"}, "num_speakers"),
        ({"num_speakers": "0x2"}, "num_speakers"),
        ({"num_speakers": " 2"}, "num_speakers"),
    ],
)
def test_form_booleans_are_true_or_false_and_numbers_decimal(http: httpx.Client, fields: dict[str, str], param: str) -> None:
    files = {"file": ("a.wav", b"RIFF", "audio/wav")}
    response = http.post("/api/audio/transcribe", data=fields, files=files)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_form_fields_that_follow_the_rules_are_parsed(http: httpx.Client) -> None:
    """Well-typed fields pass validation: the refusal is then about the (empty) file, not a field."""
    files = {"file": ("a.wav", b"", "audio/wav")}
    fields = {"timestamps": "true", "diarization": "true", "num_speakers": "2"}
    response = http.post("/api/audio/transcribe", data=fields, files=files)
    assert response.status_code == 400 and response.json()["error"]["code"] == "empty_file", response.text
    temperature = http.post("/v1/audio/transcriptions", data={"model": "canary", "temperature": "0.5"}, files=files)
    assert temperature.json()["error"]["code"] == "empty_file", temperature.text


def _raw_request(adapter_url: str, head: str, first_chunk: bytes = b"") -> tuple[int, float]:
    """Sends a request head (and maybe the start of its body), then reads the status line: the
    answer must come without the rest of the body ever being sent."""
    host, port = adapter_url.removeprefix("http://").split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head.encode() + first_chunk)
        status_line = sock.makefile("rb").readline().decode()
    return int(status_line.split()[1]), time.monotonic() - started


def test_an_unauthenticated_client_is_refused_before_its_body_is_read(adapter_url: str) -> None:
    for path, content_type in (
        ("/v1/chat/completions", "multipart/form-data; boundary=x"),
        ("/v1/chat/completions", "application/json"),
        ("/v1/audio/transcriptions", "multipart/form-data; boundary=x"),
        ("/api/admin/models/qwen/load", "application/json"),
    ):
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n"
        status, seconds = _raw_request(adapter_url, head, b"10000\r\n" + b"x" * 0x10000 + b"\r\n")
        assert status == 401, (path, status)
        assert seconds < 10


def test_the_route_chooses_the_body_limit_not_the_content_type(adapter_url: str) -> None:
    """A JSON route called with a multipart type keeps the JSON limit (4 MiB in the tests), where the
    1 GiB audio limit used to apply."""
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {API_KEYS[0]}\r\nContent-Type: multipart/form-data; boundary=x\r\n"
        f"Content-Length: {100 * 1024 * 1024}\r\n\r\n"
    )
    status, _ = _raw_request(adapter_url, head)
    assert status == 413
    chunked = head.replace(f"Content-Length: {100 * 1024 * 1024}", "Transfer-Encoding: chunked")
    host, port = adapter_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(chunked.encode())
        for _ in range(6):  # 6 MiB of a body that never ends: the refusal must come at the 4 MiB limit
            sock.sendall(b"100000\r\n" + b"x" * 0x100000 + b"\r\n")
        status_line = sock.makefile("rb").readline().decode()
    assert int(status_line.split()[1]) == 413


def test_random_paths_create_no_metric_series(http: httpx.Client, adapter_url: str) -> None:
    marker = secrets.token_hex(4)
    for index in range(40):
        http.get(f"/zz{marker}{index}/path")
        http.post(f"/v1zz{marker}{index}/x", json={})
    http.get("/v1/models").raise_for_status()
    text = httpx.get(f"{adapter_url}/metrics", timeout=30).text
    assert marker not in text
    assert metric_value(text, "passerelle_requests_in_flight", route="other") == 0
    assert 'passerelle_requests_in_flight{route="/v1/models"}' in text  # the app's own routes keep their label


def test_unknown_api_paths_get_404_in_the_error_shape(http: httpx.Client) -> None:
    for method, path in (("POST", "/v1/nothing"), ("GET", "/api/nothing"), ("POST", "/api/admin/models/..%2F..%2Fetc/load")):
        headers = {"Authorization": f"Bearer {ADMIN_KEY if '/admin/' in path else API_KEYS[0]}"}
        response = http.request(method, path, headers=headers)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["error"]["message"]


def test_health_shows_no_addresses(adapter_url: str, stack: Stack) -> None:
    body = httpx.get(f"{adapter_url}/health", timeout=30).text
    assert stack.triton_grpc.split(":")[-1] not in body and "127.0.0.1" not in body


def test_images_in_other_formats_never_reach_a_decoder(http: httpx.Client) -> None:
    import base64

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="TIFF")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    content = [{"type": "text", "text": "see"}, {"type": "image_url", "image_url": {"url": url}}]
    response = http.post("/v1/chat/completions", json=_chat(messages=[{"role": "user", "content": content}]))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_image" and "accepted format" in response.json()["error"]["message"]


@pytest.mark.parametrize("kind", ["hls", "ffconcat"])
def test_playlists_disguised_as_audio_open_nothing(http: httpx.Client, kind: str, tmp_path: Path) -> None:
    """ffprobe and ffmpeg may use only the accepted demuxers and read only the upload: an HLS
    playlist pointing at a listening socket, or a concat list naming a file, gets 400 and nothing is
    opened."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    secret = tmp_path / "secret.wav"
    secret.write_bytes(b"RIFF")
    if kind == "hls":
        body = f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nhttp://127.0.0.1:{port}/segment.ts\n#EXT-X-ENDLIST\n"
    else:
        body = f"ffconcat version 1.0\nfile '{secret}'\n"
    try:
        response = http.post("/v1/audio/transcriptions", data={"model": "canary"}, files={"file": ("a.mp3", body.encode(), "audio/mpeg")})
        assert response.status_code == 400 and response.json()["error"]["code"] == "unsupported_format", response.text
        with pytest.raises(TimeoutError):
            listener.accept()
    finally:
        listener.close()


def test_decoding_has_a_time_limit(stack: Stack, speech: SpeechSet) -> None:
    url = stack.start_adapter(name="adapter-decode-timeout", port=free_port(), env={"AUDIO_DECODE_TIMEOUT_S": "0.001"})
    try:
        files = {"file": ("a.wav", speech.dialogue.read_bytes(), "audio/wav")}
        headers = {"Authorization": f"Bearer {API_KEYS[0]}"}
        response = httpx.post(f"{url}/v1/audio/transcriptions", data={"model": "canary"}, files=files, headers=headers, timeout=60)
        assert response.status_code == 400, response.text
        assert "AUDIO_DECODE_TIMEOUT_S" in response.json()["error"]["message"]
    finally:
        stack.stop(names=["adapter-decode-timeout"])


# Image URLs that redirect, and data: URLs at the byte cap, on an adapter of their own ----------------

IMAGE_CAP = 4000  # MAX_IMAGE_BYTES there: 3k+1 bytes, so base64 padding matters at the cap


@pytest.fixture(scope="module")
def images_adapter(stack: Stack, request: pytest.FixtureRequest) -> str:
    """Image URLs allowed from 127.0.0.1 (its network allowlisted), 127.0.0.2 and 10.0.0.1 (hosts
    allowed, their networks not), and a small MAX_IMAGE_BYTES."""
    env = {
        "OPENAI_API_KEYS": "",
        "ALLOW_IMAGE_URLS": "true",
        "IMAGE_URL_ALLOWED_HOSTS": "127.0.0.1,127.0.0.2,10.0.0.1",
        "IMAGE_URL_ALLOWED_PRIVATE_NETWORKS": "127.0.0.1/32",
        "MAX_IMAGE_BYTES": str(IMAGE_CAP),
    }
    url = stack.start_adapter(name="adapter-images", port=free_port(), env=env)
    request.addfinalizer(lambda: stack.stop(names=["adapter-images"]))
    return url


def _image_host(host: str, routes: dict[str, tuple[int, dict[str, str], bytes]]) -> tuple[str, list[str], Any]:
    """A loopback HTTP server on `host` answering `routes` (path: status, headers, body); returns its
    URL, the paths it was asked for, and its stop function."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            hits.append(self.path)
            status, headers, body = routes.get(self.path, (404, {}, b""))
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer((host, 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return f"http://{host}:{server.server_address[1]}", hits, stop


def _image_chat(url: str) -> dict[str, Any]:
    return _chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}])


@pytest.mark.parametrize("target_host", ["127.0.0.2", "10.0.0.1"])
def test_a_redirect_from_an_allowed_host_to_a_private_address_is_refused(images_adapter: str, target_host: str) -> None:
    from conftest import png_bytes

    image = (200, {"Content-Type": "image/png"}, png_bytes(32, 32))
    target_url, target_hits, stop_target = _image_host("127.0.0.2", {"/image.png": image})
    if target_host == "10.0.0.1":
        target_url = "http://10.0.0.1"
    routes = {"/image.png": image, "/away": (302, {"Location": f"{target_url}/image.png"}, b"")}
    origin_url, origin_hits, stop_origin = _image_host("127.0.0.1", routes)
    try:
        with httpx.Client(base_url=images_adapter, timeout=120) as client:
            direct = client.post("/v1/chat/completions", json=_image_chat(f"{origin_url}/image.png"))
            assert direct.status_code == 200, direct.text  # the first host is allowed, and fetched
            if target_host == "127.0.0.2":
                assert httpx.get(f"{target_url}/image.png", timeout=10).status_code == 200  # the target would have answered
                target_hits.clear()
            redirected = client.post("/v1/chat/completions", json=_image_chat(f"{origin_url}/away"))
        assert redirected.status_code == 400, redirected.text
        error = redirected.json()["error"]
        assert error["code"] == "image_url_forbidden", error
        assert error["message"] == f"image host {target_host} resolves to a non-public address, which is refused"
        assert origin_hits == ["/image.png", "/away"]
        assert target_hits == [], "the redirect's private target was fetched"
    finally:
        stop_origin()
        stop_target()


def _png_of_size(size: int) -> bytes:
    """A valid PNG of exactly `size` bytes: a small image padded with a private ancillary chunk."""
    import struct
    import zlib

    from conftest import png_bytes

    base = png_bytes(16, 16)
    end = base.rindex(b"IEND") - 4  # the IEND chunk starts with its length
    padding = b"\0" * (size - len(base) - 12)
    chunk = struct.pack(">I", len(padding)) + b"paDd" + padding + struct.pack(">I", zlib.crc32(b"paDd" + padding))
    data = base[:end] + chunk + base[end:]
    assert len(data) == size
    return data


def test_data_url_images_are_held_to_max_image_bytes(images_adapter: str) -> None:
    """The decoded size decides: the cap's own size and one byte under pass, one byte over gets 413."""
    import base64

    def send(size: int) -> httpx.Response:
        url = "data:image/png;base64," + base64.b64encode(_png_of_size(size)).decode()
        return httpx.post(f"{images_adapter}/v1/chat/completions", json=_image_chat(url), timeout=120)

    over = send(IMAGE_CAP + 1)
    assert over.status_code == 413, over.text
    error = over.json()["error"]
    assert (error["code"], error["type"]) == ("image_too_large", "invalid_request_error"), error
    assert error["message"] == f"image is larger than {IMAGE_CAP} bytes"
    for size in (IMAGE_CAP - 1, IMAGE_CAP):
        accepted = send(size)
        assert accepted.status_code == 200, (size, accepted.text)
