#!/usr/bin/env python3
"""Streaming chat load on the CPU profile's tiny Qwen3-VL-MoE, three ways, in interleaved rounds.

A  direct Triton: `qwen` over tritonclient.grpc.aio `stream_infer`, with the prompt rendered by the
   adapter's own chat-template renderer and the inputs the adapter sends (stream, exclude_input_in_output).
B  through the adapter: the same requests via the OpenAI async SDK, streamed (OpenAI API -> gRPC -> vLLM).
C  vLLM's own OpenAI server (`vllm.entrypoints.openai.api_server`) with the engine arguments of the rendered
   model.json, driven by the same client code as B.

All three servers are started once and stay up for the whole run (the vLLM server with Triton's niceness).
For each --concurrency value: unmeasured warm-up requests to each target, then --rounds rounds of A, B, C
(A B C A B C ...), so that the box's drift (±30 % run to run on 2 cores) hits every phase alike. Every phase
of every round has its own tag in front of the prompt text, so that none reuses another's cached prefixes, and
its own client (fresh connections: kept-alive ones would race the servers' keep-alive timeout between phases).

Every request asks for exactly --max-tokens tokens (ignore_eos, temperature 0); one that returns another count
(`num_output_tokens` in A, `usage` in B and C) is an error. Per request: latency (send -> last byte) and time to
first token (first non-empty text); per phase: output tokens / phase wall time, and the CPU time (utime + stime
+ reaped children, from /proc/PID/stat) of each process group over the phase: the adapter's session,
tritonserver, its Python backend stubs, its vLLM EngineCore and Worker, vLLM's API server and its EngineCore and
Worker, this load generator, the whole box (/proc/stat) and what is not ours (box minus ours: pollution), each as
CPU seconds per 1,000 output tokens of that phase. Before each phase every server is checked to be still running,
and the benchmark waits until our servers are quiet (vLLM's workers spin for a second after their last step,
which would bill the previous phase's engine to the next phase).

The report (markdown tables) gives each round, then the median over rounds with [min-max] of tokens/s, TTFT,
the within-round ratios B÷A and B÷C, and the CPU groups. All processes listen on loopback and are stopped
(process group, then their session is checked for leftovers) whatever happens; the exit code is 1 if any
request failed. Other Triton servers, vLLM engines or pytest runs seen on the box around a phase are reported:
they pollute it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import signal
import statistics
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
from passerelle_stack.launcher import Stack, StackConfig, _wait_http, free_port, lower_priority

MODEL = "qwen"
SWITCHES = ("stream", "exclude_input_in_output", "return_finish_reason", "return_num_input_tokens", "return_num_output_tokens")
API_KEY = "bench"
FILLER = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "wise", "owls", "count", "stars"]
PHASES = {"A": "A direct Triton gRPC", "B": "B through the adapter", "C": "C vLLM OpenAI server"}
CLK_TCK = os.sysconf("SC_CLK_TCK")
# CPU groups, and the phases in which each one does the work (its "own" phases; elsewhere it should idle).
GROUPS = {
    "adapter": "B",
    "tritonserver": "AB",
    "triton stubs": "AB",
    "triton engine core": "AB",
    "triton other": "AB",
    "vllm api server": "C",
    "vllm engine core": "C",
    "vllm other": "C",
    "load generator": "ABC",
}
OPTIONAL_GROUPS = ("triton other", "vllm other")  # shown only when a process fell into them
# Before each phase, wait (at most SETTLE_LIMIT_S) for a SETTLE_WINDOW_S window in which our servers use less than
# SETTLE_QUIET of one core: vLLM's workers keep spinning for a second after their last step (shm_broadcast's
# busy_loop_s), which would otherwise bill the previous phase's engine to the next phase.
SETTLE_WINDOW_S, SETTLE_QUIET, SETTLE_LIMIT_S = 0.5, 0.1, 15.0


@dataclass
class Sample:
    latency: float
    ttft: float | None
    tokens: int


@dataclass
class Load:
    wall: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@dataclass
class Phase:
    key: str  # A, B or C
    concurrency: int
    round: int
    load: Load
    load1: float
    cpu: dict[str, float]  # CPU seconds per group during the measured run
    box_cpu: float  # CPU seconds of the whole box (all cores, /proc/stat) during the measured run
    others: list[str]  # other stacks or test runs seen on the box around the phase
    settle: float  # seconds waited for our servers to go quiet before the phase

    @property
    def name(self) -> str:
        return PHASES[self.key]

    def pct(self, attribute: str, q: float) -> float | None:
        values = [getattr(s, attribute) for s in self.load.samples if getattr(s, attribute) is not None]
        return float(np.percentile(values, q)) if values else None

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.load.samples)

    @property
    def tokens_per_s(self) -> float | None:
        return self.tokens / self.load.wall if self.load.samples and self.load.wall else None

    def cpu_per_1k(self, group: str) -> float | None:
        ours = sum(self.cpu.values())
        seconds = {"all ours": ours, "whole box": self.box_cpu, "not ours": self.box_cpu - ours}.get(group)
        seconds = self.cpu[group] if seconds is None else seconds
        return 1000 * seconds / self.tokens if self.tokens else None


@dataclass
class Target:
    key: str
    connect: Callable[[], Any]  # a new client, with its own connections, for one phase (closed by `await .close()`)
    one: Callable[[Any, Any], Awaitable[Sample]]  # (client, prepared payload) -> one request
    prepare: Callable[[str], Any]  # user text -> payload (built before the clock starts)

    async def run(self, payloads: list[Any], concurrency: int, limit_s: float) -> Load:
        """A fresh client per phase: idle keep-alive connections kept from the previous phase would race the
        servers' keep-alive timeout (uvicorn's 5 s) and fail a request now and then with a connection error."""
        client = self.connect()
        try:
            return await run_load(lambda i: self.one(client, payloads[i]), len(payloads), concurrency, limit_s)
        finally:
            await client.close()


@dataclass
class Sessions:
    """The sessions of the processes we started (each leader's pid is its session id), for CPU accounting."""

    triton: int
    adapter: int
    vllm: int | None
    leaders: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)  # by name, to check they still run

    def ids(self) -> list[int]:
        return [sid for sid in (self.triton, self.adapter, self.vllm) if sid is not None]

    def check_alive(self, before: str) -> None:
        """A server that died (or was killed from outside: another user's pkill) must not pass for a slow one."""
        for name, process in self.leaders.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} (pid {process.pid}) exited with code {process.returncode} before {before}")

    def classify(self, pid: int, sid: int, name: str) -> str:
        if sid == self.adapter:
            return "adapter"
        engine = "EngineCore" in name or "VLLM::Worker" in name  # the engine core and its model-runner worker
        if sid == self.triton:
            if pid == self.triton:
                return "tritonserver"
            return "triton engine core" if engine else "triton stubs" if "triton_python_b" in name else "triton other"
        return "vllm engine core" if engine else "vllm api server" if pid == sid else "vllm other"


