"""`GET /v1/models` and `GET /v1/models/{model}`."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from passerelle.core.errors import ERROR_RESPONSES
from passerelle.core.security import require_api_key
from passerelle.models.protocol import ModelCard, ModelList
from passerelle.models.serving import ModelsServingDep

router = APIRouter(tags=["openai"], dependencies=[Depends(require_api_key)], responses=ERROR_RESPONSES)


@router.get("/v1/models", response_model=ModelList, operation_id="list_models")
async def list_models(models: ModelsServingDep) -> ModelList:
    return await models.list()


@router.get("/v1/models/{model_id:path}", response_model=ModelCard, operation_id="retrieve_model")
async def retrieve_model(model_id: str, models: ModelsServingDep) -> ModelCard:
    return await models.retrieve(model_id)
