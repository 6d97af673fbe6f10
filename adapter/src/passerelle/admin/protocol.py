"""The admin API's request bodies and typed responses (OpenAPI is the dashboard's contract)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class LoadRequest(BaseModel):
    """Optional placement for a load; it becomes a config override of the model's instance_group."""

    model_config = ConfigDict(extra="forbid", strict=True)
    gpus: list[int] | None = Field(default=None, max_length=64)
    instances: int | None = Field(default=None, ge=1, le=16)
    # One replica of the model's upstream (its address, as the status lists it); default: every replica.
    replica: str | None = Field(default=None, min_length=1, max_length=300)

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
    model_config = ConfigDict(extra="forbid", strict=True)
    token: str = Field(min_length=1, max_length=512)


# Responses: the dashboard's contract -----------------------------------------------------------


class TritonState(BaseModel):
    live: bool
    ready: bool
    version: str | None = None
    extensions: list[str] = Field(default_factory=list)
    grpc_url: str
    http_url: str
    metrics_url: str


class CacheState(BaseModel):
    path: str
    cached: bool
    size_bytes: int


class DownloadState(BaseModel):
    key: str
    repo_id: str
    revision: str | None
    state: Literal["running", "done", "failed"]
    bytes_done: int
    bytes_total: int | None
    percent: float | None
    files_done: int
    files_total: int | None
    error: str | None
    status_code: int | None
    started_at: float
    finished_at: float | None
    commit: str | None
    path: str | None


class ModelStatistics(BaseModel):
    """Triton's cumulative inference statistics for the model."""

    success: int
    failure: int
    avg_queue_ms: float | None
    avg_compute_ms: float | None
    avg_request_ms: float | None
    last_inference: float | None


class ModelRuntime(BaseModel):
    endpoint: str
    loaded_at: float | None
    load_duration_s: float | None
    config_override: dict[str, Any] | None
    engine_args: dict[str, Any] | None
    in_flight: int
    ttl_s: int


class ModelState(BaseModel):
    state: str  # Triton's (READY, UNAVAILABLE, ...) or LOADING while the adapter loads it
    reason: str | None
    version: str | None
    backend: str
    source: str | None
    cache: CacheState | None
    download: DownloadState | None
    last_error: str | None
    statistics: ModelStatistics
    placement: list[dict[str, Any]]
    runtime: ModelRuntime
    vllm: dict[str, float] | None


class GpuState(BaseModel):
    available: bool
    devices: list[dict[str, Any]]  # NVML facts from Triton's host, one per GPU
    note: str | None
    dcgm: dict[str, Any] | None  # Triton's nv_gpu_* metric samples


class HostFacts(BaseModel):
    cpu_count: int | None
    cpu_percent: float
    memory_total_bytes: int
    memory_used_bytes: int
    load_average: list[float]


class HostState(BaseModel):
    adapter: HostFacts
    triton: dict[str, Any] | None


class Dependencies(BaseModel):
    python: Any
    packages: Any
    torch: Any


class SettingsView(BaseModel):
    profile: str
    lazy_load_models: bool
    preload_models: list[str]
    default_model_ttl_s: int
    model_cache_dir: str


class ReplicaState(BaseModel):
    """One Triton of an upstream (TRITON_UPSTREAMS; the default upstream is TRITON_GRPC_URL)."""

    upstream: str
    address: str
    live: bool
    ready: bool
    models: dict[str, str]  # the upstream's models on this replica: Triton's state (READY, UNAVAILABLE, ...)


class Status(BaseModel):
    """`GET /api/admin/status`: the latest sample of Triton, its models, GPUs and hosts."""

    collected_at: float
    triton: TritonState
    replicas: list[ReplicaState]
    models: dict[str, ModelState]
    gpus: GpuState
    host: HostState
    dependencies: Dependencies | None
    settings: SettingsView


class MetricsPoint(BaseModel):
    t: float
    # By model: requests_per_s, failures_per_s, avg_compute_ms, avg_queue_ms (Triton); latency_p50_s,
    # latency_p95_s, ttft_p50_s, ttft_p95_s, tokens_per_s, in_flight (the adapter); queued and vLLM's gauges.
    models: dict[str, dict[str, float | None]]
    gpus: list[dict[str, Any]]  # index, utilization_percent, memory_used_bytes, memory_total_bytes, temperature_c, power_w
    host: HostFacts | None = None  # the adapter's host: CPU and memory


class MetricsHistory(BaseModel):
    """`GET /api/admin/metrics`: a ring buffer of per-interval points over METRICS_WINDOW_S."""

    interval_s: float
    window_s: int
    points: list[MetricsPoint]


class Loaded(BaseModel):
    model: str
    state: Literal["READY"] = "READY"
    load_duration_s: float | None
    instance_group: list[dict[str, Any]]


class Unloaded(BaseModel):
    model: str
    state: Literal["UNAVAILABLE"] = "UNAVAILABLE"


class DownloadAccepted(BaseModel):
    """200 when the download is done, 202 while it runs (a failure answers in the error shape, with `download`)."""

    download: DownloadState


class TokenState(BaseModel):
    configured: bool
    masked: str | None  # the first and last characters only; the token itself is never echoed


class TokenDeleted(BaseModel):
    configured: Literal[False] = False
    deleted: bool
