"""Every tiny-model builder gives a model that passes its own check on any x86-64 CPU code path.

Float results differ between CPUs (SIMD width, oneDNN and MKL kernels, thread counts), so a builder
whose check passes on the machine that wrote it can fail on a user's. Each builder that a profile
names (model_repository/*/profiles/cpu.json, so builders added later are covered too) is run here
under settings that change the float paths, one setting at a time:

- torch's ATen kernels: ATEN_CPU_CAPABILITY = default, avx2, and avx512 where the CPU has it;
- oneDNN's instruction set: ONEDNN_MAX_CPU_ISA = SSE41;
- MKL's code path (MKL picks its own on AMD): MKL_ENABLE_INSTRUCTIONS = SSE4_2;
- one and two threads (the fits pin one thread, so this changes only the checks).

Builds take minutes, so a variant that passed is cached under PASSERELLE_HOME/builder-checks,
keyed by the builder's hash, the CPU's flags, torch's version and the variant. The set-up's own
build (no setting changed) is the baseline; its report is checked too.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from passerelle_stack.artifacts import Artifact, profile_artifacts, run_builder
from passerelle_stack.environments import triton_env
from passerelle_stack.launcher import Stack, StackConfig
from passerelle_stack.paths import home, model_cache_dir
from passerelle_stack.steps import SetupFailed

# Cold (nothing cached), the builds took 28 minutes on 2 cores in one CI run (1,666 s); warm, a second.
pytestmark = pytest.mark.timeout(3600)
REPORT = "build-report.json"
ARTIFACTS = profile_artifacts("cpu", {"MODEL_CACHE_DIR": str(model_cache_dir())})
# torch's AVX-512 kernels need all four (torch's cpuinfo check).
AVX512 = ("avx512f", "avx512bw", "avx512vl", "avx512dq")


def cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def float_path_variants(flags: set[str]) -> dict[str, dict[str, str]]:
    variants = {"ATEN_CPU_CAPABILITY=default": {"ATEN_CPU_CAPABILITY": "default"}}
    if "avx2" in flags:
        variants["ATEN_CPU_CAPABILITY=avx2"] = {"ATEN_CPU_CAPABILITY": "avx2"}
    if all(flag in flags for flag in AVX512):
        variants["ATEN_CPU_CAPABILITY=avx512"] = {"ATEN_CPU_CAPABILITY": "avx512"}
    variants["ONEDNN_MAX_CPU_ISA=SSE41"] = {"ONEDNN_MAX_CPU_ISA": "SSE41"}
    variants["MKL_ENABLE_INSTRUCTIONS=SSE4_2"] = {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}
    variants["threads=1"] = {"OMP_NUM_THREADS": "1"}
    variants["threads=2"] = {"OMP_NUM_THREADS": "2"}
    return variants


FLAGS = cpu_flags()
VARIANTS = float_path_variants(FLAGS)
Reports = dict[tuple[str, str], dict[str, Any]]
CASES = [(artifact, variant) for artifact in ARTIFACTS for variant in VARIANTS]


def _torch_version(env_dir: Path) -> str:
    found = sorted(env_dir.glob("lib/python3*/site-packages/torch-*.dist-info"))
    assert found, f"no torch in {env_dir}"
    return found[0].name.removeprefix("torch-").removesuffix(".dist-info")


def _cache_key(artifact: Artifact, variant: str, torch_version: str) -> str:
    parts = [artifact.builder_digest, " ".join(sorted(FLAGS)), torch_version, variant]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _run_variant(artifact: Artifact, variant: str, python: Path, env: dict[str, str], cache: Path, torch_version: str) -> dict[str, Any]:
    cached = cache / f"{artifact.model}-{_cache_key(artifact, variant, torch_version)}.json"
    if cached.is_file():
        return {**json.loads(cached.read_text()), "cached": True}
    # A folder of its own: a build left running by an interrupted session must not share it.
    out = Path(tempfile.mkdtemp(dir=cache / "work", prefix=f"{artifact.model}-{variant.replace('=', '-')}-"))
    log_path = cache / "logs" / f"{artifact.model}-{variant.replace('=', '-')}.log"
    started = time.monotonic()
    try:
        run_builder(artifact, out, python, {**env, **VARIANTS[variant]}, log_path)
    except SetupFailed as failure:
        report: dict[str, Any] = json.loads((out / REPORT).read_text()) if (out / REPORT).is_file() else {}
        return {**report, "passed": False, "failure": failure.line()}
    report = json.loads((out / REPORT).read_text())
    report["wall_seconds"] = round(time.monotonic() - started, 1)
    shutil.rmtree(out, ignore_errors=True)
    if report.get("passed"):
        cached.write_text(json.dumps(report, indent=2) + "\n")
    return report


@pytest.fixture(scope="module")
def variant_reports(tmp_path_factory: pytest.TempPathFactory) -> Reports:
    env_dir = triton_env()
    python = env_dir / "bin" / "python"
    env = Stack(StackConfig(run_dir=tmp_path_factory.mktemp("builders"))).triton_environment(env_dir)
    for name in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "OMP_NUM_THREADS"):
        env.pop(name, None)
    cache = home() / "builder-checks"
    (cache / "work").mkdir(parents=True, exist_ok=True)
    torch_version = _torch_version(env_dir)
    # Two builds at a time: each fit pins one thread, and this machine kind has two cores.
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {
            (artifact.model, variant): pool.submit(_run_variant, artifact, variant, python, env, cache, torch_version)
            for artifact, variant in CASES
        }
        reports = {key: future.result() for key, future in futures.items()}
    for (model, variant), report in sorted(reports.items()):
        figures = {k: v for k, v in report.items() if k not in ("model", "settings")}
        print(f"{model:10s} {variant:32s} {json.dumps(figures)}")
    return reports


def test_every_profile_builder_is_covered() -> None:
    builders = {path.name for path in (Path(__file__).parents[1] / "scripts").glob("build_tiny_*.py")}
    assert {artifact.builder.name for artifact in ARTIFACTS} == builders
    assert len(VARIANTS) >= 6


@pytest.mark.parametrize(("artifact", "variant"), CASES, ids=[f"{a.model}-{v}" for a, v in CASES])
def test_builder_passes_its_check_on_a_float_path(artifact: Artifact, variant: str, variant_reports: Reports) -> None:
    report = variant_reports[(artifact.model, variant)]
    assert report.get("passed") is True, report.get("failure", report)
    # The setting reached torch: the report records what the builder's own process saw.
    setting = VARIANTS[variant]
    assert report["settings"] == setting
    if "ATEN_CPU_CAPABILITY" in setting:
        assert report["cpu_capability"].lower() == setting["ATEN_CPU_CAPABILITY"]
    if "OMP_NUM_THREADS" in setting:
        assert report["threads"] == int(setting["OMP_NUM_THREADS"])


@pytest.mark.parametrize("artifact", ARTIFACTS, ids=[a.model for a in ARTIFACTS])
def test_setup_build_passed_its_check(artifact: Artifact) -> None:
    """The baseline: the model set-up built (no setting changed) is the one Triton serves."""
    report = json.loads((artifact.target / REPORT).read_text())
    assert report["passed"] is True
    assert (artifact.target / f".built-{artifact.builder_digest}").exists()


def test_a_failed_check_ends_set_up_with_one_plain_line(tmp_path: Path) -> None:
    """A builder whose check fails stops set-up with the step, the log and the check's own words."""
    failing = tmp_path / "build_tiny_failing.py"
    failing.write_text(
        "import sys\nfrom pathlib import Path\n"
        f"sys.path.insert(0, {str(Path(__file__).parents[1] / 'scripts')!r})\n"
        "from tiny_build_report import CheckFailed, build_report\n"
        "with build_report(Path(sys.argv[2]), 'failing') as report:\n"
        "    raise CheckFailed('tiny failing: margin 0.1 below 3.0')\n"
    )
    artifact = Artifact("failing", failing, tmp_path / "model")
    with pytest.raises(SetupFailed) as raised:
        run_builder(artifact, tmp_path / "out", triton_env() / "bin" / "python", dict(os.environ), tmp_path / "build.log")
    line = raised.value.line()
    assert line.startswith("set-up failed at 'build the tiny failing model (build_tiny_failing.py)'")
    assert str(tmp_path / "build.log") in line and "margin 0.1 below 3.0" in line
    assert json.loads((tmp_path / "out" / REPORT).read_text())["passed"] is False
