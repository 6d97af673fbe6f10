"""The dashboard (`dashboard/`, Vite + React): its npm packages, its build, and its API types.

The build lands in PASSERELLE_HOME keyed by the hash of everything it is built from, so a second
set-up reuses it; the adapter serves it at DASHBOARD_PATH when FRONTEND_DIST points to it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from passerelle_stack.paths import REPO, digest, home
from passerelle_stack.steps import SetupFailed, step

SOURCE = REPO / "dashboard"
BUILD_INPUTS = ("package.json", "package-lock.json", "index.html", "vite.config.ts", "tsconfig.json", "src", "public")
LOG = "dashboard.log"


def _npm() -> str:
    npm = shutil.which("npm")
    if npm is None:
        raise SetupFailed("the dashboard's npm packages", None, "install Node.js 20 and npm (the project's machines have them)")
    return npm


def _run(command: list[str], log: Path, env: dict[str, str] | None = None) -> None:
    with log.open("ab") as handle:
        subprocess.run(command, cwd=SOURCE, stdout=handle, stderr=subprocess.STDOUT, check=True, env={**os.environ, **(env or {})})


def node_modules() -> Path:
    """`npm ci` from the lock file, again only when the lock changed."""
    log = home() / "logs" / LOG
    stamp = SOURCE / "node_modules" / ".passerelle-lock"
    wanted = digest(SOURCE / "package-lock.json")
    if not (stamp.is_file() and stamp.read_text() == wanted):
        hint = "check that the npm registry answers (npm ci in dashboard/), then run the command again"
        with step("the dashboard's npm packages (npm ci)", log, hint):
            _run([_npm(), "ci", "--no-audit", "--no-fund", "--loglevel=error"], log)
            stamp.write_text(wanted)
    return SOURCE / "node_modules"


def build() -> Path:
    """The built dashboard (index.html and assets), built only when its sources changed."""
    # The packages also serve the tests (Vitest, axe-core), so a clean clone gets them even when
    # its build is cached.
    node_modules()
    out = home() / "dashboard" / digest(*(SOURCE / name for name in BUILD_INPUTS))
    if (out / "index.html").is_file():
        return out
    log = home() / "logs" / LOG
    staging = out.with_name(out.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    with step("build the dashboard (tsc, vite build)", log, "fix the TypeScript error the log shows, then run the command again"):
        _run([_npm(), "run", "build", "--silent"], log, env={"DASHBOARD_OUT_DIR": str(staging)})
        for old in out.parent.glob("*"):
            if old != staging:
                shutil.rmtree(old, ignore_errors=True)
        staging.rename(out)
    return out


def openapi_document() -> dict[str, Any]:
    from passerelle.core.config import Settings
    from passerelle.main import create_app

    document: dict[str, Any] = create_app(Settings(_env_file=None)).openapi()  # type: ignore[call-arg]
    return document


def api_types(document: dict[str, Any]) -> str:
    """The TypeScript types that openapi-typescript writes for this OpenAPI document."""
    binary = node_modules() / ".bin" / "openapi-typescript"
    with tempfile.TemporaryDirectory() as scratch:
        source, target = Path(scratch) / "openapi.json", Path(scratch) / "schema.d.ts"
        source.write_text(json.dumps(document, indent=1, sort_keys=True))
        subprocess.run([str(binary), str(source), "-o", str(target)], cwd=SOURCE, check=True, capture_output=True)
        return target.read_text()


TYPES_FILE = SOURCE / "src" / "api" / "schema.d.ts"


def write_api_types() -> Path:
    TYPES_FILE.write_text(api_types(openapi_document()))
    return TYPES_FILE