def tag(key: str, concurrency: int, round_: int, index: int) -> str:
    return f"[{key}{concurrency}r{round_}-{index}] "


def filler(renderer: PromptRenderer, prompt_tokens: int) -> str:
    """A user text whose rendered ChatML prompt (with a typical tag in front) has about `prompt_tokens` tokens."""
    words: list[str] = []
    while len(words) < 20 * prompt_tokens:
        text = tag("A", 32, 1, 0) + " ".join(words)
        if renderer.count_tokens(renderer.render_chat(chat(text, parts=True))) >= prompt_tokens:
            break
        words.append(FILLER[len(words) % len(FILLER)])
    return " ".join(words)


def chat(text: str, parts: bool = False) -> list[dict[str, Any]]:
    """One user message; the adapter turns string content into text parts before rendering, so does `parts`."""
    return [{"role": "user", "content": [{"type": "text", "text": text}] if parts else text}]


async def run_load(one: Callable[[int], Awaitable[Sample]], requests: int, concurrency: int, limit_s: float) -> Load:
    """`requests` calls of `one(index)`, at most `concurrency` in flight, each bounded by `limit_s` seconds."""
    load, gate = Load(), asyncio.Semaphore(concurrency)

    async def guarded(index: int) -> None:
        async with gate:
            try:
                async with asyncio.timeout(limit_s):
                    load.samples.append(await one(index))
            except Exception as exc:  # noqa: BLE001 - every failure is counted and reported
                load.errors.append(f"request {index}: {type(exc).__name__}: {exc}"[:300])

    started = time.perf_counter()
    await asyncio.gather(*(guarded(i) for i in range(requests)))
    load.wall = time.perf_counter() - started
    return load


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
    """One streamed request, as the adapter sends it (passerelle.triton.vllm.build_inputs)."""
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


