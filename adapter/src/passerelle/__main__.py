"""`python -m passerelle`: serve the adapter with uvicorn, configured from the environment.

ADAPTER_WORKERS > 1 serves the API from that many processes (uvicorn's supervisor restarts one that
dies). They share their metrics through prometheus-client's multiprocess files, in
PROMETHEUS_MULTIPROC_DIR (a fresh temporary folder unless it is set), emptied at start.
"""

import os
import shutil
import tempfile
from pathlib import Path

import uvicorn

from passerelle.core.config import Settings


def _fresh_metrics_folder() -> str:
    folder = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="passerelle-metrics-"))
    folder.mkdir(parents=True, exist_ok=True)
    for entry in folder.iterdir():  # values of a previous run would be added to this one's
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    return str(folder)


def main() -> None:
    settings = Settings()
    serving = {"host": settings.adapter_host, "port": settings.adapter_port, "log_level": settings.log_level.lower(), "access_log": False}
    if settings.adapter_workers == 1:
        from passerelle.main import create_app

        uvicorn.run(create_app(settings), **serving)  # type: ignore[arg-type]
        return
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _fresh_metrics_folder()
    uvicorn.run("passerelle.main:create_app", factory=True, workers=settings.adapter_workers, **serving)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
