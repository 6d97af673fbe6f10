"""Artifacts a profile needs before Triton can load its models (the CPU profile's tiny models).

Each is built by the script its profile names, run with Triton's Python, into a staging
folder that is renamed into place only when complete. A stamp records the builder's hash
(with the report helper every builder shares), so a changed builder rebuilds and an unchanged
one costs nothing. Every builder checks the model it built and exits with code 3 and one
"CHECK FAILED: ..." line when the check fails; its whole output goes to a log file.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from passerelle_stack.paths import REPO, digest, home
from passerelle_stack.repository import SOURCE, load_profile
from passerelle_stack.steps import SetupFailed

log = logging.getLogger("passerelle.stack")
BUILD_REPORT_HELPER = REPO / "scripts" / "tiny_build_report.py"


@dataclass(frozen=True)
class Artifact:
    model: str
    builder: Path
    target: Path

    @property
    def builder_digest(self) -> str:
        return digest(self.builder, BUILD_REPORT_HELPER)


def profile_artifacts(profile: str, variables: dict[str, str]) -> list[Artifact]:
    found = []
    for model_dir in sorted(p for p in SOURCE.iterdir() if (p / "config.pbtxt").is_file()):
        spec = load_profile(model_dir, profile, variables).get("artifacts")
        if spec:
            found.append(Artifact(model_dir.name, REPO / spec["builder"], Path(spec["path"])))
    return found


def run_builder(artifact: Artifact, out: Path, python: Path, env: dict[str, str], log_path: Path, timeout: float = 1800) -> None:
    """Run one builder into `out` (replaced), its output to `log_path`; SetupFailed names the check that failed."""
    shutil.rmtree(out, ignore_errors=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    step = f"build the tiny {artifact.model} model ({artifact.builder.name})"
    with log_path.open("wb") as handle:
        try:
            result = subprocess.run(
                [str(python), str(artifact.builder), "--out", str(out)], env=env, stdout=handle, stderr=subprocess.STDOUT, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            raise SetupFailed(step, log_path, f"it ran for more than {timeout:.0f} s; is the machine overloaded?") from None
    if result.returncode != 0:
        lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        check = next((line for line in reversed(lines) if line.startswith("CHECK FAILED: ")), None)
        if check:
            raise SetupFailed(step, log_path, "the model it built failed its check: " + check.removeprefix("CHECK FAILED: "))
        raise SetupFailed(step, log_path, f"the builder exited with code {result.returncode}; the log's last lines say why")


def ensure_artifacts(profile: str, python: Path, variables: dict[str, str], env: dict[str, str]) -> None:
    for artifact in profile_artifacts(profile, variables):
        stamp = artifact.target / f".built-{artifact.builder_digest}"
        if stamp.exists():
            continue
        staging = artifact.target.with_name(artifact.target.name + ".building")
        log_path = home() / "logs" / f"build-{artifact.model}.log"
        log.info("building %s for %s with %s (log: %s)", artifact.target, artifact.model, artifact.builder.name, log_path)
        run_builder(artifact, staging, python, env, log_path)
        (staging / stamp.name).touch()
        shutil.rmtree(artifact.target, ignore_errors=True)
        staging.rename(artifact.target)
