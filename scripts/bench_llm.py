#!/usr/bin/env python3
"""Streaming chat load on the CPU profile's tiny Qwen3-VL-MoE, three ways, in one process.

A  direct Triton: `qwen` over tritonclient.grpc.aio `stream_infer`, with the prompt rendered by the
   adapter's own chat-template renderer and the inputs the adapter sends (stream, exclude_input_in_output).
B  through the adapter: the same requests via the OpenAI async SDK, streamed (OpenAI API -> gRPC -> vLLM).
C  vLLM's own OpenAI server (`vllm.entrypoints.openai.api_server`) with the engine arguments of the rendered
   model.json, started after the Triton stack is stopped so the two never share the machine.

Every request asks for exactly --max-tokens tokens (ignore_eos, temperature 0); one that returns another
count is an error. Per request: latency (send -> last byte) and time to first token (first non-empty
text); per phase: output tokens / phase wall time. All processes listen on loopback and are stopped (process
group, then their session is checked for leftovers) whatever happens; the exit code is 1 if any request failed.
Other Triton servers, vLLM engines or pytest runs seen on the box around a phase are reported: they pollute it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import openai
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from openai.types.chat import ChatCompletionMessageParam

from passerelle.core.catalog import PromptRenderer
from passerelle_stack.launcher import Stack, StackConfig, _wait_http

MODEL = "qwen"
SWITCHES = ("stream", "exclude_input_in_output", "return_finish_reason", "return_num_input_tokens", "return_num_output_tokens")
API_KEY = "bench"
FILLER = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "wise", "owls", "count", "stars"]


@dataclass
class Sample:
    latency: float
    ttft: float | None
    tokens: int


@dataclass
class Phase:
    name: str
    wall: float = 0.0
    load1: float = field(default_factory=lambda: os.getloadavg()[0])
    samples: list[Sample] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    others: list[str] = field(default_factory=list)  # other stacks or test runs seen on the box around the phase

    def pct(self, attribute: str, q: float) -> float | None:
        values = [getattr(s, attribute) for s in self.samples if getattr(s, attribute) is not None]
        return float(np.percentile(values, q)) if values else None

    @property
    def tokens_per_s(self) -> float | None:
        return sum(s.tokens for s in self.samples) / self.wall if self.samples and self.wall else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def filler(renderer: PromptRenderer, prompt_tokens: int) -> str:
    """A user text whose rendered ChatML prompt (with a `[A-0] ` tag in front) has about `prompt_tokens` tokens."""
    words: list[str] = []
    while len(words) < 20 * prompt_tokens:
        text = "[A-0] " + " ".join(words)
        if renderer.count_tokens(renderer.render_chat(chat(text, parts=True))) >= prompt_tokens:
            break
        words.append(FILLER[len(words) % len(FILLER)])
    return " ".join(words)


def chat(text: str, parts: bool = False) -> list[dict[str, Any]]:
    """One user message; the adapter turns string content into text parts before rendering, so does `parts`."""
    return [{"role": "user", "content": [{"type": "text", "text": text}] if parts else text}]


async def run_load(one: Callable[[int], Awaitable[Sample]], name: str, requests: int, concurrency: int, limit_s: float) -> Phase:
    """`requests` calls of `one(index)`, at most `concurrency` in flight, each bounded by `limit_s` seconds."""
    phase, gate = Phase(name), asyncio.Semaphore(concurrency)

    async def guarded(index: int) -> None:
        async with gate:
            try:
                async with asyncio.timeout(limit_s):
                    phase.samples.append(await one(index))
            except Exception as exc:  # noqa: BLE001 - every failure is counted and reported
                phase.errors.append(f"request {index}: {type(exc).__name__}: {exc}"[:300])

    started = time.perf_counter()
    await asyncio.gather(*(guarded(i) for i in range(requests)))
    phase.wall = time.perf_counter() - started
    return phase


def _tensor(name: str, value: str | bool) -> grpcclient.InferInput:
    if isinstance(value, bool):
        tensor, array = grpcclient.InferInput(name, [1], "BOOL"), np.array([value], dtype=bool)
    else:
        tensor, array = grpcclient.InferInput(name, [1], "BYTES"), np.array([value.encode()], dtype=np.object_)
    tensor.set_data_from_numpy(array)
    return tensor


def check_tokens(sample: Sample, expected: int) -> Sample:
    if sample.tokens != expected:
        raise RuntimeError(f"expected {expected} output tokens, got {sample.tokens}")
    return sample


async def triton_request(client: aioclient.InferenceServerClient, prompt: str, max_tokens: int) -> Sample:
    """One streamed request, as the adapter sends it (passerelle.triton.client.build_inputs)."""
    sampling = {"max_tokens": max_tokens, "ignore_eos": True, "temperature": 0}
    inputs = [_tensor("text_input", prompt), _tensor("sampling_parameters", json.dumps(sampling))]
    inputs += [_tensor(name, True) for name in SWITCHES]
    outputs = [grpcclient.InferRequestedOutput(n) for n in ("text_output", "finish_reason", "num_input_tokens", "num_output_tokens")]
    done = asyncio.Event()

    async def requests() -> AsyncIterator[dict[str, Any]]:  # the stream stays open until the final response
        yield {"model_name": MODEL, "inputs": inputs, "outputs": outputs, "request_id": uuid.uuid4().hex}
        await done.wait()

    started, ttft, tokens, finished = time.perf_counter(), None, 0, False
    responses = client.stream_infer(requests())
    try:
        async for result, error in responses:
            if error is not None:
                raise RuntimeError(error.message())
            if ttft is None and any(result.as_numpy("text_output")):
                ttft = time.perf_counter() - started
            tokens += int(result.as_numpy("num_output_tokens").sum())
            if result.as_numpy("finish_reason")[0].decode() not in ("", "None"):
                finished = True
                return check_tokens(Sample(time.perf_counter() - started, ttft, tokens), max_tokens)
        raise RuntimeError("stream closed before the final response")
    finally:
        done.set()
        if not finished:
            responses.cancel()


async def openai_request(client: openai.AsyncOpenAI, messages: list[ChatCompletionMessageParam], max_tokens: int) -> Sample:
    started, ttft, tokens = time.perf_counter(), None, None
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=messages,
        stream=True,
        max_tokens=max_tokens,
        temperature=0,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    async for chunk in stream:
        if ttft is None and any(choice.delta.content for choice in chunk.choices):
            ttft = time.perf_counter() - started
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    if tokens is None:
        raise RuntimeError("no usage chunk")
    return check_tokens(Sample(time.perf_counter() - started, ttft, tokens), max_tokens)


async def warm_then_measure(
    args: argparse.Namespace, name: str, body: str, one: Callable[[Any], Awaitable[Sample]], prepare: Callable[[str], Any]
) -> Phase:
    """Unmeasured warm-up, then the measured run; payloads are built before the clock starts. Each phase (and
    warm-up) has its own tag in front of the text, so that none reuses another's cached prefixes."""
    warm = [prepare(f"[w{name[0]}-{i}] {body}") for i in range(args.warmup)]
    texts = [prepare(f"[{name[0]}-{i}] {body}") for i in range(args.requests)]
    warmed = await run_load(lambda i: one(warm[i]), "warm-up", args.warmup, args.concurrency, args.request_timeout)
    if warmed.errors:
        raise RuntimeError(f"{name}: warm-up failed: {warmed.errors[0]}")
    phase = await run_load(lambda i: one(texts[i]), name, args.requests, args.concurrency, args.request_timeout)
    print(f"phase {name} done in {phase.wall:.1f} s", flush=True)
    return phase


