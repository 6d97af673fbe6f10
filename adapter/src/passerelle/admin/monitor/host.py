"""Collector: the adapter's host (psutil) and the size of each model's artifacts in the model cache."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import psutil

from passerelle.admin.protocol import CacheState, HostFacts
from passerelle.core.catalog import RepositoryModel


def _directory_size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(root, name), follow_symlinks=False).st_size
    return total


def cache_location(source: str | None, cache_dir: Path) -> Path | None:
    if not source:
        return None
    if source.startswith("/"):
        return Path(source)
    return cache_dir / "hub" / ("models--" + source.replace("/", "--"))


def host_facts() -> HostFacts:
    memory = psutil.virtual_memory()
    return HostFacts(
        cpu_count=psutil.cpu_count(),
        cpu_percent=psutil.cpu_percent(interval=None),
        memory_total_bytes=memory.total,
        memory_used_bytes=memory.total - memory.available,
        load_average=list(os.getloadavg()),
    )


def cache_states(entries: dict[str, RepositoryModel], cache_dir: Path) -> dict[str, CacheState]:
    """Walks the cache: run it in a thread."""
    caches = {}
    for key, entry in entries.items():
        location = cache_location(entry.artifact_source, cache_dir)
        if location is None:
            continue
        exists = location.exists()
        caches[key] = CacheState(path=str(location), cached=exists, size_bytes=_directory_size(location) if exists else 0)
    return caches
