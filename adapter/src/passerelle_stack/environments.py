"""Triton's Python environment: built from Debian's python3.11 (the interpreter whose
libpython the Python backend stub links), synced from triton/requirements.lock, cached
under PASSERELLE_HOME keyed by the lock's hash."""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

from passerelle_stack.paths import REPO, digest, home, local_wheels, uv

log = logging.getLogger("passerelle.stack")
BASE_PYTHON = "/usr/bin/python3.11"
LOCK = REPO / "triton-python" / "requirements.lock"
SHARED_PACKAGE = REPO / "triton-python" / "passerelle_triton"


ENV_LOG = "triton-env.log"


def _run(*args: str) -> None:
    """Run an installer step with its output appended to the environment's log (named by a failed set-up)."""
    log_path = home() / "logs" / ENV_LOG
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as handle:
        handle.write(f"$ {' '.join(args)}\n".encode())
        handle.flush()
        subprocess.run(list(args), check=True, stdout=handle, stderr=subprocess.STDOUT)


def _neutralise_torchvision_ops(site_packages: Path) -> None:
    """PyPI's torchvision is CUDA-linked: beside CPU torch its `_C` extension cannot load, yet its
    `_meta_registrations.py` registers fake kernels for `torchvision::nms`/`qnms` unconditionally and
    fails with "operator torchvision::nms does not exist". Qwen-VL's image processor only needs
    torchvision's Python transforms, so the two registrations are made conditional on the ops
    existing, exactly as torchvision already does for its other meta kernels."""
    path = site_packages / "torchvision" / "_meta_registrations.py"
    if not path.is_file():
        return
    source = path.read_text(encoding="utf-8")
    for op in ("nms", "qnms"):
        plain = f'@torch.library.register_fake("torchvision::{op}")'
        guarded = f'@(torch.library.register_fake("torchvision::{op}") if torchvision.extension._has_ops() else (lambda fn: fn))'
        if plain in source and guarded not in source:
            source = source.replace(plain, guarded)
    path.write_text(source, encoding="utf-8")


def _strip_torchaudio_libraries(site_packages: Path) -> None:
    """PyPI's torchaudio is CUDA-linked (`_torchaudio.abi3.so` needs libc10_cuda.so), and pyannote
    imports it unconditionally. Without its libraries torchaudio falls back to pure Python, which is
    all pyannote uses here (Kaldi fbank, resampling); audio arrives already decoded."""
    for library in (site_packages / "torchaudio" / "lib").glob("*.so"):
        library.unlink()


def triton_env() -> Path:
    env = home() / "envs" / f"triton-{digest(LOCK)}"
    python = env / "bin" / "python"
    done = env / ".complete"
    if not done.exists():
        shutil.rmtree(env, ignore_errors=True)
        log.info("building Triton's Python environment in %s", env)
        _run(uv(), "venv", "--quiet", "--python", BASE_PYTHON, str(env))
        sync = [uv(), "pip", "sync", "--python", str(python), str(LOCK), "--index-strategy", "unsafe-best-match"]
        wheels = local_wheels()
        if wheels:
            sync += ["--find-links", wheels]
        _run(*sync)
        site_packages = next((env / "lib").glob("python3*/site-packages"))
        _neutralise_torchvision_ops(site_packages)
        _strip_torchaudio_libraries(site_packages)
        done.touch()
    stamp = env / f".passerelle_triton-{digest(SHARED_PACKAGE / 'src', SHARED_PACKAGE / 'pyproject.toml')}"
    if not stamp.exists():
        for old in env.glob(".passerelle_triton-*"):
            old.unlink()
        _run(uv(), "pip", "install", "--quiet", "--python", str(python), "--reinstall", "--no-deps", str(SHARED_PACKAGE))
        stamp.touch()
    return env
