"""The Triton server binary: taken from the `nvidia-pytriton` wheel on PyPI, which ships a complete
tritonserver 2.51 (24.10) with its Python backend. Production uses NVIDIA's container instead."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from passerelle_stack.paths import REPO, digest, home

log = logging.getLogger("passerelle.stack")
PYTRITON_VERSION = "0.7.0"
STUB_PYTHON = "3.11"
STANDIN = REPO / "triton-python" / "backends" / "vllm_standin"
STANDIN_MARKER = "passerelle's STAND-IN for Triton's vLLM backend"


@dataclass(frozen=True)
class TritonInstall:
    root: Path

    @property
    def binary(self) -> Path:
        return self.root / "bin" / "tritonserver"

    @property
    def backends(self) -> Path:
        return self.root / "backends"


def install_server() -> TritonInstall:
    dest = home() / "tritonserver" / f"pytriton-{PYTRITON_VERSION}"
    install = TritonInstall(dest / "pytriton" / "tritonserver")
    if not (dest / ".complete").exists():
        shutil.rmtree(dest, ignore_errors=True)
        log.info("installing tritonserver from nvidia-pytriton==%s into %s", PYTRITON_VERSION, dest)
        with tempfile.TemporaryDirectory() as download:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--quiet",
                    "--no-deps",
                    "--dest",
                    download,
                    f"nvidia-pytriton=={PYTRITON_VERSION}",
                ],
                check=True,
            )
            wheel = next(Path(download).glob("nvidia_pytriton-*.whl"))
            with zipfile.ZipFile(wheel) as archive:
                members = [m for m in archive.infolist() if m.filename.startswith(("pytriton/tritonserver/", "nvidia_pytriton.libs/"))]
                for member in members:
                    extracted = Path(archive.extract(member, dest))
                    if (member.external_attr >> 16) & 0o111:
                        extracted.chmod(0o755)
        # The stub must sit beside libtriton_python.so, at the depth its rpath to nvidia_pytriton.libs expects.
        stub = install.root / "python_backend_stubs" / STUB_PYTHON / "triton_python_backend_stub"
        shutil.copy2(stub, install.backends / "python" / "triton_python_backend_stub")
        install.binary.chmod(0o755)
        (dest / ".complete").touch()
    install_vllm_standin(install)
    return install


def install_vllm_standin(install: TritonInstall) -> None:
    """Install our vLLM backend stand-in as `backends/vllm/`, unless NVIDIA's real backend is there."""
    target = install.backends / "vllm"
    existing = target / "model.py"
    if existing.exists() and STANDIN_MARKER not in existing.read_text(encoding="utf-8"):
        log.info("NVIDIA's vLLM backend found in %s; the stand-in is not installed", target)
        return
    stamp = target / f".standin-{digest(STANDIN)}"
    if stamp.exists():
        return
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(STANDIN, target, ignore=shutil.ignore_patterns("__pycache__"))
    stamp.touch()
