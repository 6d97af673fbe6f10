"""Several Tritons behind one adapter: two replicas of the LLM upstream, one Triton for audio.

Three real `tritonserver` processes of this module's own on loopback: two LLM replicas and an
audio Triton. The adapter reaches the LLM replicas through one gRPC
channel that gRPC spreads (`round_robin` over an `ipv4:` list, with gRPC health checking), and the
audio models on its default upstream. qwen is loaded on the second replica by name through the
admin API; one LLM replica is killed during a run of 200 requests, then started again: it must show
as down, rejoin, get qwen loaded again and serve. The tests run in file order on one set of Tritons.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import tritonclient.grpc as grpcclient

from conftest import ADMIN_KEY, backend_regions, metric_value, remove_orphaned_engine_memory, triton_metrics
from passerelle_stack.launcher import Stack, StackConfig, free_port
from speech import SpeechSet

HELLO = [{"role": "user", "content": "Hello"}]
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
HANG_S = 60.0


@dataclass
class Replicas:
    adapter: str
    llm: list[Stack]
    audio: Stack


def _successes(stack: Stack) -> int:
    stats = httpx.get(f"{stack.triton_http}/v2/models/qwen/stats", timeout=30).json()
    return sum(int(entry["inference_stats"]["success"]["count"]) for entry in stats["model_stats"])


def _load(stack: Stack, model: str) -> None:
    with grpcclient.InferenceServerClient(stack.triton_grpc) as triton:
        triton.load_model(model, client_timeout=600)


def _generated(stack: Stack) -> float:
    """vLLM's count of generated tokens on this replica, from its Triton's metrics endpoint."""
    return metric_value(triton_metrics(stack), "vllm:generation_tokens_total")


def _qwen_loads(stack: Stack) -> int:
    """How many times this Triton has begun loading qwen, from its own log."""
    return (stack.config.run_dir / "tritonserver.log").read_text(errors="replace").count('"loading: qwen:1"')


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    """Three Tritons of this module's own: two LLM replicas (one is killed) and an audio Triton. Not
    the session's: with it as the audio Triton, it crashed (SIGSEGV, a boost lock_exception) twice
    when the LLM replica was killed, taking every later module down. qwen is loaded on the first
    replica only: the first test loads it on the second through the adapter."""
    llm = [Stack(StackConfig.on_free_ports(tmp_path_factory.mktemp(name))) for name in ("llm-a", "llm-b")]
    stack = Stack(StackConfig.on_free_ports(tmp_path_factory.mktemp("audio")))
    name = "replicas-adapter"
    try:
        for each in [stack, *llm]:
            each.prepare()
            each.start_triton()
        # One load at a time: on 2 cores, qwen's and pyannote's loads together took longer than in turn.
        _load(llm[0], "qwen")
        upstreams = {
            "llm": {"grpc": ",".join(replica.triton_grpc for replica in llm), "http": llm[0].triton_http, "models": ["qwen"]},
            # The audio Triton named twice: an upstream of several replicas, which gets audio over HTTP.
            "speech": {"grpc": f"{stack.triton_grpc},{stack.triton_grpc}", "http": stack.triton_http, "models": ["pyannote"]},
        }
        url = stack.start_adapter(
            name=name,
            port=free_port(),
            env={
                "TRITON_UPSTREAMS": json.dumps(upstreams),
                "OPENAI_API_KEYS": "",
                "ADMIN_API_KEY": ADMIN_KEY,
                "LAZY_LOAD_MODELS": "true",
                "MODEL_TTL_S": "",
                "STATUS_INTERVAL_S": "1",
                "DEFAULT_AUDIO_LANGUAGE": "en",
                "LOG_LEVEL": "INFO",
            },
        )
        yield Replicas(url, llm, stack)
    finally:
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda each: each.stop(), [*llm, stack]))


def _status(replicas: Replicas) -> dict[str, Any]:
    response = httpx.get(f"{replicas.adapter}/api/admin/status", headers=ADMIN, timeout=HANG_S)
    assert response.status_code == 200, response.text
    status: dict[str, Any] = response.json()
    return status


def _replica(status: dict[str, Any], address: str, upstream: str = "llm") -> dict[str, Any]:
    found: list[dict[str, Any]] = [
        replica for replica in status["replicas"] if replica["address"] == address and replica["upstream"] == upstream
    ]
    assert len(found) == 1, status["replicas"]
    return found[0]


def _wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout:.0f} s: {what}"
        time.sleep(0.5)


def test_load_on_one_named_replica(replicas: Replicas) -> None:
    """qwen is on the first replica only: requests that meet the second go to the first. Loaded on the
    second by name through the admin API, it is loaded there and nowhere else, and both serve."""
    have, target = replicas.llm
    assert _replica(_status(replicas), target.triton_grpc)["models"].get("qwen") != "READY"
    before = _successes(have)
    with httpx.Client(base_url=replicas.adapter, headers=ADMIN, timeout=HANG_S) as client:
        for _ in range(4):
            chat = client.post("/v1/chat/completions", json={"model": "qwen", "messages": HELLO, "max_tokens": 2})
            assert chat.status_code == 200, chat.text
        assert _successes(have) - before == 4
        unknown = client.post("/api/admin/models/qwen/load", json={"replica": "127.0.0.1:1"})
        assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "replica", unknown.text
        loads_there = _qwen_loads(have)
        started = time.monotonic()
        response = client.post("/api/admin/models/qwen/load", json={"replica": target.triton_grpc}, timeout=600)
        assert response.status_code == 200, response.text
        print(f"qwen loaded on the named replica in {time.monotonic() - started:.1f} s")
    _wait_for(lambda: _replica(_status(replicas), target.triton_grpc)["models"].get("qwen") == "READY", 30, "qwen ready there")
    assert _qwen_loads(have) == loads_there, "the replica that was not named loaded qwen again"
    assert _qwen_loads(target) == 1


def test_requests_spread_over_both_llm_replicas(replicas: Replicas) -> None:
    before = [_successes(stack) for stack in replicas.llm]
    with httpx.Client(base_url=replicas.adapter, timeout=HANG_S) as client:
        for _ in range(20):
            response = client.post("/v1/chat/completions", json={"model": "qwen", "messages": HELLO, "max_tokens": 2})
            assert response.status_code == 200, response.text
    served = [_successes(stack) - count for stack, count in zip(replicas.llm, before, strict=True)]
    print(f"20 requests served by the replicas: {served}")
    assert sum(served) == 20 and min(served) >= 5, served  # round_robin: about ten each

    status = _status(replicas)
    upstreams = {(replica["upstream"], replica["address"]) for replica in status["replicas"]}
    assert {("llm", stack.triton_grpc) for stack in replicas.llm} <= upstreams
    assert ("default", replicas.audio.triton_grpc) in upstreams
    for stack in replicas.llm:
        assert _replica(status, stack.triton_grpc)["models"] == {"qwen": "READY"}
    [card] = [card for card in httpx.get(f"{replicas.adapter}/v1/models", timeout=HANG_S).json()["data"] if card["id"] == "qwen"]
    assert card["state"] == "READY"
    assert sorted((item["address"], item["state"]) for item in card["replicas"]) == sorted((s.triton_grpc, "READY") for s in replicas.llm)


def test_audio_on_an_upstream_of_several_replicas_goes_over_http(replicas: Replicas, speech: SpeechSet) -> None:
    """Shared memory needs the one Triton of this host; with several replicas the PCM travels in the
    request over Triton's HTTP protocol, so no region is ever registered."""
    registered: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            regions = httpx.get(f"{replicas.audio.triton_http}/v2/systemsharedmemory/status", timeout=30).json()
            registered.extend(region["name"] for region in regions)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with speech.dialogue.open("rb") as audio:
            response = httpx.post(f"{replicas.adapter}/api/diarization/process", files={"file": ("a.wav", audio, "audio/wav")}, timeout=600)
    finally:
        stop.set()
        watcher.join()
    assert response.status_code == 200, response.text
    assert "segments" in response.json()
    assert registered == [], registered


