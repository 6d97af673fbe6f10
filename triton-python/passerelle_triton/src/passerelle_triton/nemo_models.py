"""Restoring NeMo models (``.nemo`` archives or their extracted folders) for passerelle's Triton models.

``restore_from`` extracts with ``tarfile``'s ``filter="data"``, which Python 3.11 gained only in 3.11.4; on
older interpreters the archive is extracted here (refusing absolute paths, ``..`` and anything but files and
folders, as that filter would) and the model restored from the folder.  A folder holding an extracted
``.nemo`` is accepted as the path too.
"""

from __future__ import annotations

import contextlib
import logging
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any


def quiet_nemo() -> None:
    from nemo.utils import logging as nemo_logging

    nemo_logging.setLevel(logging.WARNING)


class _DropHydraClassLookupErrors(logging.Filter):
    # Canary configs name a factory function (get_nemo_transformer) as _target_; hydra logs an error, NeMo falls back.
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Error getting class at")


@contextlib.contextmanager
def _hydra_lookup_errors_dropped() -> Iterator[None]:
    hydra_logger = logging.getLogger("hydra.utils")
    log_filter = _DropHydraClassLookupErrors()
    hydra_logger.addFilter(log_filter)
    try:
        yield
    finally:
        hydra_logger.removeFilter(log_filter)


def restore(nemo_path: str, device: str, model_class: Any = None) -> Any:
    """The model saved at ``nemo_path``, on ``device``; ``model_class`` defaults to NeMo's ``ASRModel``."""
    import torch
    from nemo.core.connectors.save_restore_connector import SaveRestoreConnector

    if model_class is None:
        from nemo.collections.asr.models import ASRModel

        model_class = ASRModel
    path = Path(nemo_path)
    if not path.exists():
        raise FileNotFoundError(f"no such .nemo file or directory: {nemo_path}")
    map_location = torch.device(device)

    def from_directory(directory: str) -> Any:
        connector = SaveRestoreConnector()
        connector.model_extracted_dir = directory
        return model_class.restore_from(directory, map_location=map_location, save_restore_connector=connector)

    with _hydra_lookup_errors_dropped():
        if path.is_dir():
            return from_directory(str(path))
        if hasattr(tarfile, "data_filter"):
            return model_class.restore_from(str(path), map_location=map_location)
        # The model reads everything it needs while restoring, so the directory can go right after.
        with tempfile.TemporaryDirectory(prefix="nemo-") as directory:
            _extract(path, directory)
            return from_directory(directory)


def _extract(archive: Path, directory: str) -> None:
    """Extract regular files and folders, refusing absolute paths and '..' (what filter='data' would do)."""
    with tarfile.open(archive, "r:*") as tar:
        members = []
        for member in tar.getmembers():
            name = PurePosixPath(member.name)
            if name.is_absolute() or ".." in name.parts or not (member.isfile() or member.isdir()):
                raise ValueError(f"{archive}: refusing to extract member {member.name!r}")
            members.append(member)
        tar.extractall(directory, members=members)
