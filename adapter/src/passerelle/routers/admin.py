"""The admin API: a thin control plane over Triton's model control, the model cache and the HF token."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from passerelle.errors import InvalidRequest, NotFound
from passerelle.schemas.admin import LoadRequest, TokenRequest
from passerelle.services.catalog import RepositoryModel
from passerelle.services.token_store import InvalidToken, masked
from passerelle.state import Services, ServicesDep

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def require_admin(request: Request) -> None:
    request.app.state.services.admin(request)


router = APIRouter(prefix="/api/admin", tags=["admin"], dependencies=[Depends(require_admin)])


def _entry(services: Services, key: str) -> RepositoryModel:
    if not _KEY.match(key):
        raise InvalidRequest(f"'{key}' is not a valid model key", param="key", code="invalid_model_key")
    entry = services.catalog.entries.get(key)
    if entry is None:
        known = ", ".join(services.catalog.entries) or "none"
        raise NotFound(f"No model '{key}' in the repository. Known models: {known}.", param="key", code="model_not_found")
    return entry


def _override(services: Services, entry: RepositoryModel, body: LoadRequest) -> dict[str, Any] | None:
    if body.gpus is None and body.instances is None:
        return None
    if body.gpus is not None:
        devices = (services.monitor.status.get("gpus") or {}).get("devices") or []
        if not devices:
            raise InvalidRequest("No GPU is visible to Triton, so a model cannot be placed on GPUs here.", param="gpus", code="invalid_gpu")
        unknown = [gpu for gpu in body.gpus if gpu >= len(devices)]
        if unknown:
            raise InvalidRequest(f"GPU ids {unknown} do not exist; Triton sees {len(devices)} GPU(s).", param="gpus", code="invalid_gpu")
        group: dict[str, Any] = {"kind": "KIND_GPU", "gpus": body.gpus, "count": body.instances or 1}
    else:
        current = entry.instance_groups[0] if entry.instance_groups else {}
        group = {"kind": current.get("kind", "KIND_CPU"), "count": body.instances}
        if current.get("gpus"):
            group["gpus"] = current["gpus"]
    return {**entry.config, "name": entry.key, "instance_group": [group]}


@router.get("/status", operation_id="admin_status")
async def status(services: ServicesDep) -> dict[str, Any]:
    return services.monitor.status or await services.monitor.sample()


@router.get("/metrics", operation_id="admin_metrics")
async def metrics(services: ServicesDep) -> dict[str, Any]:
    return {
        "interval_s": services.settings.status_interval_s,
        "window_s": services.settings.metrics_window_s,
        "points": list(services.monitor.history),
    }


@router.post("/models/{key}/load", operation_id="admin_load_model")
async def load(key: str, services: ServicesDep, body: LoadRequest | None = None) -> dict[str, Any]:
    entry = _entry(services, key)
    override = _override(services, entry, body or LoadRequest())
    await services.control.load(key, override)
    config = await services.triton.model_config(key)
    record = services.control.record(key)
    return {
        "model": key,
        "state": "READY",
        "load_duration_s": record.load_duration_s,
        "instance_group": config.get("instance_group", []),
    }


@router.post("/models/{key}/unload", operation_id="admin_unload_model")
async def unload(key: str, services: ServicesDep) -> dict[str, Any]:
    _entry(services, key)
    await services.control.unload(key)
    return {"model": key, "state": "UNAVAILABLE"}


@router.post("/models/{key}/download", operation_id="admin_download_model")
async def download(key: str, services: ServicesDep, wait: bool = False) -> JSONResponse:
    entry = _entry(services, key)
    source = entry.artifact_source
    if not source or source.startswith("/"):
        raise InvalidRequest(
            f"Model '{key}' has no Hugging Face repository to download (its artifacts are local: {source}).",
            param="key",
            code="nothing_to_download",
        )
    job = services.downloads.start(key, source)
    if wait:
        job = await services.downloads.wait(key)
    snapshot = job.snapshot()
    if job.state == "failed":
        status = job.status_code if job.status_code in (401, 403, 404) else 502
        error = {"message": job.error, "type": "invalid_request_error", "param": "key", "code": "download_failed"}
        return JSONResponse({"error": error, "download": snapshot}, status_code=status)
    return JSONResponse({"download": snapshot}, status_code=200 if job.state == "done" else 202)


@router.get("/huggingface/token", operation_id="admin_get_token")
async def get_token(services: ServicesDep) -> dict[str, Any]:
    token = services.tokens.get()
    return {"configured": token is not None, "masked": masked(token)}


@router.put("/huggingface/token", operation_id="admin_set_token")
async def set_token(body: TokenRequest, services: ServicesDep) -> dict[str, Any]:
    try:
        services.tokens.set(body.token)
    except InvalidToken as exc:
        raise InvalidRequest(str(exc), param="token", code="invalid_token") from exc
    return {"configured": True, "masked": masked(body.token.strip())}


@router.delete("/huggingface/token", operation_id="admin_delete_token")
async def delete_token(services: ServicesDep) -> dict[str, Any]:
    return {"configured": False, "deleted": services.tokens.delete()}