def _proc_stat(pid: str) -> tuple[int, int, int, int] | None:
    """Session id, start time, CPU ticks (utime + stime + cutime + cstime) and niceness of a process, or None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # fields[0] is field 3 (state) of proc(5)
    return int(fields[3]), int(fields[19]), sum(int(x) for x in fields[11:15]), int(fields[16])


def _proc_name(pid: int) -> str:
    """comm and command line: vLLM renames its engine process `VLLM::EngineCore...` (setproctitle)."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""
    return f"{comm} | {cmdline}"


Snapshot = dict[tuple[int, int], tuple[str, int]]  # (pid, start time) -> (group, CPU ticks)


def cpu_snapshot(sessions: Sessions) -> Snapshot:
    """Every process of our sessions, and this one; the (pid, start time) key survives pid reuse. A process
    that ends between two snapshots is seen only through its parent's cutime/cstime, if that parent is ours."""
    me, ours, found = os.getpid(), sessions.ids(), {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or (stat := _proc_stat(entry.name)) is None:
            continue
        sid, start, ticks, _nice = stat
        pid = int(entry.name)
        if pid == me:
            found[(pid, start)] = ("load generator", ticks)
        elif sid in ours:
            found[(pid, start)] = (sessions.classify(pid, sid, _proc_name(pid)), ticks)
    return found


def cpu_delta(before: Snapshot, after: Snapshot) -> dict[str, float]:
    """CPU seconds per group between two snapshots; a process new in `after` counts from zero."""
    seconds = dict.fromkeys(GROUPS, 0.0)
    for key, (group, ticks) in after.items():
        seconds[group] += (ticks - before.get(key, (group, 0))[1]) / CLK_TCK
    return seconds


def box_ticks() -> int:
    """Busy ticks of all cores (/proc/stat: user, nice, system, irq, softirq, steal)."""
    values = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return values[0] + values[1] + values[2] + sum(values[5:8])


async def settle(sessions: Sessions) -> float:
    """Wait until our servers (all but this load generator) are quiet; return the seconds waited."""
    started = time.perf_counter()
    while time.perf_counter() - started < SETTLE_LIMIT_S:
        before = cpu_snapshot(sessions)
        await asyncio.sleep(SETTLE_WINDOW_S)
        busy = sum(seconds for group, seconds in cpu_delta(before, cpu_snapshot(sessions)).items() if group != "load generator")
        if busy < SETTLE_QUIET * SETTLE_WINDOW_S:
            break
    return time.perf_counter() - started


def foreign_processes(own_sessions: list[int]) -> list[str]:
    """Triton servers, vLLM engines and pytest runs that are not ours: they would pollute the figures."""
    listed = subprocess.run(["ps", "-eo", "pid=,sid=,args="], capture_output=True, text=True, check=False).stdout
    found = []
    for line in listed.splitlines():
        pid, sid, command = [*line.split(None, 2), "", ""][:3]
        if sid.isdigit() and int(sid) not in own_sessions and any(mark in command for mark in ("tritonserver", "EngineCore", "pytest")):
            found.append(f"{pid} {command[:100]}")
    return found


async def measure(args: argparse.Namespace, target: Target, sessions: Sessions, concurrency: int, round_: int, body: str) -> Phase:
    """One measured phase; payloads are built, and the box checked, outside the clock and the CPU window."""
    texts = [target.prepare(tag(target.key, concurrency, round_, i) + body) for i in range(args.requests)]
    sessions.check_alive(f"c={concurrency} round {round_} {PHASES[target.key]}")
    before_others = await asyncio.to_thread(foreign_processes, sessions.ids())
    waited = await settle(sessions)
    load1 = os.getloadavg()[0]
    cpu_before, box_before = cpu_snapshot(sessions), box_ticks()
    load = await target.run(texts, concurrency, args.request_timeout)
    cpu_after, box_after = cpu_snapshot(sessions), box_ticks()
    after_others = await asyncio.to_thread(foreign_processes, sessions.ids())
    cpu = cpu_delta(cpu_before, cpu_after)
    others = sorted(set(before_others) | set(after_others))
    phase = Phase(target.key, concurrency, round_, load, load1, cpu, (box_after - box_before) / CLK_TCK, others, waited)
    print(
        f"c={concurrency} round {round_} {phase.name}: {phase.load.wall:.1f} s, {fmt_rate(phase.tokens_per_s)} tok/s, "
        f"{len(load.errors)} errors (after {waited:.1f} s for the servers to go quiet"
        + (", NOT QUIET" if waited >= SETTLE_LIMIT_S else "")
        + ")",
        flush=True,
    )
    return phase


async def warm_up(args: argparse.Namespace, target: Target, concurrency: int, body: str) -> None:
    count = min(concurrency, 16) if args.warmup is None else args.warmup
    warm = [target.prepare(f"[w{target.key}{concurrency}-{i}] {body}") for i in range(count)]
    warmed = await target.run(warm, concurrency, args.request_timeout)
    if warmed.errors:
        raise RuntimeError(f"{PHASES[target.key]}: warm-up failed: {warmed.errors[0]}")


def openai_target(key: str, base_url: str, args: argparse.Namespace) -> Target:
    def connect() -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key=API_KEY, max_retries=0, timeout=args.request_timeout)

    return Target(key, connect, lambda sdk, messages: openai_request(sdk, messages, args.max_tokens), chat)


