"""Artifacts a profile needs before Triton can load its models (the CPU profile's tiny models).

Each is built by the script its profile names, run with Triton's Python, into a staging
folder that is renamed into place only when complete. A stamp records the builder's hash,
so a changed builder rebuilds and an unchanged one costs nothing.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

from passerelle_stack.paths import REPO, digest
from passerelle_stack.repository import SOURCE, load_profile

log = logging.getLogger("passerelle.stack")


def ensure_artifacts(profile: str, python: Path, variables: dict[str, str], env: dict[str, str]) -> None:
    for model_dir in sorted(p for p in SOURCE.iterdir() if (p / "config.pbtxt").is_file()):
        spec = load_profile(model_dir, profile, variables).get("artifacts")
        if not spec:
            continue
        builder = REPO / spec["builder"]
        target = Path(spec["path"])
        stamp = target / f".built-{digest(builder)}"
        if stamp.exists():
            continue
        staging = target.with_name(target.name + ".building")
        shutil.rmtree(staging, ignore_errors=True)
        log.info("building %s for %s with %s", target, model_dir.name, builder.name)
        subprocess.run([str(python), str(builder), "--out", str(staging)], check=True, env=env)
        (staging / stamp.name).touch()
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
