"""Which upstream serves a model, how its replicas are named to gRPC, and when audio may use shared memory."""

from __future__ import annotations

import json

import pytest

from passerelle.core.config import Settings
from passerelle.triton.upstreams import DEFAULT_UPSTREAM, Tritons, _add_statistics, _resolve, balanced_target

UPSTREAMS = {
    "llm": {"grpc": "10.0.0.1:8001,10.0.0.2:8001", "http": "http://triton-llm:8000", "models": ["qwen"]},
    "speech": {"grpc": "127.0.0.1:9001", "http": "http://127.0.0.1:9000", "models": ["canary"]},
}


def test_a_list_of_replicas_becomes_one_ipv4_or_ipv6_target() -> None:
    assert balanced_target("10.0.0.1:8001, 10.0.0.2:8001") == "ipv4:10.0.0.1:8001,10.0.0.2:8001"
    assert balanced_target("[::1]:8001,[::2]:8001") == "ipv6:[::1]:8001,[::2]:8001"
    assert balanced_target("dns:///triton-llm.default.svc:8001") == "dns:///triton-llm.default.svc:8001"
    assert balanced_target("triton:8001") == "triton:8001"
    with pytest.raises(ValueError, match="dns:///"):
        balanced_target("triton-a:8001,triton-b:8001")
    with pytest.raises(ValueError, match="all IPv4 or all IPv6"):
        balanced_target("10.0.0.1:8001,[::1]:8001")


def test_replicas_of_a_list_and_of_a_dns_name() -> None:
    assert _resolve("ipv4:10.0.0.1:8001,10.0.0.2:8001") == ["10.0.0.1:8001", "10.0.0.2:8001"]
    assert _resolve("dns:///localhost:8001") and all(address.endswith(":8001") for address in _resolve("dns:///localhost:8001"))
    assert _resolve("dns:///name.invalid:8001") == []


async def test_each_model_goes_to_its_upstream_and_the_rest_to_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITON_UPSTREAMS", json.dumps(UPSTREAMS))
    monkeypatch.setenv("TRITON_GRPC_URL", "127.0.0.1:8001")
    monkeypatch.setenv("AUDIO_TRANSFER", "auto")
    tritons = Tritons(Settings(_env_file=None))  # type: ignore[call-arg]
    try:
        assert tritons.upstream("qwen").name == "llm" and tritons.upstream("qwen").several
        assert tritons.upstream("canary").name == "speech" and not tritons.upstream("canary").several
        assert tritons.upstream("pyannote").name == DEFAULT_UPSTREAM
        # Several replicas: audio cannot be one host's shared memory. One Triton on loopback: it can.
        assert not tritons.shares_memory("qwen")
        assert tritons.shares_memory("canary") and tritons.shares_memory("pyannote")
        assert sorted(await tritons.upstream("qwen").replicas()) == ["10.0.0.1:8001", "10.0.0.2:8001"]
    finally:
        await tritons.close()


def test_an_upstream_setting_is_checked() -> None:
    with pytest.raises(ValueError, match="models"):
        Settings(_env_file=None, triton_upstreams={"llm": {"grpc": "10.0.0.1:8001", "models": []}})  # type: ignore[call-arg,dict-item]
    with pytest.raises(ValueError, match="extra"):
        Settings(_env_file=None, triton_upstreams={"llm": {"grpc": "x:1", "models": ["qwen"], "weight": 2}})  # type: ignore[call-arg,dict-item]


def test_statistics_of_replicas_add_up() -> None:
    one = {"name": "qwen", "last_inference": 5, "inference_count": 2, "inference_stats": {"success": {"count": 2, "ns": 10}}}
    two = {"name": "qwen", "last_inference": 9, "inference_count": 3, "inference_stats": {"success": {"count": 3, "ns": 5}}}
    added = _add_statistics(one, two)
    assert added["last_inference"] == 9 and added["inference_count"] == 5
    assert added["inference_stats"]["success"] == {"count": 5, "ns": 15}
