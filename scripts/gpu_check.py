#!/usr/bin/env python3
"""Everything that needs a GPU, in one run: Canary and pyannote in Triton with production-shaped random weights.

    scripts/gpu_check [--dry-run] [--out DIR] [--audio-seconds S] [--decode-tokens-per-second N]

Full run (a GPU host): tritonserver from the nvidia-pytriton wheel (passerelle_stack.tritonserver), the models
placed with KIND_GPU, canary-1b-v2's dimensions and community-1's architecture built on the host by the tiny
builders (``--shape production``, random weights), a few minutes of espeak-ng dialogue.  Dry run (``--dry-run``,
any machine, part of the test suite): the same steps with the tiny shapes, KIND_CPU and a minute of audio.

It reports Canary's RTFx (audio seconds / wall seconds) and the diarization's real-time factor (wall / audio)
beside the published figures, GPU memory per model (NVML: each Triton model instance is its own stub process),
and Triton's DCGM metrics (``nv_gpu_*`` on its /metrics port).  Random weights decode to arbitrary lengths, so
Canary decodes exactly N tokens per second of audio (``fixed_decode_tokens_per_second``, a canary parameter set
only here; the model's log says how many tokens it forced, and the report checks them).  A JSON report goes to
``DIR/gpu-check.json``; a short table is printed last.  GPU figures read "n/a (no GPU)" where no GPU was used.
Parts the host cannot run (a Python package missing from Triton's Python) are reported as "not run: why".
See docs/gpu_check.md.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import math
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import threading
import time
import urllib.request
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from passerelle_stack.environments import triton_env
from passerelle_stack.launcher import Stack, StackConfig
from passerelle_stack.paths import REPO, digest, home
from passerelle_stack.repository import SOURCE, render
from passerelle_stack.tritonserver import PYTRITON_VERSION, STUB_PYTHON, TritonInstall, install_server

sys.path.insert(0, str(REPO / "tests"))  # the tests' espeak-ng dialogue (speech.py)

import speech

SAMPLE_RATE = 16000
PUBLISHED_CANARY_RTFX = 749.0  # canary-1b-v2's RTFx on the Hugging Face Open ASR leaderboard (docs/gpu_check.md)
PUBLISHED_DIARIZATION_RTF = 0.0086  # community-1's real-time factor, 0.86 % (docs/gpu_check.md)
DEFAULT_DECODE_TOKENS_PER_SECOND = 4.0
NO_GPU = "n/a (no GPU)"
GPU_METRIC_FAMILIES = (
    "nv_gpu_utilization",
    "nv_gpu_memory_used_bytes",
    "nv_gpu_memory_total_bytes",
    "nv_gpu_power_usage",
    "nv_gpu_power_limit",
    "nv_energy_consumption",
)
MIB = 2**20
# What the Triton-side Python must hold for each part (distribution names), checked before anything starts.
NEEDS = {
    "canary": ("torch", "nemo_toolkit", "silero-vad", "numpy"),
    "pyannote": ("torch", "pyannote.audio", "numpy"),
}
PROBE = """
import ctypes.util, importlib.metadata as metadata, importlib.util, json, platform, sys
facts = {"python": platform.python_version(), "executable": sys.executable, "packages": {}}
for name in ("torch", "numpy", "nemo_toolkit", "pyannote.audio", "silero-vad", "nvidia-ml-py", "passerelle-triton"):
    try:
        facts["packages"][name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        facts["packages"][name] = None
facts["passerelle_triton_importable"] = importlib.util.find_spec("passerelle_triton") is not None
version = ".".join(platform.python_version_tuple()[:2])
facts["libpython"] = ctypes.util.find_library("python" + version)
try:
    import torch
    facts["torch_cuda"] = torch.version.cuda
    facts["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
except Exception as error:
    facts["torch_error"] = repr(error)
print(json.dumps(facts))
"""


@dataclass(frozen=True)
class Mode:
    dry_run: bool
    shape: str  # the builders' --shape
    kind: str  # Triton instance kind
    profile: str  # StackConfig profile: "cpu" lowers Triton's priority, "gpu" turns GPU metrics on
    audio_seconds: float
    warm_up_seconds: float
    repeats: int
    time_limit_s: float
    canary_batch_size: str
    embedding_batch_size: str
    segmentation_batch_size: str


def mode_for(args: argparse.Namespace) -> Mode:
    if args.dry_run:
        return Mode(
            True, "tiny", "KIND_CPU", "cpu", args.audio_seconds or 60.0, 10.0, args.repeats or 1, args.time_limit or 200.0, "4", "4", "8"
        )
    return Mode(
        False,
        "production",
        "KIND_GPU",
        "gpu",
        args.audio_seconds or 300.0,
        30.0,
        args.repeats or 3,
        args.time_limit or 570.0,
        "8",
        "32",
        "32",
    )


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.started = time.monotonic()
        self.end = self.started + seconds
        self.phases: dict[str, float] = {}  # phase -> seconds from the start when it ended

    def phase(self, name: str) -> None:
        self.phases[name] = round(time.monotonic() - self.started, 1)
        print(f"  {self.phases[name]:6.1f} s  {name}", flush=True)

    def left(self, floor: float = 1.0) -> float:
        remaining = self.end - time.monotonic()
        if remaining < floor:
            raise TimeoutError("the run's time limit was reached")
        return remaining


@dataclass
class Part:
    """One model's figures; `skipped` says why it did not run (missing packages, time, failure)."""

    name: str
    skipped: str | None = None
    loaded: bool = False
    load_seconds: float | None = None
    walls: list[float] = field(default_factory=list)
    gpu_memory_after_load_mib: float | None = None
    gpu_memory_after_runs_mib: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def run_json(command: list[str], env: dict[str, str] | None = None, timeout: float = 120) -> dict[str, Any]:
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, check=True)
    facts: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return facts


# --- the host: GPU, Triton's Python, the server ---------------------------------------------------------------


def gpu_processes() -> dict[int, float] | None:
    """Memory (MiB) per process on GPU 0, through NVML (nvidia-ml-py, else nvidia-smi); None without a GPU."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            return {p.pid: (p.usedGpuMemory or 0) / MIB for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle)}
        finally:
            pynvml.nvmlShutdown()
    except ImportError:
        pass
    except Exception:  # noqa: BLE001 - NVML present but no GPU: the same as no GPU
        return None
    if not shutil.which("nvidia-smi"):
        return None
    query = ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits", "--id=0"]
    found = subprocess.run(query, capture_output=True, text=True, timeout=30, check=False)
    if found.returncode != 0:
        return None
    rows = [line.split(",") for line in found.stdout.strip().splitlines() if line.strip()]
    return {int(pid): float(used) for pid, used in rows}


def gpu_name() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    found = subprocess.run(
        ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "--id=0"], capture_output=True, text=True, timeout=30
    )
    return found.stdout.strip() or None if found.returncode == 0 else None


def overlay_env(host_python: Path, where: Path) -> Path:
    """A venv whose site-packages reach `host_python`'s and the repository's passerelle_triton (no install, no network).

    The Python backend stub takes its packages from the first python3 on PATH and ignores PYTHONPATH, so the
    Triton side gets this venv; its .pth adds the host's site directories (their own .pth files included) and
    runs passerelle_triton's start-up hook (the UTF-8 locale), as the package's installed .pth does.
    """
    probe = "import json, site, sys; print(json.dumps({'prefix': sys.prefix, 'site': site.getsitepackages()}))"
    facts = run_json([str(host_python), "-c", probe])
    prefix, site_dirs = facts["prefix"], facts["site"]
    shutil.rmtree(where, ignore_errors=True)
    subprocess.run([str(host_python), "-m", "venv", "--without-pip", str(where)], check=True)
    site_packages = next((where / "lib").glob("python3*/site-packages"))
    lines = [f"import site; site.addsitedir({str(path)!r})" for path in site_dirs]
    lines += [str(REPO / "triton-python" / "passerelle_triton" / "src"), "import passerelle_triton.embedded_startup"]
    (site_packages / "passerelle_gpu_check.pth").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"Triton's Python: {host_python} (prefix {prefix}) through the overlay venv {where}", flush=True)
    return where


def unpack_carried_server(tarball: Path) -> None:
    """The carried tritonserver (see --pack-carry) into PASSERELLE_HOME, where install_server() finds it."""
    dest = home() / "tritonserver"
    if (dest / f"pytriton-{PYTRITON_VERSION}" / ".complete").exists():
        return
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball) as archive:
        members = archive.getmembers()
        for member in members:  # what filter="data" checks, which Python 3.11 has only from 3.11.4 on
            name = Path(member.name)
            if name.is_absolute() or ".." in name.parts or not (member.isfile() or member.isdir()):
                raise SystemExit(f"{tarball}: refusing to extract {member.name!r}")
        archive.extractall(dest, members=members)  # members checked above
    print(f"tritonserver unpacked from {tarball}", flush=True)


def pack_carry(carry: Path, speech_root: Path) -> None:
    """What an air-gapped GPU host needs from this machine, under `carry`: tritonserver's files and the dialogue."""
    install = install_server()
    carry.mkdir(parents=True, exist_ok=True)
    top = install.root.parents[1]
    kept_stubs = {STUB_PYTHON, "3.12"}

    def wanted(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        parts = Path(info.name).parts
        if "__pycache__" in parts or (len(parts) > 1 and parts[1] == "nvidia_pytriton.libs" and "libpython3" in parts[-1]):
            return None  # the 3.13 stub's libpython: the stubs kept link the host's libpython
        if "python_backend_stubs" in parts and len(parts) > 4 and parts[4] not in kept_stubs:
            return None
        if parts[3:5] == ("backends", "vllm"):
            return None  # install_server() puts the stand-in back from the repository
        return info

    with tarfile.open(carry / "tritonserver.tar.gz", "w:gz") as archive:
        archive.add(top, arcname=top.name, filter=wanted)
    dialogue = speech.build(speech_root).dialogue
    shutil.copy2(dialogue, carry / "dialogue.wav")
    for path in sorted(carry.iterdir()):
        print(f"{path}: {path.stat().st_size / MIB:.1f} MiB")


def triton_for_python(install: TritonInstall, version: str, where: Path) -> TritonInstall:
    """The server with the stub of `version` beside libtriton_python.so, at the depth its rpath expects.

    install_server() places the 3.11 stub; another Python gets a mirror tree whose bin/ and nvidia_pytriton.libs
    are links to the install and whose backends/python holds copies (the loader resolves $ORIGIN on the copies).
    """
    if version == STUB_PYTHON:
        return install
    stub = install.root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise SystemExit(f"the nvidia-pytriton wheel has no Python backend stub for Python {version}")
    top = where / f"tritonserver-py{version}"
    shutil.rmtree(top, ignore_errors=True)
    root = top / "pytriton" / "tritonserver"
    python_backend = root / "backends" / "python"
    python_backend.mkdir(parents=True)
    (root / "bin").symlink_to(install.root / "bin")
    (top / "nvidia_pytriton.libs").symlink_to(install.root.parents[1] / "nvidia_pytriton.libs")
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        shutil.copy2(install.backends / "python" / name, python_backend / name)
    shutil.copy2(stub, python_backend / "triton_python_backend_stub")
    return TritonInstall(root)


# --- models ------------------------------------------------------------------------------------------------------


def build_model(model: str, builder: str, options: list[str], python: Path, env: dict[str, str], timeout: float) -> Path:
    """Run a builder once per (shape, options, builder hash) into PASSERELLE_HOME/gpu-check; returns the folder."""
    script = REPO / "scripts" / builder
    key = digest(script, REPO / "scripts" / "tiny_build_report.py")
    target = home() / "gpu-check" / "models" / f"{model}-{'-'.join(o.strip('-') for o in options)}-{key}"
    if (target / ".complete").exists():
        return target
    staging = target.with_name(target.name + ".building")
    shutil.rmtree(staging, ignore_errors=True)
    log = staging.with_suffix(".log")
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log.open("wb") as handle:
        result = subprocess.run(
            [str(python), str(script), "--out", str(staging), *options], env=env, stdout=handle, stderr=subprocess.STDOUT, timeout=timeout
        )
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"{builder} {' '.join(options)} failed (exit {result.returncode}); log {log}:\n{tail}")
    (staging / ".complete").touch()
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    print(f"built {model} ({' '.join(options)}) in {time.monotonic() - started:.0f} s: {target}", flush=True)
    return target


def source_parameters(model: str) -> dict[str, str]:
    config = model_config_pb2.ModelConfig()
    text_format.Parse((SOURCE / model / "config.pbtxt").read_text(encoding="utf-8"), config)
    return {key: value.string_value for key, value in config.parameters.items()}


def write_repository(stack: Stack, mode: Mode, built: dict[str, Path], decode_tokens_per_second: float) -> None:
    """Render canary and pyannote with a `gpu-check` profile, through passerelle_stack.repository.render."""
    source = stack.config.run_dir / "repository-source"
    shutil.rmtree(source, ignore_errors=True)
    cpu_only = {"cpu_threads": "1"} if mode.kind == "KIND_CPU" else {}
    nemo = next(built["canary"].glob("*.nemo")).name if "canary" in built else ""
    overrides = {
        "canary": {
            "model": str(built.get("canary", "")),
            "nemo_file": nemo,
            "batch_size": mode.canary_batch_size,
            "fixed_decode_tokens_per_second": f"{decode_tokens_per_second:g}",
            **cpu_only,
        },
        "pyannote": {
            "model": str(built.get("pyannote", "")),
            "embedding_batch_size": mode.embedding_batch_size,
            "segmentation_batch_size": mode.segmentation_batch_size,
            **cpu_only,
        },
    }
    for model, changed in overrides.items():
        shutil.copytree(SOURCE / model, source / model, ignore=shutil.ignore_patterns("profiles", "__pycache__"))
        parameters = {key: {"string_value": value} for key, value in {**source_parameters(model), **changed}.items()}
        profile = {"config": {"instance_group": [{"count": 1, "kind": mode.kind}], "parameters": parameters}}
        (source / model / "profiles").mkdir()
        (source / model / "profiles" / "gpu-check.json").write_text(json.dumps(profile, indent=2), encoding="utf-8")
    render("gpu-check", stack.repository, {}, source=source)


def stub_pids(triton_pid: int) -> dict[str, int]:
    """Model name -> its stub process (each Python-backend instance runs as a child of tritonserver)."""
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == triton_pid and len(args) > 1 and args[0].endswith(b"triton_python_backend_stub"):
            found[Path(args[1].decode()).parts[-3]] = int(entry.name)
    return found


def model_gpu_mib(stack: Stack, model: str) -> float | None:
    """The model's stub process's GPU memory; None on the CPU profile (KIND_CPU) or without a GPU."""
    processes = gpu_processes() if stack.config.profile == "gpu" else None
    if processes is None:
        return None
    pid = stub_pids(stack.processes["tritonserver"].pid).get(model)
    return processes.get(pid, 0.0) if pid else None


def load(client: grpcclient.InferenceServerClient, stack: Stack, part: Part, deadline: Deadline) -> None:
    started = time.monotonic()
    try:
        client.load_model(part.name, client_timeout=deadline.left(10))
    except Exception as error:  # noqa: BLE001 - reported, with the server log's pointer
        part.skipped = f"load failed: {str(error)[:300]} (see {stack.config.run_dir / 'tritonserver.log'})"
        return
    part.loaded, part.load_seconds = True, time.monotonic() - started
    part.gpu_memory_after_load_mib = model_gpu_mib(stack, part.name)


def timed_infer(client: grpcclient.InferenceServerClient, model: str, pcm: np.ndarray, deadline: Deadline) -> float:
    tensor = grpcclient.InferInput("audio", [pcm.size], "FP32")
    tensor.set_data_from_numpy(pcm)
    started = time.perf_counter()
    client.infer(model, [tensor], client_timeout=deadline.left(5))
    return time.perf_counter() - started


def forced_decode_lines(log_path: Path) -> list[tuple[float, int, int]]:
    """(audio seconds, tokens expected, tokens generated) for each canary request, from the model's log line."""
    pattern = re.compile(r"\[canary\] fixed decode: [\d.]+ tokens/s, audio ([\d.]+) s, \d+ windows, tokens expected (\d+), generated (\d+)")
    text = log_path.read_text(errors="replace") if log_path.is_file() else ""
    return [(float(a), int(e), int(g)) for a, e, g in pattern.findall(text)]


def measure(client: grpcclient.InferenceServerClient, part: Part, pcm: np.ndarray, mode: Mode, deadline: Deadline) -> None:
    """One warm-up request on the first seconds, then `mode.repeats` timed requests on the whole audio."""
    try:
        timed_infer(client, part.name, pcm[: int(mode.warm_up_seconds * SAMPLE_RATE)], deadline)
        for _ in range(mode.repeats):
            part.walls.append(timed_infer(client, part.name, pcm, deadline))
    except Exception as error:  # noqa: BLE001 - reported as the part's failure
        part.skipped = f"inference failed after {len(part.walls)} timed runs: {str(error)[:300]}"


def scrape_metrics(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r"^(nv_\w+)(\{[^}]*\})?\s+(\S+)$", line)
        if match:
            values[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return values


class MetricsSampler:
    """Samples Triton's /metrics every `interval` seconds while the models run: DCGM's gauges are instantaneous."""

    def __init__(self, url: str, interval: float = 1.0) -> None:
        self.url, self.interval = url, interval
        self.samples: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self.samples.append(scrape_metrics(self.url))
            self._stop.wait(self.interval)

    def __enter__(self) -> MetricsSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)
        with contextlib.suppress(OSError):
            self.samples.append(scrape_metrics(self.url))

    def summary(self) -> dict[str, float]:
        """Per GPU series: the peak over the samples; nv_energy_consumption: the energy used between first and last."""
        keys = {key for sample in self.samples for key in sample if key.startswith(("nv_gpu_", "nv_energy_"))}
        found: dict[str, float] = {}
        for key in sorted(keys):
            values = [sample[key] for sample in self.samples if key in sample]
            found[key] = values[-1] - values[0] if key.startswith("nv_energy_") else max(values)
        return found


# --- audio -------------------------------------------------------------------------------------------------------


def dialogue_pcm(seconds: float, work: Path, speech_wav: Path | None) -> tuple[np.ndarray, str]:
    """espeak-ng's two-voice dialogue (tests/speech.py), looped to `seconds`; a carried WAV where espeak-ng is missing."""
    if speech_wav is None and shutil.which("espeak-ng") and shutil.which("ffmpeg"):
        speech_wav, origin = speech.build(work / "speech").dialogue, "espeak-ng dialogue (tests/speech.py)"
    elif speech_wav is None:
        raise SystemExit("espeak-ng or ffmpeg is missing: pass --speech-wav (a 16 kHz mono 16-bit WAV; --pack-carry writes one)")
    else:
        origin = f"{speech_wav}"
    with wave.open(str(speech_wav)) as source:
        if (source.getframerate(), source.getnchannels(), source.getsampwidth()) != (SAMPLE_RATE, 1, 2):
            raise SystemExit(f"{speech_wav}: expected 16 kHz mono 16-bit PCM")
        one = np.frombuffer(source.readframes(source.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
    total = int(seconds * SAMPLE_RATE)
    return np.tile(one, math.ceil(total / one.size))[:total].copy(), f"{origin}, {one.size / SAMPLE_RATE:.1f} s looped"


# --- the report --------------------------------------------------------------------------------------------------


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def figure(value: float | None, fmt: str, unavailable: str) -> str:
    return unavailable if value is None else format(value, fmt)


def table_rows(report: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    gpu = report["gpu"]["name"] is not None and not report["dry_run"]
    gpu_na = NO_GPU if not gpu else "n/a"
    canary, pyannote = report["parts"]["canary"], report["parts"]["pyannote"]

    def status(part: dict[str, Any]) -> str:
        return f"not run: {part['skipped']}" if part["skipped"] else ""

    shape = "tiny shapes, KIND_CPU (dry run)" if report["dry_run"] else "production shapes, random weights, KIND_GPU"
    decode = report["decode"]
    rows = [
        ("Canary RTFx (audio s / wall s)", figure(canary["rtfx"], ".1f", "n/a"), f"{PUBLISHED_CANARY_RTFX:g}", status(canary) or shape),
        (
            "decode length N (tokens per s of audio)",
            f"{decode['tokens_per_second']:g}",
            "-",
            f"forced; generated {figure(decode['generated_tokens_per_audio_second'], '.2f', 'n/a')} tokens per s of audio",
        ),
        (
            "diarization RTF (wall / audio)",
            figure(None if pyannote["rtf"] is None else 100 * pyannote["rtf"], ".3f", "n/a")
            + (" %" if pyannote["rtf"] is not None else ""),
            f"{100 * PUBLISHED_DIARIZATION_RTF:g} %",
            status(pyannote) or shape,
        ),
    ]
    for name, part in (("canary", canary), ("pyannote", pyannote)):
        memory = part["gpu_memory_after_runs_mib"]
        rows.append(
            (
                f"{name} GPU memory (MiB, after runs)",
                figure(memory, ".0f", gpu_na),
                "-",
                f"after load {figure(part['gpu_memory_after_load_mib'], '.0f', gpu_na)}",
            )
        )
        rows.append((f"{name} load (s)", figure(part["load_seconds"], ".1f", "n/a"), "-", status(part) or "Triton load_model"))
    metrics = report["dcgm"]
    for family in GPU_METRIC_FAMILIES:
        values = [value for key, value in metrics.items() if key.split("{")[0] == family]
        note = (
            "Triton /metrics (DCGM), used during the runs"
            if family == "nv_energy_consumption"
            else "Triton /metrics (DCGM), peak during the runs"
        )
        rows.append((family, f"{sum(values):.4g}" if values and gpu else NO_GPU, "-", note))
    rows.append(
        (
            "GPU",
            report["gpu"]["name"] if gpu else NO_GPU,
            "-",
            f"audio {report['audio']['seconds']:g} s, {report['wall_seconds']:.0f} s in all",
        )
    )
    return rows


def print_table(rows: list[tuple[str, str, str, str]]) -> None:
    header = ("metric", "measured", "published", "note")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header[:3], widths, strict=True)) + " | note |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|---|")
    for row in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row[:3], widths, strict=True)) + f" | {row[3]} |", flush=True)