async def run_rounds(
    args: argparse.Namespace, body: str, renderer: PromptRenderer, urls: dict[str, str], sessions: Sessions, phases: list[Phase]
) -> None:
    """Warm-up, then rounds A B C, for each concurrency; phases are appended as they finish (kept if interrupted)."""
    targets = [
        Target(
            "A",
            lambda: aioclient.InferenceServerClient(urls["A"]),
            lambda client, prompt: triton_request(client, prompt, args.max_tokens),
            lambda text: renderer.render_chat(chat(text, True)),
        )
    ]
    targets += [openai_target(key, urls[key], args) for key in "BC" if key in urls]
    for concurrency in args.concurrency:
        for target in targets:
            sessions.check_alive(f"the c={concurrency} warm-up of {PHASES[target.key]}")
            await warm_up(args, target, concurrency, body)
        print(f"c={concurrency}: warm-up done", flush=True)
        for round_ in range(1, args.rounds + 1):
            for target in targets:
                phases.append(await measure(args, target, sessions, concurrency, round_, body))


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


def start_vllm_server(stack: Stack, engine: dict[str, Any], port: int, niceness: int) -> tuple[subprocess.Popen[bytes], Path]:
    """vLLM's OpenAI server in its own session, with Triton's environment, niceness (its session's too) and model.json engine arguments."""
    command = [str(stack.env_dir / "bin" / "python"), "-m", "vllm.entrypoints.openai.api_server", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--model", engine["model"], "--served-model-name", MODEL, *engine_flags(engine)]
    print("  $", shlex.join(command[1:]), flush=True)
    log_path, env, cwd = stack.config.run_dir / "vllm-server.log", stack.triton_environment(stack.env_dir), stack.config.run_dir
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=(lambda: lower_priority(niceness)) if niceness else None,
        )
    return process, log_path


