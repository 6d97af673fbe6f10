from __future__ import annotations

import asyncio
from contextlib import aclosing

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from passerelle.schemas.openai import Completion, CompletionRequest
from passerelle.services.triton import TritonFailure
from passerelle.state import ServicesDep, require_api_key
from passerelle.streaming import api_error, primed, sse_response, until_disconnect
from passerelle.translate import completions

router = APIRouter(tags=["openai"], dependencies=[Depends(require_api_key)])


@router.post("/v1/completions", response_model=Completion, operation_id="create_completion")
async def create_completion(body: CompletionRequest, request: Request, services: ServicesDep) -> Response | Completion:
    model = services.model(body.model, task="chat")
    request.state.model = model.key
    renderer = await services.renderer(model)
    generations = completions.prepare(body, model, renderer)
    request_id = request.state.request_id
    transcript = completions.CompletionTranscript(body, request_id, model.root, [g.prompt for g in generations])
    streams = [services.llm.generate(model.key, g, f"{request_id}-{i}") for i, g in enumerate(generations)]
    if body.stream:
        streams[0] = await primed(streams[0], model.key, services.control)
        return sse_response(transcript.sse(streams), model.key, services.control)

    async def collect(index: int) -> None:
        first = True
        async with aclosing(streams[index]) as deltas:
            async for delta in deltas:
                transcript.add(index, delta, first=first)
                first = False

    async def collect_all() -> Completion:
        try:
            await asyncio.gather(*(collect(i) for i in range(len(streams))))
        except TritonFailure as failure:
            raise api_error(failure, model.key, services.control) from failure
        return transcript.completion()

    return await until_disconnect(request, collect_all())
