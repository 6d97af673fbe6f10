"""`POST /v1/chat/completions`."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from passerelle.chat.protocol import ChatCompletion, ChatCompletionRequest
from passerelle.chat.serving import ChatServingDep
from passerelle.core.errors import ERROR_RESPONSES
from passerelle.core.security import require_api_key
from passerelle.core.workers import OffLoopJSONRoute

router = APIRouter(tags=["openai"], dependencies=[Depends(require_api_key)], responses=ERROR_RESPONSES, route_class=OffLoopJSONRoute)


@router.post("/v1/chat/completions", response_model=ChatCompletion, operation_id="create_chat_completion")
async def create_chat_completion(body: ChatCompletionRequest, request: Request, chat: ChatServingDep) -> Response | ChatCompletion:
    return await chat.create(body, request)
