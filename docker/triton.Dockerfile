# Production Triton Inference Server for passerelle.
#
# NVIDIA's vLLM container as it ships (Triton, its Python 3.12, vLLM and NVIDIA's vLLM backend at
# /opt/tritonserver/backends/vllm), plus the one thing passerelle adds to Triton's Python:
# `passerelle_triton` and its .pth start-up hook. The CPU stand-in backend
# (triton-python/backends/vllm_standin) is deliberately NOT copied: it exists only for machines
# without NVIDIA's backend, and here NVIDIA's backend serves `backend: "vllm"`.
#
# Build from the repository root (the build context must be the root):
#   docker build -f docker/triton.Dockerfile -t passerelle/triton .
#   docker build -f docker/triton.Dockerfile --build-arg TRITON_TAG=26.01 -t passerelle/triton .
# Qwen3-VL needs vLLM >= 0.11, which the vllm-python-py3 images carry from 25.11 on; the build
# fails on an older tag.

ARG TRITON_TAG=25.11
FROM nvcr.io/nvidia/tritonserver:${TRITON_TAG}-vllm-python-py3

LABEL org.opencontainers.image.title="passerelle-triton" \
      org.opencontainers.image.description="Triton Inference Server (NVIDIA vLLM backend) serving passerelle's model repository"

# Only the shared package: never the stand-in backend (see the header).
COPY triton-python/passerelle_triton /tmp/passerelle_triton

# Install into the image's own Python, the one the Python-backend stub embeds (the first python3 on
# PATH), without touching its dependencies: --no-deps keeps NVIDIA's numpy, torch and vLLM exactly
# as shipped (no numpy 1.26 pin here: this Triton's Python backend handles numpy 2).
# PIP_BREAK_SYSTEM_PACKAGES: the image's Ubuntu 24.04 Python may carry the PEP 668 marker; we do
# mean to install into it. Building the wheel fetches its build backend (hatchling) from PyPI into
# pip's throw-away build environment; nothing of it stays in the image. The checks after the install fail the build early when:
#   - the image has no NVIDIA vLLM backend, or vLLM is older than 0.11 (Qwen3-VL);
#   - the .pth start-up hook is not run by the image's interpreter (it sets the UTF-8 locale that
#     the stub's embedded interpreter lacks, see passerelle_triton/embedded_startup.py);
#   - NVIDIA's entrypoint, used below, has moved.
# nvidia-ml-py and psutil let the `system` model report GPUs (NVML) and the host to the admin API.
# NeMo (Canary) and pyannote will be installed into this same Python by a later change.
RUN test -f /opt/tritonserver/backends/vllm/model.py \
    && test -x /opt/nvidia/nvidia_entrypoint.sh \
    && PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir --no-deps --disable-pip-version-check /tmp/passerelle_triton \
    && PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir --disable-pip-version-check "nvidia-ml-py>=12" "psutil>=5.9" \
    && rm -rf /tmp/passerelle_triton \
    && python3 -c "import sys; assert 'passerelle_triton.embedded_startup' in sys.modules, 'passerelle_triton.pth was not run at start-up'" \
    && python3 -c "from importlib.metadata import version; v = version('vllm'); major, minor = (int(p) for p in v.split('.')[:2]); assert (major, minor) >= (0, 11), f'vLLM {v} < 0.11: Qwen3-VL needs a tritonserver tag >= 25.11'; print('vLLM', v)"

# Hugging Face cache on the shared model-cache volume (mounted at /models/cache; same layout as
# the local stack: hub/ for the Hugging Face cache, hf-home/ for the rest). HF_HUB_OFFLINE=0 lets
# vLLM fetch a missing model at load time; set it to 1 once the cache is filled (see docker/README.md).
# VLLM_CACHE_ROOT keeps vLLM's compile caches on the volume so restarts start faster.
# DL3064 is a false positive: it reads TOKENIZERS_PARALLELISM as a secret ("TOKEN"); no secret is set
# here (HF_TOKEN, when needed, comes from the environment at run time, never the image).
# hadolint ignore=DL3064
ENV MODEL_CACHE_DIR=/models/cache \
    HF_HOME=/models/cache/hf-home \
    HF_HUB_CACHE=/models/cache/hub \
    HF_HUB_OFFLINE=0 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    VLLM_CACHE_ROOT=/models/cache/vllm \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1 \
    TOKENIZERS_PARALLELISM=false

# The stub's embedded interpreters put the working directory on sys.path: start from an empty one,
# so that nothing there can shadow a package.
WORKDIR /opt/passerelle

# 8000 HTTP (KServe v2, health), 8001 gRPC (the adapter's streams), 8002 Prometheus metrics.
EXPOSE 8000 8001 8002

HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/v2/health/live', timeout=4)"]

# The model repository is git's model_repository/ as it is (it is the production configuration),
# mounted read-only at /models/repository. Explicit model control: the adapter loads models
# (PRELOAD_MODELS, or lazily on a first request); the small `system` model (GPU and dependency facts
# for the admin API) is loaded at start. A generous /dev/shm must come with the container
# (compose: shm_size) for the Python backend's shared memory. NVIDIA's entrypoint prints the banner
# and checks the driver before exec'ing tritonserver. Arguments given to `docker run` or compose's
# `command:` are appended as extra tritonserver flags (e.g. --log-verbose=1).
ENTRYPOINT ["/opt/nvidia/nvidia_entrypoint.sh", "tritonserver", \
            "--model-repository=/models/repository", \
            "--model-control-mode=explicit", \
            "--allow-gpu-metrics=true", \
            "--strict-readiness=false", \
            "--backend-config=python,shm-default-byte-size=16777216", \
            "--http-port=8000", \
            "--grpc-port=8001", \
            "--metrics-port=8002", \
            "--load-model=system"]
CMD []
