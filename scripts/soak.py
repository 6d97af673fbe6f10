#!/usr/bin/env python3
"""Soak: mixed requests at a fixed concurrency for a long time, and the adapter's memory and open
files over that time.

--concurrency clients (32) each loop until the time is up, picking by weight: a streamed chat
(3 in 5), a chat with an image (1 in 5), a transcription of a few seconds of speech (1 in 5). Each
answer is checked whole: a stream ends with a finish_reason and [DONE] and no error event; a
transcription is JSON with its duration. A request is served or lost (any other status, an error
event, a cut stream, a timeout); none may be lost. Every 5 s the adapter's resident size (VmRSS)
and open file descriptors are read from /proc. Growth, after --warm-up-s (30 s), is the median of
the last minute's samples over that of the first minute; neither may exceed --max-growth (10 %).

Usage: scripts/soak [--minutes 30] [--concurrency 32] [--report PATH]
  It starts a stack of its own (the CPU profile on this machine, qwen and canary loaded), or
  measures an adapter already running: --adapter-url URL --adapter-pid PID [--api-key KEY].
Exit code 1 when a request was lost or the adapter grew by more than --max-growth.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' espeak-ng dialogue (speech.py)

import speech
from passerelle_stack.launcher import Stack, StackConfig

KINDS = {"chat_stream": 3, "chat_image": 1, "transcription": 1}
SAMPLE_EVERY_S = 5.0
REQUEST_TIMEOUT_S = 120.0
CLIP_S = 6


@dataclass
class Sample:
    at_s: float
    rss_bytes: int
    open_fds: int
    served: int
    lost: int


@dataclass
class Report:
    minutes: float
    concurrency: int
    served: dict[str, int] = field(default_factory=dict)
    lost: list[str] = field(default_factory=list)
    latency_s: dict[str, list[float]] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    warm_up_s: float = 30.0

    def after_warm_up(self) -> list[Sample]:
        return [sample for sample in self.samples if sample.at_s >= self.warm_up_s]

    def growth(self, attribute: str) -> float:
        """The median of the last minute's samples over that of the first minute after the warm-up,
        minus one (a third of the samples each, when the run is shorter). Medians, because open files
        follow the connections in flight from one sample to the next."""
        later = [getattr(sample, attribute) for sample in self.after_warm_up()]
        window = min(int(60 / SAMPLE_EVERY_S), len(later) // 3)
        if window < 1:
            return float("nan")
        return float(statistics.median(later[-window:]) / statistics.median(later[:window]) - 1)

    def summary(self) -> dict[str, Any]:
        every = [seconds for values in self.latency_s.values() for seconds in values]
        later = self.after_warm_up()
        return {
            "minutes": self.minutes,
            "concurrency": self.concurrency,
            "served": self.served,
            "lost": len(self.lost),
            "lost_examples": self.lost[:10],
            "requests_per_s": sum(self.served.values()) / (self.minutes * 60),
            "latency_s": {
                kind: {"p50": _quantile(values, 0.5), "p99": _quantile(values, 0.99)}
                for kind, values in {**self.latency_s, "all": every}.items()
                if values
            },
            "rss_growth": self.growth("rss_bytes"),
            "fd_growth": self.growth("open_fds"),
            "rss_mib_after_warm_up": [round(sample.rss_bytes / 2**20, 1) for sample in later],
            "fds_after_warm_up": [sample.open_fds for sample in later],
        }


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _png_data_url() -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (random.randrange(256), 80, 160)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


class Load:
    def __init__(self, client: httpx.AsyncClient, clip: bytes, report: Report) -> None:
        self.client = client
        self.clip = clip
        self.report = report
        self.image = _png_data_url()

    async def chat_stream(self, image: bool) -> str | None:
        content: Any = "Tell me about the weather."
        if image:
            content = [{"type": "text", "text": "What is in this image?"}, {"type": "image_url", "image_url": {"url": self.image}}]
        body = {"model": "qwen", "messages": [{"role": "user", "content": content}], "max_tokens": 24, "stream": True}
        async with self.client.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                return f"status {response.status_code}: {(await response.aread())[:200]!r}"
            lines = [line async for line in response.aiter_lines() if line.startswith("data: ")]
        if lines[-1:] != ["data: [DONE]"] or any('"error"' in line for line in lines):
            return f"stream cut or failed: {lines[-2:]}"
        if not any('"finish_reason":"' in line for line in lines):
            return "stream without a finish_reason"
        return None

    async def transcription(self) -> str | None:
        files = {"file": ("clip.wav", self.clip, "audio/wav")}
        response = await self.client.post("/v1/audio/transcriptions", data={"model": "canary", "language": "en"}, files=files)
        if response.status_code != 200:
            return f"status {response.status_code}: {response.text[:200]}"
        usage = response.json().get("usage", {})
        if abs(float(usage.get("seconds", 0)) - CLIP_S) > 0.1:
            return f"transcription with the wrong duration: {response.text[:200]}"
        return None

    async def one(self, kind: str) -> None:
        started = time.monotonic()
        try:
            if kind == "transcription":
                problem = await self.transcription()
            else:
                problem = await self.chat_stream(image=kind == "chat_image")
        except httpx.HTTPError as error:
            problem = f"{type(error).__name__}: {error}"
        if problem is None:
            self.report.served[kind] = self.report.served.get(kind, 0) + 1
            self.report.latency_s.setdefault(kind, []).append(time.monotonic() - started)
        else:
            self.report.lost.append(f"{kind}: {problem}")

    async def client_loop(self, until: float) -> None:
        kinds, weights = list(KINDS), list(KINDS.values())
        while time.monotonic() < until:
            await self.one(random.choices(kinds, weights)[0])


def read_process(pid: int) -> tuple[int, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return rss_kib * 1024, len(os.listdir(f"/proc/{pid}/fd"))


async def soak(url: str, pid: int, api_key: str | None, minutes: float, concurrency: int, warm_up_s: float, clip: bytes) -> Report:
    report = Report(minutes=minutes, concurrency=concurrency, warm_up_s=warm_up_s)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    started = time.monotonic()
    until = started + minutes * 60
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=REQUEST_TIMEOUT_S, limits=limits) as client:
        load = Load(client, clip, report)
        clients = [asyncio.create_task(load.client_loop(until)) for _ in range(concurrency)]
        while time.monotonic() < until:
            await asyncio.sleep(min(SAMPLE_EVERY_S, max(0.0, until - time.monotonic())))
            rss, fds = read_process(pid)
            sample = Sample(time.monotonic() - started, rss, fds, sum(report.served.values()), len(report.lost))
            report.samples.append(sample)
            if len(report.samples) % 6 == 0:
                print(
                    f"{sample.at_s:6.0f} s  served {sample.served:6d}  lost {sample.lost}  adapter {rss / 2**20:6.1f} MiB, {fds} fds",
                    flush=True,
                )
        await asyncio.gather(*clients)
    return report


def speech_clip(folder: Path) -> bytes:
    dialogue = speech.build(folder).dialogue
    clip = folder / "clip.wav"
    speech.ffmpeg("-i", str(dialogue), "-t", str(CLIP_S), "-ar", "16000", "-ac", "1", str(clip))
    return clip.read_bytes()


@contextmanager
def own_stack(folder: Path) -> Iterator[tuple[str, int, str]]:
    api_key = "soak-" + os.urandom(8).hex()
    config = StackConfig.on_free_ports(folder / "stack", adapter_env={"OPENAI_API_KEYS": api_key, "LAZY_LOAD_MODELS": "true"})
    stack = Stack(config)
    try:
        stack.prepare()
        stack.start_triton()
        stack.start_adapter()
        with httpx.Client(base_url=stack.adapter_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=900) as client:
            for model in ("qwen", "canary"):  # loaded by their first request (LAZY_LOAD_MODELS)
                client.get(f"/v1/models/{model}").raise_for_status()
            client.post("/v1/chat/completions", json={"model": "qwen", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1})
        print(f"stack up in {folder / 'stack'}", flush=True)
        yield stack.adapter_url, stack.processes["adapter"].pid, api_key
    finally:
        stack.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--warm-up-s", type=float, default=30.0)
    parser.add_argument("--max-growth", type=float, default=0.10, help="largest allowed RSS and fd growth after the warm-up (0.10 = 10 %%)")
    parser.add_argument("--adapter-url")
    parser.add_argument("--adapter-pid", type=int)
    parser.add_argument("--api-key", default=os.environ.get("SOAK_API_KEY"))
    parser.add_argument("--report", type=Path, help="write the summary as JSON here")
    args = parser.parse_args()
    if (args.adapter_url is None) != (args.adapter_pid is None):
        parser.error("--adapter-url and --adapter-pid go together")

    with tempfile.TemporaryDirectory(prefix="passerelle-soak-") as scratch:
        clip = speech_clip(Path(scratch) / "speech")
        print(f"soak: {args.minutes:g} min at {args.concurrency} concurrent requests, mixed {KINDS}", flush=True)
        if args.adapter_url:
            report = asyncio.run(
                soak(args.adapter_url, args.adapter_pid, args.api_key, args.minutes, args.concurrency, args.warm_up_s, clip)
            )
        else:
            with own_stack(Path(scratch)) as (url, pid, key):
                report = asyncio.run(soak(url, pid, key, args.minutes, args.concurrency, args.warm_up_s, clip))

    summary = report.summary()
    if args.report:
        args.report.write_text(json.dumps({**summary, "samples": [asdict(sample) for sample in report.samples]}, indent=2))
    latency = summary["latency_s"]
    print(f"\n## soak: {args.minutes:g} min, {args.concurrency} concurrent, mixed requests")
    print(f"- served: {summary['served']} ({summary['requests_per_s']:.2f} requests/s); lost: {summary['lost']}")
    for kind, values in latency.items():
        print(f"- {kind}: p50 {values['p50']:.2f} s, p99 {values['p99']:.2f} s")
    rss, fds = summary["rss_mib_after_warm_up"], summary["fds_after_warm_up"]
    if rss:
        print(f"- adapter after the {args.warm_up_s:g} s warm-up, {len(rss)} samples: RSS {min(rss)}-{max(rss)} MiB")
        print(f"- adapter open fds after the warm-up: {min(fds)}-{max(fds)}")
    print(f"- growth after the warm-up: RSS {summary['rss_growth']:+.1%}, fds {summary['fd_growth']:+.1%} (limit {args.max_growth:.0%})")
    for example in summary["lost_examples"]:
        print(f"- lost: {example}")
    failed = summary["lost"] > 0 or not summary["rss_growth"] <= args.max_growth or not summary["fd_growth"] <= args.max_growth
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
