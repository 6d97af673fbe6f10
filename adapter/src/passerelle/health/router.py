"""`/health` (adapter liveness, Triton readiness) and `/metrics` (the adapter's Prometheus metrics;
Triton's own are on Triton's metrics port)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from passerelle.core.observability import Metrics
from passerelle.triton.upstreams import Tritons

router = APIRouter(tags=["health"])


@router.get("/health", operation_id="health")
async def health(request: Request) -> JSONResponse:
    """Adapter liveness (it answers) and Triton readiness; 503 while Triton is not ready."""
    triton: Tritons = request.app.state.triton
    live = await triton.server_live()
    ready = live and await triton.server_ready()
    body = {
        "status": "ok" if ready else "degraded",
        "adapter": {"live": True},
        # No address: /health answers anyone (probes), and Triton's address is the admin status's.
        "triton": {"live": live, "ready": ready},
    }
    return JSONResponse(body, status_code=200 if ready else 503, headers={} if ready else {"Retry-After": "5"})


@router.get("/metrics", operation_id="metrics", include_in_schema=False, tags=["observability"])
async def metrics(request: Request) -> Response:
    metrics: Metrics = request.app.state.metrics
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
