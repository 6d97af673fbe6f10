"""`POST /v1/completions`."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from passerelle.completions.protocol import Completion, CompletionRequest
from passerelle.completions.serving import CompletionServingDep
from passerelle.core.errors import ERROR_RESPONSES
from passerelle.core.security import require_api_key
from passerelle.core.workers import OffLoopJSONRoute

router = APIRouter(tags=["openai"], dependencies=[Depends(require_api_key)], responses=ERROR_RESPONSES, route_class=OffLoopJSONRoute)


@router.post("/v1/completions", response_model=Completion, operation_id="create_completion")
async def create_completion(body: CompletionRequest, request: Request, completions: CompletionServingDep) -> Response | Completion:
    return await completions.create(body, request)
