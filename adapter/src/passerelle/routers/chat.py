from __future__ import annotations

from contextlib import aclosing

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from passerelle.schemas.openai import ChatCompletion, ChatCompletionRequest
from passerelle.services.triton import TritonFailure
from passerelle.state import ServicesDep, require_api_key
from passerelle.streaming import api_error, primed, sse_response, until_disconnect
from passerelle.translate import chat

router = APIRouter(tags=["openai"], dependencies=[Depends(require_api_key)])


@router.post("/v1/chat/completions", response_model=ChatCompletion, operation_id="create_chat_completion")
async def create_chat_completion(body: ChatCompletionRequest, request: Request, services: ServicesDep) -> Response | ChatCompletion:
    model = services.model(body.model, task="chat")
    request.state.model = model.key
    renderer = await services.renderer(model)
    generation = await chat.prepare(body, model, renderer, services.images)
    request_id = request.state.request_id
    transcript = chat.ChatTranscript(body, request_id, model.root)
    deltas = services.llm.generate(model.key, generation, request_id)
    if body.stream:
        return sse_response(transcript.sse(await primed(deltas, model.key, services.control)), model.key, services.control)

    async def collect() -> ChatCompletion:
        try:
            async with aclosing(deltas):
                async for delta in deltas:
                    transcript.add(delta)
        except TritonFailure as failure:
            raise api_error(failure, model.key, services.control) from failure
        return transcript.completion()

    return await until_disconnect(request, collect())
