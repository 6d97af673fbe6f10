#!/usr/bin/env python3
"""Transcription through the adapter vs a direct Triton call, on the CPU profile's tiny Canary.

For each length (1 and 10 minutes of espeak-ng dialogue, by default, as MP3 uploads):
  A  direct Triton: `canary` over tritonclient.grpc with PCM the benchmark decoded beforehand
     (the model's own time plus the gRPC transfer of the PCM);
  B  through the adapter: the MP3 file posted to /v1/audio/transcriptions (upload, ffmpeg decode,
     transfer, model, response), naming its language (`language=en`), as A's default does;
  I  the same upload without a language: `langid` identifies it first (I - B: the identification);
  C  the same upload with stream=true (`canary_stream`): the time to the first transcript delta,
     and to the end of the stream.
Overhead = (B - A) / A, the adapter's decode + transfer cost as a share of model time (goal <= 5 %).
The adapter's own Server-Timing header splits B into decode and inference.

Then the peak RSS of the adapter process (VmHWM) while it handles a one-hour upload.
The runs alternate A and B, so that drifts of this shared machine hit both alike.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import tritonclient.grpc as grpcclient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' espeak-ng dialogue (speech.py)

import speech
from passerelle_stack.launcher import Stack, StackConfig, free_port

API_KEY = "bench"


def looped(source: Path, minutes: float, target: Path) -> Path:
    """`source` repeated to `minutes`, encoded as MP3 (what users upload)."""
    speech.ffmpeg("-stream_loop", "-1", "-i", str(source), "-t", str(minutes * 60), "-c:a", "libmp3lame", "-b:a", "64k", str(target))
    return target


def pcm16k(path: Path) -> np.ndarray:
    command = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-ac", "1", "-ar", "16000", "-f", "f32le", "-"]
    return np.frombuffer(subprocess.run(command, check=True, capture_output=True).stdout, dtype=np.float32)


def direct(client: grpcclient.InferenceServerClient, pcm: np.ndarray) -> float:
    tensor = grpcclient.InferInput("audio", [pcm.size], "FP32")
    tensor.set_data_from_numpy(pcm)
    started = time.perf_counter()
    client.infer("canary", [tensor], client_timeout=3600)
    return time.perf_counter() - started


def through_adapter(http: httpx.Client, path: Path, language: str | None = "en") -> tuple[float, float, float]:
    started = time.perf_counter()
    data = {"model": "canary", **({"language": language} if language else {})}
    with path.open("rb") as audio:
        response = http.post("/v1/audio/transcriptions", data=data, files={"file": (path.name, audio, "audio/mpeg")})
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    timing = dict(re.findall(r"(\w+);dur=([\d.]+)", response.headers["server-timing"]))
    return elapsed, float(timing["decode"]) / 1000, float(timing["inference"]) / 1000


def streamed(http: httpx.Client, path: Path) -> tuple[float, float]:
    """(seconds to the first `transcript.text.delta`, seconds to the end of the stream)."""
    started = time.perf_counter()
    first = None
    with (
        path.open("rb") as audio,
        http.stream(
            "POST",
            "/v1/audio/transcriptions",
            data={"model": "canary", "stream": "true", "language": "en"},
            files={"file": (path.name, audio, "audio/mpeg")},
        ) as response,
    ):
        response.raise_for_status()
        for line in response.iter_lines():
            if first is None and line.startswith("data: ") and '"transcript.text.delta"' in line:
                first = time.perf_counter() - started
    total = time.perf_counter() - started
    return (first if first is not None else total), total


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s [{min(values):.2f}-{max(values):.2f}]"


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 10])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rss-minutes", type=float, default=60, help="length of the upload for the peak-RSS measure (0: skip)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_audio-"))
    print(f"work folder (logs, audio): {work}", flush=True)
    voices = speech.build(work / "speech")
    stack = Stack(StackConfig.on_free_ports(work / "stack", adapter_env={"OPENAI_API_KEYS": API_KEY}))
    rows = []
    streams: list[tuple[float, list[float], list[float], list[float], list[float]]] = []
    identifications: list[tuple[float, list[float], list[float]]] = []
    try:
        stack.prepare()
        stack.start_triton()
        with grpcclient.InferenceServerClient(stack.triton_grpc) as client:
            started = time.monotonic()
            client.load_model("canary", client_timeout=900)
            client.load_model("canary_stream", client_timeout=900)
            client.load_model("langid", client_timeout=900)
            print(f"canary loaded in Triton in {time.monotonic() - started:.1f} s", flush=True)
            stack.start_adapter()
            adapter_pid = stack.processes["adapter"].pid
            headers = {"Authorization": f"Bearer {API_KEY}"}
            with httpx.Client(base_url=stack.adapter_url, headers=headers, timeout=3600) as http:
                warm = looped(voices.dialogue, 0.25, work / "warm.mp3")
                direct(client, pcm16k(warm))
                through_adapter(http, warm)
                through_adapter(http, warm, language=None)
                streamed(http, warm)
                for minutes in args.minutes:
                    upload = looped(voices.dialogue, minutes, work / f"{minutes:g}min.mp3")
                    pcm = pcm16k(upload)
                    a_times, b_times, decodes, inferences, firsts, totals, ratios, identified = [], [], [], [], [], [], [], []
                    for _ in range(args.repeats):
                        a_times.append(direct(client, pcm))
                        b, decode, inference = through_adapter(http, upload)
                        b_times.append(b)
                        decodes.append(decode)
                        inferences.append(inference)
                        identified.append(through_adapter(http, upload, language=None)[0])
                        first, total = streamed(http, upload)
                        firsts.append(first)
                        totals.append(total)
                        ratios.append(first / b)
                    a, b = statistics.median(a_times), statistics.median(b_times)
                    rows.append((minutes, upload.stat().st_size, a, b, statistics.median(decodes), statistics.median(inferences)))
                    identifications.append((minutes, b_times, identified))
                    streams.append((minutes, b_times, firsts, totals, ratios))
                    print(
                        f"  {minutes:g} min: direct {a:.2f} s, adapter {b:.2f} s, first delta {statistics.median(firsts):.2f} s", flush=True
                    )
                rss = []
                if args.rss_minutes:
                    upload = looped(voices.dialogue, args.rss_minutes, work / "rss.mp3")
                    idle = peak_rss_mb(adapter_pid)
                    elapsed, decode, _ = through_adapter(http, upload)
                    rss.append(("shared_memory", idle, peak_rss_mb(adapter_pid), elapsed, decode))
                    # The same upload through an adapter that streams the PCM over Triton's HTTP protocol.
                    url = stack.start_adapter(
                        name="adapter-http", port=free_port(), env={"OPENAI_API_KEYS": API_KEY, "AUDIO_TRANSFER": "http"}
                    )
                    http_pid = stack.processes["adapter-http"].pid
                    with httpx.Client(base_url=url, headers=headers, timeout=3600) as grpc_http:
                        idle = peak_rss_mb(http_pid)
                        elapsed, decode, _ = through_adapter(grpc_http, upload)
                        rss.append(("http", idle, peak_rss_mb(http_pid), elapsed, decode))
    finally:
        stack.stop()

    print("\nTranscription (canary, response_format json), medians of", args.repeats, "runs; MP3 64 kb/s uploads")
    print("| Audio | Upload | Direct Triton | Through the adapter | Adapter decode | Overhead (B-A)/A |")
    print("|---|---|---|---|---|---|")
    for minutes, size, a, b, decode, _inference in rows:
        print(f"| {minutes:g} min | {size / 1e6:.1f} MB | {a:.2f} s | {b:.2f} s | {decode:.2f} s | {100 * (b - a) / a:+.1f} % |")
    print("\nLanguage identification (no `language`: langid first), medians [min-max] of the same interleaved rounds")
    print("| Audio | Language named | Identified | Identification (I - B) |")
    print("|---|---|---|---|")
    for minutes, named, unnamed in identifications:
        costs = [i - b for i, b in zip(unnamed, named, strict=True)]
        cost = f"{statistics.median(costs):+.2f} s [{min(costs):+.2f}-{max(costs):+.2f}]"
        print(f"| {minutes:g} min | {spread(named)} | {spread(unnamed)} | {cost} |")
    print("\nStreamed transcription (stream=true), medians [min-max] of the same interleaved rounds")
    print("| Audio | Not streamed | Streamed: first delta | Streamed: whole stream | First delta ÷ not streamed |")
    print("|---|---|---|---|---|")
    for minutes, b_times, firsts, totals, ratios in streams:
        ratio = f"{statistics.median(ratios):.3f}x [{min(ratios):.3f}-{max(ratios):.3f}]"
        print(f"| {minutes:g} min | {spread(b_times)} | {spread(firsts)} | {spread(totals)} | {ratio} |")
    if rss:
        size = (work / "rss.mp3").stat().st_size
        pcm_mb = args.rss_minutes * 60 * 16000 * 4 / 2**20
        print(f"\nPeak adapter RSS (VmHWM) for a {args.rss_minutes:g}-minute upload ({size / 1e6:.0f} MB MP3, {pcm_mb:.0f} MiB of PCM)")
        print("| AUDIO_TRANSFER | RSS before | RSS peak | Growth | Request | Decode |")
        print("|---|---|---|---|---|---|")
        for mode, idle, peak, elapsed, decode in rss:
            print(f"| {mode} | {idle:.0f} MiB | {peak:.0f} MiB | +{peak - idle:.0f} MiB | {elapsed:.0f} s | {decode:.1f} s |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
