"""Admin API request bodies (responses are the monitor's JSON documents)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class LoadRequest(BaseModel):
    """Optional placement for a load; it becomes a config override of the model's instance_group."""

    model_config = ConfigDict(extra="forbid")
    gpus: list[int] | None = Field(default=None, max_length=64)
    instances: int | None = Field(default=None, ge=1, le=16)

    @field_validator("gpus")
    @classmethod
    def _gpus(cls, value: list[int] | None) -> list[int] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("gpus must list at least one GPU id, or be omitted")
        if any(gpu < 0 for gpu in value) or len(set(value)) != len(value):
            raise ValueError("gpus must be distinct, non-negative GPU ids")
        return value


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str = Field(min_length=1, max_length=512)
