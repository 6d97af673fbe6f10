from __future__ import annotations

import time

from fastapi import APIRouter, Depends

from passerelle.errors import NotFound
from passerelle.schemas.openai import ModelCard, ModelList
from passerelle.services.catalog import ServedModel
from passerelle.services.triton import TritonFailure
from passerelle.state import ServicesDep, require_api_key

router = APIRouter(tags=["openai"], dependencies=[Depends(require_api_key)])
_STARTED = int(time.time())


async def _states(services: ServicesDep) -> dict[str, tuple[str, str | None]]:
    try:
        index = await services.triton.repository_index()
    except TritonFailure as failure:
        return {key: ("UNKNOWN", failure.message) for key in services.catalog.models}
    return {entry["name"]: (entry.get("state") or "UNAVAILABLE", entry.get("reason") or None) for entry in index}


def _card(model: ServedModel, state: tuple[str, str | None]) -> ModelCard:
    return ModelCard(
        id=model.key,
        created=_STARTED,
        root=model.root,
        max_model_len=model.max_model_len,
        task=model.task,
        state=state[0],
        state_reason=state[1],
        aliases=list(model.aliases),
    )


@router.get("/v1/models", response_model=ModelList, operation_id="list_models")
async def list_models(services: ServicesDep) -> ModelList:
    states = await _states(services)
    cards = [
        _card(model, states.get(key, ("UNAVAILABLE", "not in Triton's repository index"))) for key, model in services.catalog.models.items()
    ]
    return ModelList(data=cards)


@router.get("/v1/models/{model_id:path}", response_model=ModelCard, operation_id="retrieve_model")
async def retrieve_model(model_id: str, services: ServicesDep) -> ModelCard:
    model = services.catalog.resolve(model_id)
    if model is None:
        raise NotFound(f"The model '{model_id}' does not exist.", param="model", code="model_not_found")
    states = await _states(services)
    return _card(model, states.get(model.key, ("UNAVAILABLE", "not in Triton's repository index")))