def list_processes(sessions: Sessions) -> list[str]:
    """Our processes and the CPU group each one falls into (names as the kernel shows them)."""
    lines = []
    for entry in sorted(os.scandir("/proc"), key=lambda e: int(e.name) if e.name.isdigit() else 0):
        if entry.name.isdigit() and (stat := _proc_stat(entry.name)) is not None and stat[0] in sessions.ids():
            pid, name = int(entry.name), _proc_name(int(entry.name))
            lines.append(f"  {pid:>7} nice {stat[3]:>3}  {sessions.classify(pid, stat[0], name):<20} {name[:110]}")
    return lines


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


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


def fmt_rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def fmt_cpu(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}".replace("-0.000", "0.000")


def divide(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def spread(values: list[float | None], show: Callable[[float | None], str]) -> str:
    """Median [min-max] of the known values, with their count when some round has none."""
    known = [v for v in values if v is not None]
    if not known:
        return "-"
    text = (
        show(statistics.median(known)) if len(known) == 1 else f"{show(statistics.median(known))} [{show(min(known))}-{show(max(known))}]"
    )
    return text + (f" (n={len(known)})" if len(known) < len(values) else "")


Rounds = list[dict[str, Phase]]  # per round: phase key -> phase


def per_round(rounds: Rounds, key: str, value: Callable[[Phase], float | None]) -> list[float | None]:
    return [value(r[key]) if key in r else None for r in rounds]


def ratios(
    rounds: Rounds, top: str, bottom: str, value: Callable[[Phase], float | None], under: Callable[[Phase], float | None] | None = None
) -> list[float | None]:
    """`value` of phase `top` ÷ `under` (default: `value`) of phase `bottom`, within each round."""
    under = under or value
    return [divide(value(r[top]), under(r[bottom])) if top in r and bottom in r else None for r in rounds]


def cpu_of(group: str) -> Callable[[Phase], float | None]:
    return lambda p: p.cpu_per_1k(group)


def tok_s(p: Phase) -> float | None:
    return p.tokens_per_s


def ttft(p: Phase) -> float | None:
    return p.pct("ttft", 50)


def stack_cpu(p: Phase) -> float | None:
    """CPU seconds per 1,000 tokens of the adapter and all of Triton's processes."""
    return divide(sum(v for g, v in p.cpu.items() if g == "adapter" or g.startswith("triton")) * 1000, p.tokens)


def vllm_cpu(p: Phase) -> float | None:
    """CPU seconds per 1,000 tokens of vLLM's OpenAI server and its engine."""
    return divide(sum(v for g, v in p.cpu.items() if g.startswith("vllm")) * 1000, p.tokens)


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)])


