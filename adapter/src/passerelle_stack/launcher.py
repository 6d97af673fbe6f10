"""Starts and stops one stack: tritonserver (explicit model control) and the adapter, on loopback."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from passerelle_stack import dashboard
from passerelle_stack.artifacts import ensure_artifacts
from passerelle_stack.environments import ENV_LOG, triton_env
from passerelle_stack.paths import home, model_cache_dir
from passerelle_stack.repository import render
from passerelle_stack.steps import step
from passerelle_stack.tritonserver import install_server

log = logging.getLogger("passerelle.stack")


def detect_profile() -> str:
    requested = os.environ.get("PROFILE", "auto")
    if requested != "auto":
        return requested
    try:
        found = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=False)
        return "gpu" if found.returncode == 0 and "GPU" in found.stdout else "cpu"
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return "cpu"


@dataclass
class StackConfig:
    run_dir: Path
    profile: str = "cpu"
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    adapter_port: int = 8080
    extra_repositories: list[Path] = field(default_factory=list)
    adapter_env: dict[str, str] = field(default_factory=dict)
    triton_niceness: int = 10  # CPU profile only: see start_triton

    @classmethod
    def on_free_ports(cls, run_dir: Path, profile: str = "cpu", adapter_env: dict[str, str] | None = None) -> StackConfig:
        """A stack on loopback ports that are free now (benchmarks and tests run beside other stacks)."""
        return cls(
            run_dir=run_dir,
            profile=profile,
            http_port=free_port(),
            grpc_port=free_port(),
            metrics_port=free_port(),
            adapter_port=free_port(),
            adapter_env=adapter_env or {},
        )


def lower_priority(niceness: int) -> None:
    """Lower this process's CPU priority, and its session's: run in a child after `setsid()`.

    With the kernel's autogroup scheduling (`/proc/sys/kernel/sched_autogroup_enabled`, on by
    default), the CPU is shared first between sessions and only then by niceness within one, so a
    niced process in a session of its own still competes with every other session as an equal. With
    two Tritons busy with vLLM (the test session's and the fault tests'), the adapters' event loops
    stalled for up to 22 s that way; with the session niced too, no stall over 1 s was seen. The
    session's own niceness is in `/proc/self/autogroup`."""
    os.nice(niceness)
    with contextlib.suppress(OSError):  # no autogroup scheduling in this kernel: the niceness above is what counts
        Path("/proc/self/autogroup").write_text(str(niceness))


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that the system reports free on `host` now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _wait_http(url: str, timeout: float, process: subprocess.Popen[bytes], what: str, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{what} was not ready within {timeout:.0f} s; see {log_path}")


class Stack:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.repository = config.run_dir / "model_repository"
        self.trace_file = config.run_dir / "triton-trace.json"
        self.cache = model_cache_dir()
        self.dashboard: Path | None = None  # the built dashboard, once prepare() ran

    @property
    def triton_http(self) -> str:
        return f"http://{self.config.host}:{self.config.http_port}"

    @property
    def triton_grpc(self) -> str:
        return f"{self.config.host}:{self.config.grpc_port}"

    @property
    def adapter_url(self) -> str:
        return f"http://{self.config.host}:{self.config.adapter_port}"

    def triton_environment(self, env_dir: Path) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            # The Python backend stub takes its prefix (and so its site-packages) from the first python3 on PATH.
            PATH=f"{env_dir / 'bin'}:{env.get('PATH', '')}",
            VIRTUAL_ENV=str(env_dir),
            HF_HOME=str(self.cache / "hf-home"),
            HF_HUB_CACHE=str(self.cache / "hub"),
            # The token the admin API stores (0600) is the one vLLM uses for gated downloads inside Triton.
            HF_TOKEN_PATH=str(self.cache / ".hf_token"),
            VLLM_HOST_IP="127.0.0.1",
            VLLM_NO_USAGE_STATS="1",
            # No vLLM plugins: NeMo registers one (nemo_speechlm) whose failed import leaves llvmlite
            # in vLLM's workers, where vLLM's CPU kernel rebinding then trips over it.
            VLLM_PLUGINS="",
            PYANNOTE_METRICS_ENABLED="false",
            DO_NOT_TRACK="1",
            TOKENIZERS_PARALLELISM="false",
        )
        if self.config.profile == "cpu":
            env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        return env

    def prepare(self) -> None:
        """Everything Triton needs, idempotent: its Python environment, the server, the models, the repository."""
        self.config.run_dir.mkdir(parents=True, exist_ok=True)
        logs = home() / "logs"
        retry = "then run the command again"
        with step("Triton's Python environment", logs / ENV_LOG, f"check that the package registry answers (uv pip sync), {retry}"):
            self.env_dir = triton_env()
        with step("tritonserver from the nvidia-pytriton wheel", None, f"check that PyPI answers (pip download nvidia-pytriton), {retry}"):
            self.install = install_server()
        variables = {"MODEL_CACHE_DIR": str(self.cache)}
        ensure_artifacts(self.config.profile, self.env_dir / "bin" / "python", variables, self.triton_environment(self.env_dir))
        with step("render the model repository", None, "check model_repository/*/profiles/*.json"):
            render(self.config.profile, self.repository, variables)
        # FRONTEND_DIST names a dashboard built elsewhere; otherwise set-up builds dashboard/.
        self.dashboard = None if os.environ.get("FRONTEND_DIST") else dashboard.build()

    def _spawn(self, name: str, command: list[str], env: dict[str, str], niceness: int = 0) -> Path:
        log_path = self.config.run_dir / f"{name}.log"
        handle = log_path.open("ab")
        # cwd is the run folder: the embedded interpreters put it on sys.path, and nothing there may shadow a package.
        self.processes[name] = subprocess.Popen(
            command,
            env=env,
            cwd=self.config.run_dir,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=(lambda: lower_priority(niceness)) if niceness else None,
        )
        handle.close()
        return log_path

    def start_triton(self, timeout: float = 120) -> None:
        c = self.config
        command = [
            str(self.install.binary),
            f"--model-repository={self.repository}",
            *(f"--model-repository={extra}" for extra in c.extra_repositories),
            f"--backend-directory={self.install.backends}",
            "--model-control-mode=explicit",
            f"--http-address={c.host}",
            f"--http-port={c.http_port}",
            f"--grpc-address={c.host}",
            f"--grpc-port={c.grpc_port}",
            f"--metrics-address={c.host}",
            f"--metrics-port={c.metrics_port}",
            f"--allow-gpu-metrics={'true' if c.profile == 'gpu' else 'false'}",
            "--exit-timeout-secs=15",
            # Server readiness means the server is up; one model failing to load must not make it "not ready".
            "--strict-readiness=false",
            "--backend-config=python,shm-default-byte-size=16777216",
            # Audio tensors are large (an hour of 16 kHz float32 PCM is 230 MB): grow the Python
            # backend's shared memory in big steps rather than the default 1 MB.
            "--backend-config=python,shm-growth-byte-size=67108864",
            # Request tracing is off until an operator turns it on, per model, with Triton's trace API
            # (POST /v2/models/<model>/trace/setting); traces then go to this file (docs/triton.md).
            f"--trace-config=triton,file={self.trace_file}",
            "--trace-config=triton,log-frequency=1",
            "--trace-config=level=OFF",
        ]
        # The small `system` model reports GPUs (NVML) and Triton's Python dependencies to the admin API.
        if (self.repository / "system" / "config.pbtxt").is_file():
            command.append("--load-model=system")
        # On the CPU profile the engines share the host's few cores with the adapter. The engines'
        # busy threads (vLLM's workers spin) delayed the adapter's wake-ups by seconds, enough to
        # miss a client's disconnect until a whole generation had run; a lower priority for Triton
        # keeps the front end responsive. GPU hosts do their heavy work on the GPU: no change there.
        niceness = self.config.triton_niceness if self.config.profile == "cpu" else 0
        log_path = self._spawn("tritonserver", command, self.triton_environment(self.env_dir), niceness=niceness)
        _wait_http(f"{self.triton_http}/v2/health/live", timeout, self.processes["tritonserver"], "tritonserver", log_path)

    def adapter_environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            ADAPTER_HOST=self.config.host,
            ADAPTER_PORT=str(self.config.adapter_port),
            TRITON_GRPC_URL=self.triton_grpc,
            TRITON_HTTP_URL=self.triton_http,
            TRITON_METRICS_URL=f"http://{self.config.host}:{self.config.metrics_port}/metrics",
            MODEL_REPOSITORY=",".join(str(path) for path in [self.repository, *self.config.extra_repositories]),
            MODEL_CACHE_DIR=str(self.cache),
            PROFILE=self.config.profile,
            HF_HUB_OFFLINE="1" if self.config.profile == "cpu" else env.get("HF_HUB_OFFLINE", "0"),
        )
        if self.dashboard is not None:
            env.setdefault("FRONTEND_DIST", str(self.dashboard))
        env.update(self.config.adapter_env)
        return env

    def start_adapter(
        self, timeout: float = 120, *, name: str = "adapter", port: int | None = None, env: dict[str, str] | None = None
    ) -> str:
        """Start an adapter (tests start extra ones with other settings); returns its base URL."""
        environment = self.adapter_environment()
        port = port or self.config.adapter_port
        environment.update(ADAPTER_PORT=str(port), **(env or {}))
        log_path = self._spawn(name, [sys.executable, "-m", "passerelle"], environment)
        url = f"http://{self.config.host}:{port}"
        _wait_http(f"{url}/openapi.json", timeout, self.processes[name], name, log_path)
        return url

    def stop(self, timeout: float = 30, names: list[str] | None = None) -> None:
        """SIGTERM each process group (vLLM's engine core is a child of the stub), then SIGKILL stragglers."""
        if names is None:
            names = [name for name in self.processes if name != "tritonserver"] + ["tritonserver"]
        for name in names:
            process = self.processes.pop(name, None)
            if process is None:
                continue
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %s s; killing it", name, timeout)
            except ProcessLookupError:
                pass
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
