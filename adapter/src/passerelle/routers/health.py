from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from passerelle.state import ServicesDep

router = APIRouter(tags=["health"])


@router.get("/health", operation_id="health")
async def health(services: ServicesDep) -> JSONResponse:
    """Adapter liveness (it answers) and Triton readiness; 503 while Triton is not ready."""
    live = await services.triton.server_live()
    ready = live and await services.triton.server_ready()
    body = {
        "status": "ok" if ready else "degraded",
        "adapter": {"live": True},
        "triton": {"url": services.settings.triton_grpc_url, "live": live, "ready": ready},
    }
    return JSONResponse(body, status_code=200 if ready else 503, headers={} if ready else {"Retry-After": "5"})
