"""OpenAI's model list, with what the gateway knows of each model (its state in Triton, its limits)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class ReplicaCard(BaseModel):
    """The model's state on one Triton of the upstream that serves it."""

    upstream: str
    address: str
    state: str  # Triton's (READY, UNAVAILABLE, LOADING, ...), or DOWN when the replica does not answer


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "passerelle"
    root: str
    parent: str | None = None
    max_model_len: int | None = None
    task: str
    state: str
    state_reason: str | None = None
    aliases: list[str]
    replicas: list[ReplicaCard]


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
