"""The model list: the catalog's models, each with its state in Triton's repository index."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends, Request

from passerelle.core.catalog import Catalog, ServedModel
from passerelle.core.errors import NotFound, TritonFailure
from passerelle.models.protocol import ModelCard, ModelList, ReplicaCard
from passerelle.triton.upstreams import ReplicaSample, Tritons

_STARTED = int(time.time())
_NOT_INDEXED = ("UNAVAILABLE", "not in Triton's repository index")


class ModelsServing:
    def __init__(self, catalog: Catalog, triton: Tritons) -> None:
        self.catalog = catalog
        self.triton = triton

    async def _states(self) -> dict[str, tuple[str, str | None]]:
        try:
            index = await self.triton.repository_index()
        except TritonFailure as failure:
            return {key: ("UNKNOWN", failure.message) for key in self.catalog.models}
        return {entry["name"]: (entry.get("state") or "UNAVAILABLE", entry.get("reason") or None) for entry in index}

    async def _replicas(self) -> list[ReplicaSample]:
        return await self.triton.replica_samples()

    def _replica_cards(self, model: str, samples: list[ReplicaSample]) -> list[ReplicaCard]:
        upstream = self.triton.upstream(model).name
        return [
            ReplicaCard(upstream=upstream, address=sample.address, state=sample.models.get(model, "UNAVAILABLE") if sample.live else "DOWN")
            for sample in samples
            if sample.upstream == upstream
        ]

    @staticmethod
    def _card(model: ServedModel, state: tuple[str, str | None], replicas: list[ReplicaCard]) -> ModelCard:
        return ModelCard(
            id=model.key,
            created=_STARTED,
            root=model.root,
            max_model_len=model.max_model_len,
            task=model.task,
            state=state[0],
            state_reason=state[1],
            aliases=list(model.aliases),
            replicas=replicas,
        )

    async def list(self) -> ModelList:
        states, samples = await self._states(), await self._replicas()
        return ModelList(
            data=[
                self._card(model, states.get(key, _NOT_INDEXED), self._replica_cards(key, samples))
                for key, model in self.catalog.models.items()
            ]
        )

    async def retrieve(self, name: str) -> ModelCard:
        model = self.catalog.resolve(name)
        if model is None:
            raise NotFound(f"The model '{name}' does not exist.", param="model", code="model_not_found")
        states, samples = await self._states(), await self._replicas()
        return self._card(model, states.get(model.key, _NOT_INDEXED), self._replica_cards(model.key, samples))


async def get_models_serving(request: Request) -> ModelsServing:
    serving: ModelsServing = request.app.state.models
    return serving


ModelsServingDep = Annotated[ModelsServing, Depends(get_models_serving)]