@dataclass
class Outcome:
    started: float
    ended: float
    kind: str


def _stream(base: str, max_tokens: int = 8, on_event: Any = None) -> Outcome:
    """One streamed chat and how it ended. `on_event(count)` is called per event; when it returns
    true, the client leaves a stream that is still going ("still streaming")."""
    started = time.monotonic()
    body = {"model": "qwen", "messages": HELLO, "max_tokens": max_tokens, "ignore_eos": True, "stream": True}
    lines: list[str] = []
    left = False
    try:
        with httpx.Client(base_url=base, timeout=HANG_S) as client, client.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                response.read()
                return Outcome(started, time.monotonic(), f"refused {response.status_code}: {response.text[:200]}")
            for line in response.iter_lines():
                if line.startswith("data: "):
                    lines.append(line)
                    if on_event is not None and on_event(len(lines)):
                        left = True
                        break
    except httpx.TimeoutException:
        return Outcome(started, time.monotonic(), "hung")
    ended = time.monotonic()
    if left:
        errors = [line for line in lines if '"error"' in line]
        return Outcome(started, ended, f"error event before leaving: {errors[0][:200]}" if errors else "still streaming")
    if lines[-1:] != ["data: [DONE]"]:
        return Outcome(started, ended, f"cut without [DONE]: {lines[-2:]}")
    events = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    if "error" in events[-1]:
        return Outcome(started, ended, f"error event {events[-1]['error']['code']}")
    reasons = [choice["finish_reason"] for event in events for choice in event["choices"] if choice.get("finish_reason")]
    return Outcome(started, ended, "served" if reasons == ["length"] else f"finished {reasons}")


