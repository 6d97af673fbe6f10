"""`python -m passerelle_stack setup|serve` (called by scripts/serve and scripts/test)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from pathlib import Path

from passerelle.core.config import Settings
from passerelle_stack import dashboard
from passerelle_stack.launcher import Stack, StackConfig, detect_profile
from passerelle_stack.paths import home
from passerelle_stack.steps import SetupFailed


def _port(url: str) -> int:
    return int(url.rstrip("/").rsplit(":", 1)[-1].split("/")[0])


def _config() -> StackConfig:
    settings = Settings()
    return StackConfig(
        run_dir=Path(os.environ.get("PASSERELLE_RUN_DIR", home() / "run" / "serve")),
        profile=detect_profile(),
        http_port=_port(settings.triton_http_url),
        grpc_port=_port(settings.triton_grpc_url),
        metrics_port=_port(settings.triton_metrics_url.removesuffix("/metrics")),
        adapter_port=settings.adapter_port,
        adapter_env={"PRELOAD_MODELS": os.environ.get("PRELOAD_MODELS", "qwen")},
    )


def serve(stack: Stack) -> int:
    stopping = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        stack.start_triton()
        stack.start_adapter()
        print(
            f"\npasserelle is up (profile {stack.config.profile}):\n"
            f"  Dashboard      {stack.adapter_url}{Settings().dashboard_path}\n"
            f"  OpenAI API     {stack.adapter_url}/v1   (docs: {stack.adapter_url}/docs)\n"
            f"  Triton HTTP    {stack.triton_http}\n"
            f"  Triton gRPC    {stack.triton_grpc}\n"
            f"  Triton metrics http://{stack.config.host}:{stack.config.metrics_port}/metrics\n"
            f"  logs           {stack.config.run_dir}/*.log\n"
            "qwen is loading in the background (a minute on CPU). Ctrl-C stops everything.\n",
            flush=True,
        )
        while not stopping:
            for name, process in stack.processes.items():
                if process.poll() is not None:
                    print(f"{name} exited with code {process.returncode}; see {stack.config.run_dir}/{name}.log", file=sys.stderr)
                    return 1
            time.sleep(0.5)
        return 0
    finally:
        print("stopping...", flush=True)
        stack.stop()


def main() -> int:
    parser = argparse.ArgumentParser(prog="passerelle_stack")
    parser.add_argument("command", choices=["setup", "serve", "dashboard-types"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.command == "dashboard-types":
        print(f"wrote {dashboard.write_api_types()}")
        return 0
    stack = Stack(_config())
    started = time.perf_counter()
    try:
        stack.prepare()
    except SetupFailed as failure:
        if failure.log and failure.log.is_file():
            print("\n".join(failure.log.read_text(errors="replace").splitlines()[-15:]), file=sys.stderr)
        print(failure.line(), file=sys.stderr, flush=True)
        return 1
    logging.info("set-up done in %.0f s (profile %s, cache %s)", time.perf_counter() - started, stack.config.profile, Path(home()))
    return serve(stack) if args.command == "serve" else 0


if __name__ == "__main__":
    sys.exit(main())
