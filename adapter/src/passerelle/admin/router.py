"""The admin API (`/api/admin`): a thin control plane over Triton's model control, the model cache,
the Hugging Face token and the monitor. The admin key, or loopback only, guards all of it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse

from passerelle.admin.protocol import (
    DownloadAccepted,
    Loaded,
    LoadRequest,
    MetricsHistory,
    Status,
    TokenDeleted,
    TokenRequest,
    TokenState,
    Unloaded,
)
from passerelle.admin.serving import AdminServingDep
from passerelle.core.errors import ERROR_RESPONSES
from passerelle.core.security import require_admin

router = APIRouter(prefix="/api/admin", tags=["admin"], dependencies=[Depends(require_admin)], responses=ERROR_RESPONSES)


@router.get("/status", response_model=Status, operation_id="admin_status")
async def status(admin: AdminServingDep) -> Status:
    return await admin.status()


@router.get("/metrics", response_model=MetricsHistory, operation_id="admin_metrics")
async def metrics(admin: AdminServingDep) -> MetricsHistory:
    return admin.metrics()


@router.post("/models/{key}/load", response_model=Loaded, operation_id="admin_load_model")
async def load(key: str, admin: AdminServingDep, body: LoadRequest | None = None) -> Loaded:
    return await admin.load(key, body or LoadRequest())


@router.post("/models/{key}/unload", response_model=Unloaded, operation_id="admin_unload_model")
async def unload(key: str, admin: AdminServingDep, replica: Annotated[str | None, Query(min_length=1, max_length=300)] = None) -> Unloaded:
    """Unload the model from every replica of its upstream, or from the one named."""
    return await admin.unload(key, replica)


@router.post(
    "/models/{key}/download",
    operation_id="admin_download_model",
    responses={200: {"model": DownloadAccepted}, 202: {"model": DownloadAccepted}},
)
async def download(key: str, admin: AdminServingDep, wait: bool = False) -> JSONResponse:
    return await admin.download(key, wait=wait)


@router.get("/huggingface/token", response_model=TokenState, operation_id="admin_get_token")
async def get_token(admin: AdminServingDep) -> TokenState:
    return admin.token()


@router.put("/huggingface/token", response_model=TokenState, operation_id="admin_set_token")
async def set_token(body: TokenRequest, admin: AdminServingDep) -> TokenState:
    return admin.set_token(body)


@router.delete("/huggingface/token", response_model=TokenDeleted, operation_id="admin_delete_token")
async def delete_token(admin: AdminServingDep) -> TokenDeleted:
    return admin.delete_token()