def run_phase(args: argparse.Namespace, name: str, body: str, target: str, renderer: PromptRenderer | None = None) -> Phase:
    """With `renderer`: direct Triton (`target` is its gRPC address, prompts rendered here); else OpenAI (`target` a base URL)."""

    async def main() -> Phase:
        client: Any
        one: Callable[[Any], Awaitable[Sample]]
        prepare: Callable[[str], Any]
        if renderer is None:
            client = openai.AsyncOpenAI(base_url=f"{target}/v1", api_key=API_KEY, max_retries=0, timeout=args.request_timeout)
            one, prepare = (lambda messages: openai_request(client, messages, args.max_tokens)), chat
        else:
            client = aioclient.InferenceServerClient(target)
            one, prepare = (
                (lambda prompt: triton_request(client, prompt, args.max_tokens)),
                (lambda text: renderer.render_chat(chat(text, True))),
            )
        try:
            return await warm_then_measure(args, name, body, one, prepare)
        finally:
            await client.close()

    return asyncio.run(main())


def reap_sessions(session_ids: list[int]) -> list[str]:
    """SIGKILL and return what still runs in the sessions of processes we started (vLLM's EngineCore included).

    Zombies are left out: they are dead, and wait only for this box's init to reap them."""
    found = []
    for sid in session_ids:
        listed = subprocess.run(["ps", "-s", str(sid), "-o", "pid=,stat=,args="], capture_output=True, text=True, check=False)
        for line in listed.stdout.splitlines():
            fields = line.split(None, 2)
            if len(fields) >= 2 and not fields[1].startswith("Z"):
                found.append(line.strip())
        subprocess.run(["pkill", "-KILL", "-s", str(sid)], check=False)
    return found


def engine_flags(engine: dict[str, Any]) -> list[str]:
    """model.json engine arguments -> api_server flags (`kv_cache_memory_bytes` -> `--kv-cache-memory-bytes`)."""
    flags = []
    for key, value in engine.items():
        if key in ("model", "served_model_name"):
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            flags += [flag] if value else []  # False is vLLM's default for these store-true flags
        else:
            flags += [flag, json.dumps(value) if isinstance(value, dict | list) else str(value)]
    return flags


