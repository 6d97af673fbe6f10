"""Error mapping without a server: Triton's failures → the API's errors, in OpenAI's shape."""

from __future__ import annotations

import pytest
from tritonclient.utils import InferenceServerException

from passerelle.core.errors import ErrorResponse, FailureKind, InvalidRequest, TritonFailure, Unavailable, from_triton
from passerelle.triton.client import _from_client, classify

HOW = "Load it with POST /api/admin/models/qwen/load."


def mapped(kind: FailureKind, message: str = "boom") -> tuple[int, str | None, str, dict[str, str]]:
    error = from_triton(TritonFailure(kind, message), "qwen", retry_after_s=7, how_to_load=HOW)
    return error.status, error.code, error.message, error.headers


@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [
        (FailureKind.SERVER_UNAVAILABLE, 503, "triton_unavailable"),
        (FailureKind.MODEL_NOT_READY, 503, "model_unavailable"),
        (FailureKind.BAD_REQUEST, 400, "invalid_value"),
        (FailureKind.INTERNAL, 503, "model_error"),
        (FailureKind.CANCELLED, 503, "model_error"),
        (FailureKind.MODEL_CRASHED, 503, "model_crashed"),
    ],
)
def test_each_failure_kind_has_one_status_and_code(kind: FailureKind, status: int, code: str) -> None:
    got_status, got_code, _, headers = mapped(kind)
    assert (got_status, got_code) == (status, code)
    assert ("Retry-After" in headers) == (status == 503) and headers.get("Retry-After", "7") == "7"


def test_a_model_that_is_not_ready_says_how_to_load_it() -> None:
    _, _, message, _ = mapped(FailureKind.MODEL_NOT_READY)
    assert "'qwen' is not available" in message and HOW in message


def test_a_model_whose_process_died_says_to_reload_it() -> None:
    _, _, message, _ = mapped(FailureKind.MODEL_CRASHED, "Stub process 'qwen_0_0' is not healthy.")
    assert "'qwen' cannot serve: its process in Triton has died" in message and HOW in message and "qwen_0_0" not in message


def test_context_overflows_are_the_clients_fault_whatever_their_kind() -> None:
    for kind in (FailureKind.INTERNAL, FailureKind.BAD_REQUEST):
        status, code, _, _ = mapped(kind, "This model's maximum context length is 4096 tokens")
        assert (status, code) == (400, "context_length_exceeded")


@pytest.mark.parametrize(
    ("status", "message", "kind"),
    [
        ("StatusCode.UNAVAILABLE", "failed to connect to all addresses", FailureKind.SERVER_UNAVAILABLE),
        ("StatusCode.UNAVAILABLE", "Request for unknown model: 'qwen' is not found", FailureKind.MODEL_NOT_READY),
        ("StatusCode.INVALID_ARGUMENT", "unexpected inference input 'x'", FailureKind.BAD_REQUEST),
        ("StatusCode.INTERNAL", "Request for unknown model: 'qwen' has no available versions", FailureKind.MODEL_NOT_READY),
        ("StatusCode.CANCELLED", "request was cancelled", FailureKind.CANCELLED),
        ("StatusCode.INTERNAL", "CUDA out of memory", FailureKind.INTERNAL),
        # Triton 2.51's words, seen after the canary stub was killed (tests/test_faults.py)
        ("StatusCode.INTERNAL", "Stub process 'canary_0_0' is not healthy.", FailureKind.MODEL_CRASHED),
    ],
)
def test_tritonclient_errors_are_classified(status: str, message: str, kind: FailureKind) -> None:
    assert _from_client(InferenceServerException(message, status=status)).kind is kind


def test_classify_reads_the_message_alone() -> None:
    assert classify("model 'x' is not ready") is FailureKind.MODEL_NOT_READY
    assert classify("something else") is FailureKind.INTERNAL


def test_every_error_has_openais_shape() -> None:
    body = InvalidRequest("bad", param="messages", code="invalid_value").body()
    assert body == {"error": {"message": "bad", "type": "invalid_request_error", "param": "messages", "code": "invalid_value"}}
    unavailable = Unavailable("later", retry_after_s=3)
    assert unavailable.status == 503 and unavailable.headers == {"Retry-After": "3"}
    assert unavailable.body()["error"]["type"] == "service_unavailable"
    response = ErrorResponse.of("gone", type="invalid_request_error", code="x").json_response(409, extra_field=1)
    assert response.status_code == 409 and b'"extra_field":1' in response.body


def test_clients_read_triton_failures_in_words_and_the_log_gets_the_detail(caplog: pytest.LogCaptureFixture) -> None:
    detail = "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:8001: Connection refused"
    _, _, message, _ = mapped(FailureKind.SERVER_UNAVAILABLE, detail)
    assert message == "Triton Inference Server is unavailable; retry later."
    crash = 'Traceback (most recent call last):\n  File "/root/.cache/passerelle/envs/triton/model.py", line 9\nRuntimeError: CUDA error'
    with caplog.at_level("ERROR", logger="passerelle.errors"):
        _, code, message, _ = mapped(FailureKind.INTERNAL, crash)
    assert code == "model_error" and "Traceback" not in message and "/root" not in message and "request id" in message
    assert "CUDA error" in caplog.text


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("unexpected inference input 'x'", "unexpected inference input 'x'"),
        ("bad language 'xx'\nTraceback (most recent call last):\n  File \"/opt/m/model.py\", line 3", "bad language 'xx'"),
        ('Traceback (most recent call last):\n  File "/a/b/c.py", line 1\nValueError: boom', "ValueError: boom"),
        ("cannot open /root/.cache/passerelle/models/qwen/config.json", "cannot open config.json"),
        ("upstream 10.0.0.7:8001 refused", "upstream (address) refused"),
        ("x" * 1000, "x" * 400 + "…"),
    ],
)
def test_refusals_are_shown_in_words(raw: str, shown: str) -> None:
    _, _, message, _ = mapped(FailureKind.BAD_REQUEST, raw)
    assert message == f"The model refused the request: {shown}"
