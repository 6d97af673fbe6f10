"""`POST /v1/responses`."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from passerelle.core.errors import ERROR_RESPONSES
from passerelle.core.security import require_api_key
from passerelle.core.workers import OffLoopJSONRoute
from passerelle.responses.protocol import ResponseObject, ResponsesRequest
from passerelle.responses.serving import ResponsesServingDep

router = APIRouter(tags=["openai"], dependencies=[Depends(require_api_key)], responses=ERROR_RESPONSES, route_class=OffLoopJSONRoute)


@router.post("/v1/responses", response_model=ResponseObject, operation_id="create_response")
async def create_response(body: ResponsesRequest, request: Request, responses: ResponsesServingDep) -> Response | ResponseObject:
    """OpenAI's Responses API for the chat model; `stream: true` answers with its typed events."""
    return await responses.create(body, request)