def start_vllm_server(stack: Stack, engine: dict[str, Any], port: int) -> tuple[subprocess.Popen[bytes], Path]:
    """vLLM's OpenAI server in its own session, with Triton's environment and the model.json engine arguments."""
    command = [str(stack.env_dir / "bin" / "python"), "-m", "vllm.entrypoints.openai.api_server", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--model", engine["model"], "--served-model-name", MODEL, *engine_flags(engine)]
    print("  $", shlex.join(command[1:]), flush=True)
    log_path, env, cwd = stack.config.run_dir / "vllm-server.log", stack.triton_environment(stack.env_dir), stack.config.run_dir
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return process, log_path


def foreign_processes(own_sessions: list[int]) -> list[str]:
    """Triton servers, vLLM engines and pytest runs that are not ours: they would pollute the figures."""
    listed = subprocess.run(["ps", "-eo", "pid=,sid=,args="], capture_output=True, text=True, check=False).stdout
    found = []
    for line in listed.splitlines():
        pid, sid, command = [*line.split(None, 2), "", ""][:3]
        if sid.isdigit() and int(sid) not in own_sessions and any(mark in command for mark in ("tritonserver", "EngineCore", "pytest")):
            found.append(f"{pid} {command[:100]}")
    return found


def measured(own_sessions: list[int], *phase_args: Any) -> Phase:
    before = foreign_processes(own_sessions)
    phase = run_phase(*phase_args)
    phase.others = sorted(set(before) | set(foreign_processes(own_sessions)))
    return phase


def stop_process(process: subprocess.Popen[bytes]) -> list[str]:
    """SIGTERM the process group, SIGKILL what remains; return the leftovers found (then killed)."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=wait)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    return reap_sessions([process.pid])


def stop_stack(stack: Stack) -> list[str]:
    sessions = [process.pid for process in stack.processes.values()]
    stack.stop()
    return reap_sessions(sessions)


def _proc_field(path: str, key: str, default: str) -> str:
    return next((line.split(":", 1)[1].strip() for line in Path(path).read_text().splitlines() if line.startswith(key)), default)


def machine_facts() -> list[str]:
    cpu, memory = _proc_field("/proc/cpuinfo", "model name", "unknown"), _proc_field("/proc/meminfo", "MemTotal", "0 kB").split()[0]
    return [
        f"nproc {len(os.sched_getaffinity(0))}, CPU {cpu}, memory {int(memory) / 2**20:.1f} GiB",
        "load average at start: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()),
    ]


def fmt(value: float | None, scale: float = 1000.0, unit: str = "") -> str:
    return "-" if value is None else f"{value * scale:.0f}{unit}" if scale != 1 else f"{value:.1f}{unit}"


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a is not None and b else "-"


def report(args: argparse.Namespace, facts: list[str], phases: list[Phase]) -> None:
    print(
        f"\n== bench_llm: {args.requests} requests, concurrency {args.concurrency}, {args.max_tokens} output tokens, "
        f"~{args.prompt_tokens} prompt tokens, streaming, greedy, ignore_eos =="
    )
    for fact in facts:
        print(f"machine: {fact}")
    print(
        "NOTE: on this small box the engine, Triton, the adapter and this load generator share the same cores,\n"
        "      so every figure measures the whole machine, not one component."
    )
    header = ("ok", 5), ("err", 5), ("lat p50", 10), ("lat p99", 10), ("ttft p50", 10), ("ttft p99", 10), ("tok/s", 9), ("wall s", 8)
    print(f"\n{'phase':<24}" + "".join(f"{title:>{width}}" for title, width in header) + f"{'load1':>7}")
    for p in phases:
        timings = [fmt(p.pct(what, q), unit="ms") for what in ("latency", "ttft") for q in (50, 99)]
        cells = [str(len(p.samples)), str(len(p.errors)), *timings, fmt(p.tokens_per_s, 1), f"{p.wall:.1f}"]
        print(f"{p.name:<24}" + "".join(f"{cell:>{width}}" for cell, (_, width) in zip(cells, header, strict=True)) + f"{p.load1:>7.2f}")
    by_key = {p.name[0]: p for p in phases}
    a, b, c = by_key.get("A"), by_key.get("B"), by_key.get("C")
    if a and b:
        print(
            f"\nadapter vs direct Triton:  latency p50 {ratio(b.pct('latency', 50), a.pct('latency', 50))}, "
            f"TTFT p50 {ratio(b.pct('ttft', 50), a.pct('ttft', 50))}, tokens/s {ratio(b.tokens_per_s, a.tokens_per_s)}"
        )
    if b and c:
        print(
            f"our stack vs vLLM server:  tokens/s {ratio(b.tokens_per_s, c.tokens_per_s)}, "
            f"latency p50 {ratio(b.pct('latency', 50), c.pct('latency', 50))}, TTFT p50 {ratio(b.pct('ttft', 50), c.pct('ttft', 50))}"
        )
    for p in phases:
        for error in p.errors[:5]:
            print(f"error [{p.name}] {error}")
        for other in p.others:
            print(f"WARNING [{p.name}] not ours, running around this phase (figures polluted): {other}")
    if not any(p.others for p in phases):
        print("no other Triton server, vLLM engine or pytest run was seen on the box around the phases")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    parser.add_argument("--requests", type=int, default=64, help="measured requests per phase (default 64)")
    parser.add_argument("--max-tokens", type=int, default=32, help="output tokens per request (default 32)")
    parser.add_argument("--prompt-tokens", type=int, default=64, help="approximate rendered prompt length (default 64)")
    parser.add_argument("--warmup", type=int, default=None, help="unmeasured requests per phase (default: concurrency, at most 16)")
    parser.add_argument("--skip-vllm", action="store_true", help="skip phase C (vLLM's own OpenAI server)")
    parser.add_argument("--request-timeout", type=float, default=120.0, help="seconds per request (default 120)")
    parser.add_argument("--time-limit", type=int, default=1200, help="abort the whole run after this many seconds (default 1200)")
    args = parser.parse_args()
    if min(args.concurrency, args.requests, args.max_tokens, args.prompt_tokens) < 1:
        parser.error("--concurrency, --requests, --max-tokens and --prompt-tokens must be positive")
    args.warmup = min(args.concurrency, 16) if args.warmup is None else args.warmup
    return args


def on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(f"bench_llm: stopped by signal {signum} (time limit or SIGTERM); cleaning up")


def main() -> int:
    args = parse_args()
    facts = machine_facts()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGALRM, on_signal)
    signal.alarm(args.time_limit)
    run_dir = Path(tempfile.mkdtemp(prefix="bench_llm-"))
    # The four ports by name (not a **dict of them) so that StackConfig's fields are type-checked.
    http_port, grpc_port, metrics_port, adapter_port = (free_port() for _ in range(4))
    stack = Stack(
        StackConfig(
            run_dir=run_dir,
            profile="cpu",
            adapter_env={"OPENAI_API_KEYS": API_KEY},
            http_port=http_port,
            grpc_port=grpc_port,
            metrics_port=metrics_port,
            adapter_port=adapter_port,
        )
    )
    vllm_port = free_port()
    server: subprocess.Popen[bytes] | None = None
    phases: list[Phase] = []
    print(f"run folder (logs): {run_dir}", flush=True)
    try:
        stack.prepare()
        engine = json.loads((stack.repository / MODEL / "1" / "model.json").read_text())
        renderer = PromptRenderer.load(engine["model"], stack.cache)
        body = filler(renderer, args.prompt_tokens)
        stack.start_triton()
        started = time.monotonic()
        with grpcclient.InferenceServerClient(stack.triton_grpc) as client:
            client.load_model(MODEL, client_timeout=600)
        print(f"qwen loaded in Triton in {time.monotonic() - started:.1f} s", flush=True)
        stack.start_adapter()
        own = [process.pid for process in stack.processes.values()]
        phases.append(measured(own, args, "A direct Triton gRPC", body, stack.triton_grpc, renderer))
        phases.append(measured(own, args, "B through the adapter", body, stack.adapter_url))
        leftovers = stop_stack(stack)
        if leftovers:
            print(f"WARNING: processes left by the Triton stack, killed: {leftovers}")
        if not args.skip_vllm:
            started = time.monotonic()
            server, log_path = start_vllm_server(stack, engine, vllm_port)
            _wait_http(f"http://127.0.0.1:{vllm_port}/v1/models", 300, server, "vLLM server", log_path)
            print(f"vLLM server ready in {time.monotonic() - started:.1f} s", flush=True)
            phases.append(measured([server.pid], args, "C vLLM OpenAI server", body, f"http://127.0.0.1:{vllm_port}"))
    finally:
        signal.alarm(0)
        leftovers = stop_process(server) if server is not None else []
        leftovers += stop_stack(stack)
        cores = subprocess.run(["pgrep", "-af", "EngineCore"], capture_output=True, text=True, check=False).stdout.strip()
        print(f"cleanup: leftovers of ours {leftovers or 'none'}; EngineCore processes on the box: {cores or 'none'}", flush=True)
        report(args, facts, phases)
    shutil.rmtree(run_dir, ignore_errors=True)  # kept (with its logs) when the run failed
    return 1 if any(p.errors for p in phases) else 0


if __name__ == "__main__":
    sys.exit(main())