def test_a_replica_killed_under_load_then_back(replicas: Replicas) -> None:
    """Four long streams are running on the two LLM replicas; then 200 short streams, 8 at a time, and
    the replica whose long streams are furthest from their end is SIGKILLed once the first 8 have
    started. Every stream that starts after the kill is served; the long streams on the dead replica
    end with an error event, the others are still streaming 5 s after the kill (and are then left).
    The replica then shows down; started again, it gets qwen back from the adapter and serves."""
    killed_at: list[float] = []
    generated_before = [_generated(stack) for stack in replicas.llm]
    short_started = threading.Semaphore(0)
    long_running = [threading.Event() for _ in range(4)]

    def long(flag: threading.Event) -> Outcome:
        def seen(count: int) -> bool:
            if count >= 3:
                flag.set()
            return bool(killed_at) and time.monotonic() > killed_at[0] + 5

        return _stream(replicas.adapter, max_tokens=4000, on_event=seen)

    def short(_: int) -> Outcome:
        short_started.release()
        return _stream(replicas.adapter)

    def kill_after(count: int, victim: Stack) -> None:
        for _ in range(count):
            short_started.acquire()
        killed_at.append(time.monotonic())
        os.killpg(victim.processes["tritonserver"].pid, signal.SIGKILL)

    with ThreadPoolExecutor(4) as long_pool, ThreadPoolExecutor(8) as pool:
        longs = [long_pool.submit(long, flag) for flag in long_running]
        for flag in long_running:
            assert flag.wait(HANG_S), "a long stream never started"
        # The replicas do not progress evenly on 2 cores (one engine's long streams can be near their end
        # when the other's have just begun): kill the one that has generated less, so that its long
        # streams are surely still running.
        progress = [_generated(stack) - before for stack, before in zip(replicas.llm, generated_before, strict=True)]
        print(f"tokens generated by each replica when the long streams were running: {progress}")
        victim, survivor = (replicas.llm[0], replicas.llm[1]) if progress[0] < progress[1] else (replicas.llm[1], replicas.llm[0])
        regions = backend_regions(victim)
        killer = threading.Thread(target=kill_after, args=(8, victim))
        killer.start()
        outcomes = list(pool.map(short, range(200)))
        killer.join()
        long_outcomes = [future.result(timeout=600) for future in longs]
    victim.processes["tritonserver"].wait(timeout=HANG_S)
    victim.processes.pop("tritonserver")
    for region in regions:
        (Path("/dev/shm") / region).unlink(missing_ok=True)
    remove_orphaned_engine_memory()

    kill = killed_at[0]
    kinds: dict[str, int] = {}
    for outcome in outcomes:
        kinds[outcome.kind] = kinds.get(outcome.kind, 0) + 1
    print(f"outcomes of 200 short streams with a replica killed: {kinds}")
    print("long streams:", [(outcome.kind, round(outcome.ended - kill, 2)) for outcome in long_outcomes], "(ended, s after the kill)")
    after = [outcome for outcome in outcomes if outcome.started > kill + 0.5]
    assert len(after) > 50
    assert all(outcome.kind == "served" for outcome in after), [o.kind for o in after if o.kind != "served"][:5]
    during = [outcome for outcome in outcomes if outcome.started <= kill + 0.5]
    bad = [outcome.kind for outcome in during if outcome.kind not in ("served", "error event triton_unavailable")]
    assert not bad, bad[:5]
    cut = [outcome for outcome in long_outcomes if outcome.kind == "error event triton_unavailable"]
    assert cut, f"no long stream was on the killed replica: {[outcome.kind for outcome in long_outcomes]}"
    assert all(outcome.kind in ("still streaming", "served", "error event triton_unavailable") for outcome in long_outcomes), long_outcomes
    assert all(outcome.ended - kill < HANG_S for outcome in cut)

    _wait_for(lambda: not _replica(_status(replicas), victim.triton_grpc)["live"], 30, "the killed replica shows down")
    assert _replica(_status(replicas), survivor.triton_grpc)["models"] == {"qwen": "READY"}
    models = {card["id"]: card for card in httpx.get(f"{replicas.adapter}/v1/models", timeout=HANG_S).json()["data"]}
    assert {item["address"]: item["state"] for item in models["qwen"]["replicas"]}[victim.triton_grpc] == "DOWN"

    victim.start_triton()  # the same ports; Triton starts with no model loaded (explicit model control)
    back = time.monotonic()
    rejoined = lambda: _replica(_status(replicas), victim.triton_grpc)["models"].get("qwen") == "READY"  # noqa: E731
    _wait_for(rejoined, 600, "the adapter loads qwen on the replica")
    print(f"the replica rejoined with qwen loaded {time.monotonic() - back:.1f} s after it started")
    before = _successes(victim)
    with httpx.Client(base_url=replicas.adapter, timeout=HANG_S) as client:
        for _ in range(10):
            response = client.post("/v1/chat/completions", json={"model": "qwen", "messages": HELLO, "max_tokens": 2})
            assert response.status_code == 200, response.text
    assert _successes(victim) - before >= 2, "the replica that came back serves no request"


def test_unload_from_one_named_replica(replicas: Replicas) -> None:
    """The admin API acts on one replica when named: the other keeps the model, and requests that
    meet the replica without it go to the other."""
    target, other = replicas.llm[1], replicas.llm[0]
    with httpx.Client(base_url=replicas.adapter, headers=ADMIN, timeout=HANG_S) as client:
        unknown = client.post("/api/admin/models/qwen/unload", params={"replica": "127.0.0.1:1"})
        assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "unknown_replica", unknown.text
        response = client.post("/api/admin/models/qwen/unload", params={"replica": target.triton_grpc})
        assert response.status_code == 200, response.text
        _wait_for(lambda: _replica(_status(replicas), target.triton_grpc)["models"].get("qwen") != "READY", 30, "qwen unloaded there")
        assert _replica(_status(replicas), other.triton_grpc)["models"] == {"qwen": "READY"}
        before = _successes(other)
        for _ in range(6):
            chat = client.post("/v1/chat/completions", json={"model": "qwen", "messages": HELLO, "max_tokens": 2})
            assert chat.status_code == 200, chat.text
        assert _successes(other) - before == 6
