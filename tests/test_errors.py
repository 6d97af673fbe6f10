"""Bad input answers a 4xx in OpenAI's error shape, naming what is wrong; never a 500 or a hang."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from conftest import API_KEYS, CORS_ORIGIN, ImageServer, png_bytes

HELLO = [{"role": "user", "content": "Hello"}]


WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "qwen", "messages": HELLO, "max_tokens": 2} | fields


def image_message(url: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "text", "text": "see"}, {"type": "image_url", "image_url": {"url": url}}]}]


def b64_png(width: int, height: int) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(width, height)).decode()


def gif_bomb_header() -> str:
    """A GIF whose header claims 20000x20000 pixels: refused from its header, before any decoding."""
    buffer = io.BytesIO()
    Image.new("P", (1, 1)).save(buffer, format="GIF")
    data = bytearray(buffer.getvalue())
    data[6:10] = (20000).to_bytes(2, "little") * 2
    return "data:image/gif;base64," + base64.b64encode(bytes(data)).decode()


CHAT_CASES: list[tuple[str, dict[str, Any], int, str, str | None]] = [
    # id, body, status, code, param
    ("no-messages", {"model": "qwen"}, 400, "invalid_value", "messages"),
    ("empty-messages", chat(messages=[]), 400, "invalid_value", "messages"),
    ("no-model", {"messages": HELLO}, 400, "invalid_value", "model"),
    ("bad-role", chat(messages=[{"role": "wizard", "content": "hi"}]), 400, "invalid_value", None),
    ("unknown-field", chat(frobnicate=True), 400, "invalid_value", "frobnicate"),
    ("temperature-high", chat(temperature=3), 400, "invalid_value", "temperature"),
    ("top-p-zero", chat(top_p=0), 400, "invalid_value", "top_p"),
    ("max-tokens-zero", chat(max_tokens=0), 400, "invalid_value", "max_tokens"),
    ("max-tokens-string", chat(max_tokens="lots"), 400, "invalid_value", "max_tokens"),
    ("n-too-big", chat(n=100), 400, "invalid_value", "n"),
    ("presence-penalty", chat(presence_penalty=5), 400, "invalid_value", "presence_penalty"),
    ("too-many-stops", chat(stop=["a", "b", "c", "d", "e"]), 400, "invalid_value", "stop"),
    ("top-logprobs-without-logprobs", chat(top_logprobs=2), 400, "invalid_value", "top_logprobs"),
    ("top-logprobs-too-many", chat(logprobs=True, top_logprobs=50), 400, "invalid_value", "top_logprobs"),
    (
        "tool-without-a-name",
        chat(tools=[{"type": "function", "function": {"parameters": {}}}]),
        400,
        "invalid_value",
        "tools.0.function.name",
    ),
    (
        "tool-schema-not-json-schema",
        chat(tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "nonsense"}}}]),
        400,
        "invalid_json_schema",
        "tools[0].function.parameters",
    ),
    (
        "named-tool-not-given",
        chat(tools=[WEATHER_TOOL], tool_choice={"type": "function", "function": {"name": "get_time"}}),
        400,
        "invalid_value",
        "tool_choice.function.name",
    ),
    ("tool-choice-without-tools", chat(tool_choice="required"), 400, "invalid_value", "tool_choice"),
    (
        "tool-message-without-a-call",
        chat(messages=[{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "call_9", "content": "18 C"}]),
        400,
        "invalid_value",
        "messages[1].tool_call_id",
    ),
    (
        "tool-call-arguments-not-json",
        chat(
            messages=[
                {"role": "user", "content": "hi"},
                {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{x"}}]},
            ]
        ),
        400,
        "invalid_value",
        "messages[1].tool_calls[0].function.arguments",
    ),
    (
        "required-tool-with-response-format",
        chat(tools=[WEATHER_TOOL], tool_choice="required", response_format={"type": "json_object"}),
        400,
        "invalid_value",
        "response_format",
    ),
    (
        "system-after-the-first-message",
        chat(messages=[{"role": "user", "content": "hi"}, {"role": "system", "content": "be brief"}]),
        400,
        "invalid_value",
        "messages[1].role",
    ),
    ("response-format-unknown", chat(response_format={"type": "yaml"}), 400, "invalid_value", "response_format.type"),
    (
        "json-schema-missing",
        chat(response_format={"type": "json_schema", "json_schema": {"name": "x"}}),
        400,
        "missing_required_parameter",
        "response_format.json_schema.schema",
    ),
    (
        "json-schema-invalid",
        chat(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}),
        400,
        "invalid_json_schema",
        "response_format.json_schema.schema",
    ),
    (
        "json-schema-bad-name",
        chat(response_format={"type": "json_schema", "json_schema": {"name": "no spaces allowed", "schema": {}}}),
        400,
        "invalid_value",
        "response_format.json_schema.name",
    ),
    ("regex-invalid", chat(structured_outputs={"regex": "(unclosed"}), 400, "invalid_regex", "structured_outputs.regex"),
    (
        "two-constraints",
        chat(response_format={"type": "json_object"}, structured_outputs={"choice": ["a", "b"]}),
        400,
        "invalid_value",
        "structured_outputs",
    ),
    ("constraint-options-only", chat(structured_outputs={"disable_any_whitespace": True}), 400, "invalid_value", "structured_outputs"),
    ("choice-empty", chat(structured_outputs={"choice": []}), 400, "invalid_value", "structured_outputs.choice"),
    ("logit-bias", chat(logit_bias={"50256": -100}), 400, "unsupported_parameter", "logit_bias"),
    ("audio-output", chat(modalities=["text", "audio"]), 400, "unsupported_parameter", "modalities"),
    (
        "audio-part",
        chat(messages=[{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}]),
        400,
        "unsupported_content",
        "messages[0].content[0]",
    ),
    ("unknown-part", chat(messages=[{"role": "user", "content": [{"type": "hologram"}]}]), 400, "invalid_value", None),
    ("stream-options-without-stream", chat(stream_options={"include_usage": True}), 400, "invalid_value", "stream_options"),
    ("context-exceeded", chat(max_tokens=5000), 400, "context_length_exceeded", "max_tokens"),
    (
        "image-not-base64",
        chat(messages=image_message("data:image/png;base64,@@@")),
        400,
        "invalid_image",
        "messages[0].content[1].image_url.url",
    ),
    (
        "image-not-an-image",
        chat(messages=image_message("data:image/png;base64," + base64.b64encode(b"plain text").decode())),
        400,
        "invalid_image",
        None,
    ),
    ("image-too-many-pixels", chat(messages=image_message(b64_png(2048, 1024))), 400, "image_too_large", None),
    ("image-header-bomb", chat(messages=image_message(gif_bomb_header())), 400, "image_too_large", None),
    ("image-ftp-url", chat(messages=image_message("ftp://example.com/a.png")), 400, "invalid_image_url", None),
    ("image-host-not-allowlisted", chat(messages=image_message("http://198.51.100.7/a.png")), 400, "image_url_forbidden", None),
    (
        "too-many-images",
        chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": b64_png(32, 32)}}] * 5}]),
        400,
        "too_many_images",
        None,
    ),
    (
        "image-in-system",
        chat(messages=[{"role": "system", "content": [{"type": "image_url", "image_url": {"url": b64_png(32, 32)}}]}, *HELLO]),
        400,
        "invalid_value",
        None,
    ),
    ("unknown-model", chat(model="no-such-model"), 404, "model_not_found", "model"),
]


@pytest.mark.parametrize(("body", "status", "code", "param"), [case[1:] for case in CHAT_CASES], ids=[case[0] for case in CHAT_CASES])
def test_bad_chat_requests(http: httpx.Client, body: dict[str, Any], status: int, code: str, param: str | None) -> None:
    response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["message"]
    assert error["code"] == code
    if param is not None:
        assert error["param"] == param


COMPLETION_CASES = [
    ("token-prompt", {"model": "qwen", "prompt": [1, 2, 3]}, "unsupported_parameter", "prompt"),
    ("suffix", {"model": "qwen", "prompt": "a", "suffix": "b"}, "unsupported_parameter", "suffix"),
    ("best-of", {"model": "qwen", "prompt": "a", "best_of": 3}, "unsupported_parameter", "best_of"),
    ("echo-logprobs", {"model": "qwen", "prompt": "a", "echo": True, "logprobs": 1}, "unsupported_parameter", "echo"),
    ("logprobs-too-many", {"model": "qwen", "prompt": "a", "logprobs": 9}, "invalid_value", "logprobs"),
    ("empty-prompt-list", {"model": "qwen", "prompt": []}, "invalid_value", "prompt"),
]


@pytest.mark.parametrize(("body", "code", "param"), [case[1:] for case in COMPLETION_CASES], ids=[case[0] for case in COMPLETION_CASES])
def test_bad_completion_requests(http: httpx.Client, body: dict[str, Any], code: str, param: str) -> None:
    response = http.post("/v1/completions", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == code and response.json()["error"]["param"] == param


def test_malformed_json(http: httpx.Client) -> None:
    response = http.post("/v1/chat/completions", content=b'{"model": "qwen", "messages": [', headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_body_too_large(http: httpx.Client) -> None:
    huge = "x" * (5 * 1024 * 1024)
    response = http.post("/v1/chat/completions", json=chat(messages=[{"role": "user", "content": huge}]))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_body_too_large_without_content_length(http: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "qwen", "messages": [{"role": "user", "content": "'
        for _ in range(5):
            yield b"y" * (1024 * 1024)
        yield b'"}]}'

    response = http.post("/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_image_url_too_large_and_bad_redirect(http: httpx.Client, image_server: ImageServer) -> None:
    too_big = http.post("/v1/chat/completions", json=chat(messages=image_message(image_server.url + "/huge.png")))
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "image_too_large"
    away = http.post("/v1/chat/completions", json=chat(messages=image_message(image_server.url + "/redirect-away")))
    assert away.status_code == 400 and "localhost.invalid" in away.json()["error"]["message"]
    missing = http.post("/v1/chat/completions", json=chat(messages=image_message(image_server.url + "/missing.png")))
    assert missing.status_code == 400 and "404" in missing.json()["error"]["message"]


def test_authentication(adapter_url: str) -> None:
    with httpx.Client(base_url=adapter_url, timeout=30) as anonymous:
        missing = anonymous.get("/v1/models")
        assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_api_key"
        wrong = anonymous.get("/v1/models", headers={"Authorization": "Bearer not-a-key"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        for key in API_KEYS:
            assert anonymous.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        assert anonymous.get("/health").status_code == 200  # liveness needs no key


def test_cors_follows_the_configured_origin(adapter_url: str) -> None:
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}
    with httpx.Client(base_url=adapter_url, timeout=30) as browser:
        allowed = browser.options("/v1/chat/completions", headers={"Origin": CORS_ORIGIN, **preflight})
        assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == CORS_ORIGIN
        denied = browser.options("/v1/chat/completions", headers={"Origin": "http://evil.example", **preflight})
        assert "access-control-allow-origin" not in denied.headers


def test_request_id_is_echoed(http: httpx.Client) -> None:
    response = http.get("/v1/models", headers={"X-Request-ID": "trace-123"})
    assert response.headers["x-request-id"] == "trace-123"
    generated = http.get("/v1/models", headers={"X-Request-ID": "bad id with spaces"})
    assert generated.headers["x-request-id"] != "bad id with spaces" and len(generated.headers["x-request-id"]) == 32


def test_health(http: httpx.Client) -> None:
    body = http.get("/health").json()
    assert body["status"] == "ok" and body["adapter"]["live"] and body["triton"]["ready"]
