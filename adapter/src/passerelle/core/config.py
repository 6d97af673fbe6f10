"""The adapter's one source of configuration: environment variables and an optional `.env`."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

CommaList = Annotated[list[str], NoDecode]


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class UpstreamSetting(BaseModel):
    """One upstream of TRITON_UPSTREAMS: a Triton, or its replicas, and the models it serves."""

    model_config = ConfigDict(extra="forbid")
    grpc: str = Field(min_length=1)  # host:port, ip:port,ip:port (replicas), or dns:///name:port (a headless Service)
    http: str | None = None  # Triton's HTTP URL (audio held in memory travels there); a Service over the replicas
    models: list[str] = Field(min_length=1)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # Where the adapter listens.
    adapter_host: str = "127.0.0.1"
    adapter_port: int = 8080
    log_level: str = "INFO"
    # Processes serving the API (uvicorn workers). Each has its own event loop and preparation pool;
    # what they must agree on is shared (docs/configuration.md, "Several workers").
    adapter_workers: int = Field(default=1, ge=1)

    # Triton.
    triton_grpc_url: str = "127.0.0.1:8001"
    triton_http_url: str = "http://127.0.0.1:8000"
    triton_metrics_url: str = "http://127.0.0.1:8002/metrics"
    # Several Tritons (JSON): {"llm": {"grpc": "dns:///triton-llm:8001", "http": "http://triton-llm:8000",
    # "models": ["qwen"]}, ...}. Models no upstream names are served by TRITON_GRPC_URL/TRITON_HTTP_URL
    # (docs/scale-out.md).
    triton_upstreams: dict[str, UpstreamSetting] = Field(default_factory=dict)
    # The repositories Triton serves (comma-separated, as Triton takes several --model-repository).
    model_repository: Annotated[list[Path], NoDecode] = Field(default_factory=lambda: [Path("model_repository")])
    profile: Literal["auto", "cpu", "gpu"] = "auto"

    # The shared model cache: Hugging Face layout under `hub/`, locally built models beside it.
    model_cache_dir: Path = Path.home() / ".cache" / "passerelle" / "models"

    # Model lifecycle: load a known model on its first request, and which to load at start.
    lazy_load_models: bool = True
    preload_models: CommaList = Field(default_factory=list)
    model_load_timeout_s: float = 600.0
    # How long Triton's "model ready" answer is trusted before the next request asks again (0: every request).
    model_ready_recheck_s: float = Field(default=1.0, ge=0.0)
    unavailable_retry_after_s: int = 10

    # Idle time-to-live before a model is unloaded to free memory: -1 never, 0 as soon as it is idle,
    # N seconds. DEFAULT_MODEL_TTL_S applies to every model; MODEL_TTL_S=qwen=600,canary=-1 overrides per model.
    default_model_ttl_s: int = Field(default=-1, ge=-1)
    model_ttl_s: Annotated[dict[str, int], NoDecode] = Field(default_factory=dict)

    # Control plane.
    admin_api_key: SecretStr | None = None
    status_interval_s: float = Field(default=5.0, gt=0)
    metrics_window_s: int = Field(default=900, ge=60)
    hf_hub_offline: bool = Field(default=False, validation_alias="HF_HUB_OFFLINE")

    # HTTP surface.
    cors_origins: CommaList = Field(default_factory=list)
    openai_api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    # The built dashboard (dashboard/, built by set-up) and the path it is served at.
    frontend_dist: Path | None = None
    dashboard_path: str = Field(default="/", pattern=r"^/([A-Za-z0-9._~-]+/?)*$")
    # The names a browser may use for the admin API and the dashboard (the Host header): anything
    # else is refused there, which stops DNS rebinding. PUBLIC_HOSTNAME adds the name users browse to.
    allowed_hosts: CommaList = Field(default_factory=lambda: ["localhost", "127.0.0.1", "::1"])
    public_hostname: str | None = None
    max_request_body_bytes: int = 32 * 1024 * 1024
    # Requests one API key may have in flight at once (a stream counts until its last event); more
    # get 429 with Retry-After. Per worker process. 0 turns the cap off, the default: one key often
    # stands for a whole application (bench_llm runs 64 streams on one key), so the operator chooses.
    max_concurrent_requests_per_key: int = Field(default=0, ge=0)
    # Threads that prepare requests off the event loop (chat templates, tokenizers, image decoding).
    # A request holds at most one, so one heavy request never takes them all.
    prepare_workers: int = Field(default_factory=lambda: max(2, min(8, os.cpu_count() or 2)), ge=1)
    # Freed memory goes back to the system once the resident size has grown by this much (checked every
    # MEMORY_TRIM_INTERVAL_S; 0 turns it off): glibc would otherwise keep a large request's peak.
    memory_trim_growth_bytes: int = Field(default=32 * 1024 * 1024, ge=0)
    memory_trim_interval_s: float = Field(default=2.0, gt=0)

    # Images in chat messages.
    max_image_pixels: int = 16 * 1024 * 1024
    max_image_bytes: int = 20 * 1024 * 1024
    allow_image_urls: bool = False
    image_url_allowed_hosts: CommaList = Field(default_factory=list)
    image_url_allowed_private_networks: CommaList = Field(default_factory=list)
    image_url_timeout_s: float = 10.0
    image_url_max_redirects: int = 3

    # Audio uploads: decoded by ffmpeg to 16 kHz mono PCM. The defaults let a one-hour recording
    # through (a 44.1 kHz stereo WAV hour is about 635 MB); longer or larger gets 413.
    max_audio_upload_bytes: int = Field(default=1024 * 1024 * 1024, gt=0)
    max_audio_duration_s: float = Field(default=3 * 3600, gt=0)
    # Each ffprobe or ffmpeg run is killed after this long (a 3 h file decodes in about a minute
    # here), and at most this many run at once (the others wait their turn).
    audio_decode_timeout_s: float = Field(default=300.0, gt=0)
    audio_decode_concurrency: int = Field(default_factory=lambda: max(2, os.cpu_count() or 2), ge=1)
    ffmpeg_binary: str = "ffmpeg"
    ffprobe_binary: str = "ffprobe"
    # How decoded PCM reaches Triton: "shared_memory" (ffmpeg writes it into a POSIX shared-memory
    # object that Triton maps: the adapter never holds it; needs Triton on this host, or a shared
    # /dev/shm), "http" (decoded into the adapter's memory, one copy, streamed to Triton's HTTP
    # binary protocol), or "auto" (shared memory when Triton's gRPC URL is loopback).
    audio_transfer: Literal["auto", "shared_memory", "http"] = "auto"
    shared_memory_dir: Path = Path("/dev/shm")
    # Audio requests that name no language: the repository's language-identification model
    # (`langid`) listens to a few speech windows and names it, unless this setting names one
    # (an ISO 639-1 code Canary speaks), which skips the identification.
    default_audio_language: str | None = None

    @field_validator(
        "preload_models",
        "cors_origins",
        "allowed_hosts",
        "image_url_allowed_hosts",
        "image_url_allowed_private_networks",
        mode="before",
    )
    @classmethod
    def _comma_lists(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator("openai_api_keys", "model_repository", mode="before")
    @classmethod
    def _keys(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator("model_ttl_s", mode="before")
    @classmethod
    def _ttls(cls, value: object) -> object:
        if isinstance(value, str):
            pairs = [item.split("=", 1) for item in value.split(",") if item.strip()]
            return {key.strip(): int(ttl) for key, ttl in pairs}
        return value

    @field_validator("admin_api_key", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @property
    def audio_through_shared_memory(self) -> bool:
        if self.audio_transfer != "auto":
            return self.audio_transfer == "shared_memory"
        host = self.triton_grpc_url.rsplit(":", 1)[0].strip("[]")
        return host in ("127.0.0.1", "localhost", "::1") and self.shared_memory_dir.is_dir()

    def ttl_for(self, model: str) -> int:
        return self.model_ttl_s.get(model, self.default_model_ttl_s)

    @property
    def hf_token_file(self) -> Path:
        return self.model_cache_dir / ".hf_token"

    @field_validator("image_url_allowed_private_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for network in value:
            ipaddress.ip_network(network, strict=False)
        return value

    @field_validator("image_url_allowed_hosts", "allowed_hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        return [host.lower().rstrip(".") for host in value]

    @property
    def browser_hosts(self) -> frozenset[str]:
        """Host names the admin API and the dashboard answer to (without port)."""
        names = set(self.allowed_hosts)
        if self.public_hostname:
            names.add(self.public_hostname.lower().rstrip("."))
        if self.adapter_host not in ("0.0.0.0", "::", ""):
            names.add(self.adapter_host.lower())
        return frozenset(names)

    @property
    def dashboard_prefix(self) -> str:
        """DASHBOARD_PATH without its trailing slash ("" for the root)."""
        return self.dashboard_path.rstrip("/")
