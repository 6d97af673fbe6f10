"""The admin API's work: model control over Triton (with GPU placement), downloads into the model
cache, the Hugging Face token, and the monitor's status and history."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse

from passerelle.admin.downloads.manager import DownloadManager
from passerelle.admin.monitor.monitor import Monitor
from passerelle.admin.protocol import (
    DownloadAccepted,
    DownloadState,
    Loaded,
    LoadRequest,
    MetricsHistory,
    Status,
    TokenDeleted,
    TokenRequest,
    TokenState,
    Unloaded,
)
from passerelle.admin.tokens import InvalidToken, TokenStore, masked
from passerelle.core.catalog import Catalog, RepositoryModel
from passerelle.core.config import Settings
from passerelle.core.errors import ErrorResponse, InvalidRequest, NotFound
from passerelle.triton.lifecycle import ModelControl
from passerelle.triton.upstreams import Tritons

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class AdminServing:
    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        triton: Tritons,
        control: ModelControl,
        monitor: Monitor,
        downloads: DownloadManager,
        tokens: TokenStore,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.triton = triton
        self.control = control
        self.monitor = monitor
        self.downloads = downloads
        self.tokens = tokens

    def _entry(self, key: str) -> RepositoryModel:
        if not _KEY.match(key):
            raise InvalidRequest(f"'{key}' is not a valid model key", param="key", code="invalid_model_key")
        entry = self.catalog.entries.get(key)
        if entry is None:
            known = ", ".join(self.catalog.entries) or "none"
            raise NotFound(f"No model '{key}' in the repository. Known models: {known}.", param="key", code="model_not_found")
        return entry

    async def _override(self, entry: RepositoryModel, body: LoadRequest) -> dict[str, Any] | None:
        """The config override that places the model's instances, checked against Triton's GPUs."""
        if body.gpus is None and body.instances is None:
            return None
        if body.gpus is not None:
            devices = await self.monitor.triton_gpus()
            if not devices:
                raise InvalidRequest(
                    "No GPU is visible to Triton, so a model cannot be placed on GPUs here.", param="gpus", code="invalid_gpu"
                )
            unknown = [gpu for gpu in body.gpus if gpu >= len(devices)]
            if unknown:
                raise InvalidRequest(
                    f"GPU ids {unknown} do not exist; Triton sees {len(devices)} GPU(s).", param="gpus", code="invalid_gpu"
                )
            group: dict[str, Any] = {"kind": "KIND_GPU", "gpus": body.gpus, "count": body.instances or 1}
        else:
            current = entry.instance_groups[0] if entry.instance_groups else {}
            group = {"kind": current.get("kind", "KIND_CPU"), "count": body.instances}
            if current.get("gpus"):
                group["gpus"] = current["gpus"]
        return {**entry.config, "name": entry.key, "instance_group": [group]}

    async def status(self) -> Status:
        return await self.monitor.current()

    def metrics(self) -> MetricsHistory:
        return MetricsHistory(
            interval_s=self.settings.status_interval_s, window_s=self.settings.metrics_window_s, points=list(self.monitor.history.points)
        )

    async def load(self, key: str, body: LoadRequest) -> Loaded:
        entry = self._entry(key)
        await self._check_replica(key, body.replica)
        await self.control.load(key, await self._override(entry, body), replica=body.replica)
        config = await self.triton.model_config(key)
        return Loaded(model=key, load_duration_s=self.control.record(key).load_duration_s, instance_group=config.get("instance_group", []))

    async def unload(self, key: str, replica: str | None = None) -> Unloaded:
        self._entry(key)
        await self._check_replica(key, replica)
        await self.control.unload(key, replica=replica)
        return Unloaded(model=key)

    async def _check_replica(self, key: str, replica: str | None) -> None:
        if replica is None:
            return
        replicas = await self.triton.upstream(key).replicas()
        if replica not in replicas:
            message = f"'{replica}' is not a replica of the upstream serving '{key}'; its replicas: {', '.join(replicas) or 'none found'}."
            raise InvalidRequest(message, param="replica", code="unknown_replica")

    async def download(self, key: str, *, wait: bool) -> JSONResponse:
        source = self._entry(key).artifact_source
        if not source or source.startswith("/"):
            raise InvalidRequest(
                f"Model '{key}' has no Hugging Face repository to download (its artifacts are local: {source}).",
                param="key",
                code="nothing_to_download",
            )
        job = self.downloads.start(key, source)
        if wait:
            job = await self.downloads.wait(key)
        state = DownloadState.model_validate(job.snapshot())
        if job.state == "failed":
            status = job.status_code if job.status_code in (401, 403, 404, 507) else 502
            error = ErrorResponse.of(job.error or "download failed", type="invalid_request_error", param="key", code="download_failed")
            return error.json_response(status, download=state.model_dump(mode="json"))
        return JSONResponse(DownloadAccepted(download=state).model_dump(mode="json"), status_code=200 if job.state == "done" else 202)

    def token(self) -> TokenState:
        token = self.tokens.get()
        return TokenState(configured=token is not None, masked=masked(token))

    def set_token(self, body: TokenRequest) -> TokenState:
        try:
            self.tokens.set(body.token)
        except InvalidToken as exc:
            raise InvalidRequest(str(exc), param="token", code="invalid_token") from exc
        return TokenState(configured=True, masked=masked(body.token.strip()))

    def delete_token(self) -> TokenDeleted:
        return TokenDeleted(deleted=self.tokens.delete())


async def get_admin_serving(request: Request) -> AdminServing:
    serving: AdminServing = request.app.state.admin
    return serving


AdminServingDep = Annotated[AdminServing, Depends(get_admin_serving)]