def report(args: argparse.Namespace, facts: list[str], niceness: int, phases: list[Phase]) -> None:
    keys = "AB" if args.skip_vllm else "ABC"
    print(
        f"\n## bench_llm: concurrency {' and '.join(map(str, args.concurrency))}, {args.requests} requests per phase per round, "
        f"{args.max_tokens} output tokens, ~{args.prompt_tokens} prompt tokens, streaming, greedy, ignore_eos\n"
    )
    print(f"- each figure: the median of {args.rounds} interleaved rounds ({' '.join(keys)} in each round) [min-max]")
    for fact in facts:
        print(f"- machine: {fact}")
    print(f"- arguments: {shlex.join(sys.argv[1:]) or '(defaults)'}")
    servers = "tritonserver (with its stubs and engine)" + ("" if args.skip_vllm else " and vLLM's OpenAI server")
    print(
        f"- niceness: {servers} +{niceness}, the adapter and this load generator 0;\n"
        "  all servers stay up for the whole run, and share the cores with the load generator"
    )
    print(
        f"- before each phase: a wait (column 'settle s', at most {SETTLE_LIMIT_S:.0f} s) until our servers use under "
        f"{SETTLE_QUIET:.0%} of a core over {SETTLE_WINDOW_S} s (vLLM's workers spin for 1 s after their last step)"
    )
    if args.rounds < 3:
        print(f"\n**NOTE: only {args.rounds} round(s): the figures below are NOT medians of 3 or more rounds; do not quote them.**")
    shown = [g for g in GROUPS if not (args.skip_vllm and g.startswith("vllm"))]
    groups = [g for g in shown if g not in OPTIONAL_GROUPS or any(p.cpu[g] for p in phases)] + ["all ours", "whole box", "not ours"]
    for concurrency in args.concurrency:
        mine = [p for p in phases if p.concurrency == concurrency]
        if not mine:
            continue
        print(f"\n### concurrency {concurrency}\n\nEach round ({args.requests} requests per phase):\n")
        rows = []
        for p in mine:
            timings = [fmt_ms(p.pct(what, q)) for what in ("latency", "ttft") for q in (50, 99)]
            rows.append([str(p.round), p.name, str(len(p.load.samples)), str(len(p.load.errors)), fmt_rate(p.tokens_per_s), *timings])
            rows[-1] += [f"{p.load.wall:.1f}", f"{p.settle:.1f}", f"{p.load1:.2f}"]
        header = [
            "round",
            "phase",
            "ok",
            "err",
            "tok/s",
            "lat p50 ms",
            "lat p99 ms",
            "TTFT p50 ms",
            "TTFT p99 ms",
            "wall s",
            "settle s",
            "load1",
        ]
        print(table(header, rows))
        print("\nCPU seconds per 1,000 output tokens of the phase, per process group (each round):\n")
        rows = [[str(p.round), p.key, str(p.tokens), *(fmt_cpu(p.cpu_per_1k(g)) for g in groups)] for p in mine]
        print(table(["round", "phase", "tokens", *groups], rows))

        by_round: dict[int, dict[str, Phase]] = {}
        for p in mine:
            by_round.setdefault(p.round, {})[p.key] = p
        rounds = list(by_round.values())
        print(f"\nSummary, median [min-max] over {len(rounds)} rounds:\n")
        rows = []
        for key in keys:
            rows.append(
                [
                    PHASES[key],
                    spread(per_round(rounds, key, tok_s), fmt_rate),
                    spread(per_round(rounds, key, ttft), fmt_ms),
                    spread(per_round(rounds, key, lambda p: p.pct("latency", 50)), fmt_ms),
                    str(sum(len(r[key].load.errors) for r in rounds if key in r)),
                ]
            )
        print(table(["phase", "tok/s", "TTFT p50 ms", "latency p50 ms", "errors (all rounds)"], rows))

        rows = [
            ["B÷A tokens/s (adapter ÷ direct Triton)", spread(ratios(rounds, "B", "A", tok_s), fmt_ratio)],
            ["B÷A TTFT p50", spread(ratios(rounds, "B", "A", ttft), fmt_ratio)],
        ]
        if "C" in keys:
            rows += [
                ["B÷C tokens/s (our stack ÷ vLLM's server)", spread(ratios(rounds, "B", "C", tok_s), fmt_ratio)],
                ["B÷C TTFT p50", spread(ratios(rounds, "B", "C", ttft), fmt_ratio)],
                [
                    "adapter CPU per 1,000 tokens (B) ÷ vLLM API server CPU per 1,000 tokens (C)",
                    spread(ratios(rounds, "B", "C", cpu_of("adapter"), cpu_of("vllm api server")), fmt_ratio),
                ],
                [
                    "stack CPU per 1,000 tokens (B: adapter + Triton groups) ÷ vLLM server's (C: API server + engine)",
                    spread(ratios(rounds, "B", "C", stack_cpu, vllm_cpu), fmt_ratio),
                ],
            ]
        print()
        print(table(["ratio, computed within each round", "median [min-max]"], rows))
        print(f"\nCPU seconds per 1,000 output tokens, median [min-max] over {len(rounds)} rounds; **bold**: the group's own phase:\n")
        rows = []
        for group in groups:
            own = GROUPS.get(group, "")
            cells = []
            for key in keys:
                cell = spread(per_round(rounds, key, cpu_of(group)), fmt_cpu)
                cells.append(f"**{cell}**" if key in own and cell != "-" else cell)
            rows.append([group, *cells])
        print(table(["group", *(PHASES[key] for key in keys)], rows))
    print()
    for p in phases:
        for error in p.load.errors[:5]:
            print(f"error [c={p.concurrency} round {p.round} {p.name}] {error}")
    seen: dict[str, list[str]] = {}  # a process not ours -> the phases it was seen around
    for p in phases:
        for other in p.others:
            seen.setdefault(other, []).append(f"c={p.concurrency} r{p.round} {p.key}")
    for other, where in seen.items():
        around = "all phases" if len(where) == len(phases) else ", ".join(where)
        print(f"WARNING: not ours, running around {around} (figures polluted; see 'not ours' CPU): {other}")
    if phases and not seen:
        print("No other Triton server, vLLM engine or pytest run was seen on the box around the phases.")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[32, 64], help="requests in flight, one or more values (default 32 64)"
    )
    parser.add_argument("--requests", type=int, default=64, help="measured requests per phase per round (default 64)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds A B C per concurrency (default 3; below 3 no median)")
    parser.add_argument("--max-tokens", type=int, default=32, help="output tokens per request (default 32)")
    parser.add_argument("--prompt-tokens", type=int, default=64, help="approximate rendered prompt length (default 64)")
    parser.add_argument(
        "--warmup", type=int, default=None, help="unmeasured requests per target and concurrency (default: concurrency, at most 16)"
    )
    parser.add_argument("--skip-vllm", action="store_true", help="skip phase C (vLLM's own OpenAI server)")
    parser.add_argument("--request-timeout", type=float, default=120.0, help="seconds per request (default 120)")
    parser.add_argument("--time-limit", type=int, default=1200, help="abort the whole run after this many seconds (default 1200)")
    args = parser.parse_args()
    if min(*args.concurrency, args.requests, args.rounds, args.max_tokens, args.prompt_tokens) < 1:
        parser.error("--concurrency, --requests, --rounds, --max-tokens and --prompt-tokens must be positive")
    if args.warmup is not None and args.warmup < 0:
        parser.error("--warmup must not be negative")
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
    stack = Stack(StackConfig.on_free_ports(run_dir, adapter_env={"OPENAI_API_KEYS": API_KEY}))
    # The vLLM server gets the niceness the launcher gives Triton on the CPU profile, so that neither is favoured.
    niceness = stack.config.triton_niceness if stack.config.profile == "cpu" else 0
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
        urls = {"A": stack.triton_grpc, "B": stack.adapter_url}
        if not args.skip_vllm:
            started = time.monotonic()
            server, log_path = start_vllm_server(stack, engine, vllm_port, niceness)
            _wait_http(f"http://127.0.0.1:{vllm_port}/v1/models", 300, server, "vLLM server", log_path)
            print(f"vLLM server ready in {time.monotonic() - started:.1f} s", flush=True)
            urls["C"] = f"http://127.0.0.1:{vllm_port}"
        leaders = {**stack.processes, **({"vLLM server": server} if server else {})}
        sessions = Sessions(stack.processes["tritonserver"].pid, stack.processes["adapter"].pid, server.pid if server else None, leaders)
        print("our processes (pid, niceness, CPU group, comm | command line):", *list_processes(sessions), sep="\n", flush=True)
        asyncio.run(run_rounds(args, body, renderer, urls, sessions, phases))
    finally:
        signal.alarm(0)
        leftovers = stop_process(server) if server is not None else []
        leftovers += stop_stack(stack)
        cores = subprocess.run(["pgrep", "-af", "EngineCore"], capture_output=True, text=True, check=False).stdout.strip()
        print(f"cleanup: leftovers of ours {leftovers or 'none'}; EngineCore processes on the box: {cores or 'none'}", flush=True)
        report(args, facts, niceness, phases)
    if any(p.load.errors for p in phases):
        print(f"logs kept in {run_dir} (requests failed)")
        return 1
    shutil.rmtree(run_dir, ignore_errors=True)  # kept (with its logs) when the run failed
    return 0


if __name__ == "__main__":
    sys.exit(main())