# --- the run -----------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes, KIND_CPU, a minute of audio (the test suite runs it)")
    parser.add_argument("--out", type=Path, default=REPO / "artifacts" / "gpu-check" / "out", help="report folder (gpu-check.json, logs)")
    parser.add_argument("--audio-seconds", type=float, default=None, help="length of the looped dialogue (default 300; dry run 60)")
    parser.add_argument("--repeats", type=int, default=None, help="timed requests per model (default 3; dry run 1)")
    parser.add_argument("--decode-tokens-per-second", type=float, default=DEFAULT_DECODE_TOKENS_PER_SECOND, help="N (default 4)")
    parser.add_argument("--time-limit", type=float, default=None, help="seconds for the whole run (default 570; dry run 170)")
    parser.add_argument("--triton-python", type=Path, default=None, help="the Python for Triton's models (full run; default: this one)")
    parser.add_argument("--carry", type=Path, default=REPO / "artifacts" / "gpu-check" / "carry", help="tritonserver.tar.gz, dialogue.wav")
    parser.add_argument("--speech-wav", type=Path, default=None, help="16 kHz mono WAV to loop instead of espeak-ng's dialogue")
    parser.add_argument("--pack-carry", action="store_true", help="write what an air-gapped host needs into --carry, then stop")
    args = parser.parse_args()
    started = time.monotonic()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.pack_carry:
        pack_carry(args.carry, out / "speech")
        return 0

    mode = mode_for(args)
    deadline = Deadline(mode.time_limit_s)
    run_dir = out / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    print(f"gpu_check ({'dry run' if mode.dry_run else 'full run'}): out {out}, time limit {mode.time_limit_s:.0f} s", flush=True)

    # The host: Triton's Python (the set-up's environment in a dry run, the host's own on a GPU host) and the server.
    env_dir = triton_env() if mode.dry_run else overlay_env(args.triton_python or Path(sys.executable), run_dir / "triton-venv")
    python = env_dir / "bin" / "python"
    deadline.phase("Triton's Python")
    host = run_json([str(python), "-c", PROBE], timeout=deadline.left())
    deadline.phase("host probe")
    carried = args.carry / "tritonserver.tar.gz"
    if carried.is_file():
        unpack_carried_server(carried)
    stub_version = ".".join(host["python"].split(".")[:2])
    install = triton_for_python(install_server(), stub_version, run_dir)
    stack = Stack(StackConfig.on_free_ports(run_dir, profile=mode.profile))
    stack.env_dir, stack.install = env_dir, install
    environment = stack.triton_environment(env_dir)
    gpu = gpu_name()
    print(f"host: GPU {gpu or 'none'}; Triton's Python {host['python']} {json.dumps(host['packages'])}", flush=True)

    parts = {name: Part(name) for name in NEEDS}
    for name, needs in NEEDS.items():
        missing = [package for package in needs if not host["packages"].get(package)]
        if missing:
            parts[name].skipped = f"{', '.join(missing)} missing from {python}"
        elif not mode.dry_run and not host.get("cuda_devices"):
            parts[name].skipped = f"torch {host['packages']['torch']} sees no CUDA device"
    numpy_version = host["packages"].get("numpy") or "0"
    if int(numpy_version.split(".")[0]) >= 2:
        for part in parts.values():
            part.skipped = part.skipped or f"numpy {numpy_version}: Triton 2.51's Python backend needs numpy < 2 (docs/gpu_check.md)"

    # The models, built by the tiny builders (in parallel) with Triton's Python, then the repository.
    builders = {
        "canary": ("build_tiny_canary.py", ["--shape", mode.shape, "--random-decoder"]),
        "pyannote": ("build_tiny_pyannote.py", ["--shape", mode.shape, "--random-weights"]),
    }
    built: dict[str, Path] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        audio = pool.submit(dialogue_pcm, mode.audio_seconds, out, args.speech_wav)
        futures = {
            name: pool.submit(build_model, name, builder, options, python, environment, deadline.left(30))
            for name, (builder, options) in builders.items()
            if not parts[name].skipped
        }
        for name, future in futures.items():
            try:
                built[name] = future.result()
            except Exception as error:  # noqa: BLE001 - the part is reported as not run
                parts[name].skipped = f"build failed: {str(error)[:400]}"
        pcm, audio_origin = audio.result()
    audio_seconds = pcm.size / SAMPLE_RATE
    deadline.phase("models built, audio spoken")
    write_repository(stack, mode, built, args.decode_tokens_per_second)

    metrics: dict[str, float] = {}
    dcgm: dict[str, float] = {}
    try:
        stack.start_triton(timeout=min(120.0, deadline.left()))
        deadline.phase("tritonserver started")
        with grpcclient.InferenceServerClient(stack.triton_grpc) as client:
            runnable = [part for part in parts.values() if not part.skipped]
            # Loaded side by side (mostly imports); GPU memory is read per model from its own stub process.
            with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
                list(pool.map(lambda part: load(client, stack, part, deadline), runnable))
            deadline.phase("models loaded")
            sampler = MetricsSampler(f"http://{stack.config.host}:{stack.config.metrics_port}/metrics")
            with sampler:
                for part in runnable:
                    if part.loaded:
                        measure(client, part, pcm, mode, deadline)
                        part.gpu_memory_after_runs_mib = model_gpu_mib(stack, part.name)
            metrics = sampler.samples[-1] if sampler.samples else {}
            dcgm = sampler.summary()
            deadline.phase("models measured")
    except TimeoutError as error:
        for part in parts.values():
            part.skipped = part.skipped or str(error)
    finally:
        stack.stop()

    forced = forced_decode_lines(run_dir / "tritonserver.log")
    timed = forced[-len(parts["canary"].walls) :] if parts["canary"].walls else []
    report: dict[str, Any] = {
        "dry_run": mode.dry_run,
        "mode": {"shape": mode.shape, "kind": mode.kind, "repeats": mode.repeats, "canary_batch_size": mode.canary_batch_size},
        "gpu": {"name": gpu},
        "host": host,
        "audio": {"seconds": audio_seconds, "origin": audio_origin},
        "decode": {
            "tokens_per_second": args.decode_tokens_per_second,
            "timed_requests": [{"audio_seconds": a, "expected": e, "generated": g} for a, e, g in timed],
            "generated_tokens_per_audio_second": (sum(g for _, _, g in timed) / sum(a for a, _, _ in timed)) if timed else None,
        },
        "parts": {},
        # Peaks of 1 s samples taken while the models ran (energy: joules used over that time).
        "dcgm": dcgm,
        "inference_counts": {key: value for key, value in metrics.items() if key.startswith("nv_inference_request_success")},
        "published": {"canary_rtfx": PUBLISHED_CANARY_RTFX, "diarization_rtf": PUBLISHED_DIARIZATION_RTF},
    }
    for name, part in parts.items():
        wall = median(part.walls)
        report["parts"][name] = {
            "skipped": part.skipped,
            "loaded": part.loaded,
            "load_seconds": part.load_seconds,
            "walls": part.walls,
            "rtfx": audio_seconds / wall if wall and name == "canary" else None,
            "rtf": wall / audio_seconds if wall and name == "pyannote" else None,
            "gpu_memory_after_load_mib": part.gpu_memory_after_load_mib,
            "gpu_memory_after_runs_mib": part.gpu_memory_after_runs_mib,
            "model_dir": str(built.get(name, "")),
        }
    shortfall = [entry for entry in report["decode"]["timed_requests"] if entry["generated"] != entry["expected"]]
    if shortfall:
        report["parts"]["canary"]["skipped"] = f"forced decode fell short of N in {len(shortfall)} requests (NeMo's length cap?)"
    report["wall_seconds"] = time.monotonic() - started
    report["phases"] = deadline.phases
    (out / "gpu-check.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    complete = all(part["skipped"] is None and part["walls"] for part in report["parts"].values())
    print(f"\nreport: {out / 'gpu-check.json'}; Triton log: {run_dir / 'tritonserver.log'}")
    print(f"N = {args.decode_tokens_per_second:g} tokens per second of audio (Canary's forced decode length)\n", flush=True)
    print_table(table_rows(report))
    return 0 if complete else 1


if __name__ == "__main__":
    raise SystemExit(main())
