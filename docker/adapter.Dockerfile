# passerelle's adapter: the OpenAI-compatible FastAPI front end. No GPU, no Triton inside: it talks
# to the `triton` container over gRPC/HTTP and reads the model repository and the model cache
# (tokenizers and chat templates) from read-only mounts. It decodes audio uploads itself, with
# Debian's ffmpeg, and sends Triton 16 kHz mono PCM.
#
# Build from the repository root (the build context must be the root):
#   docker build -f docker/adapter.Dockerfile -t passerelle/adapter .

ARG PYTHON_IMAGE=python:3.11-slim
ARG NODE_IMAGE=node:20-bookworm-slim

# ---- the dashboard (dashboard/, Vite) ------------------------------------------------------------
# Built here and served by the adapter (FRONTEND_DIST); Node.js is not in the runtime image.
FROM ${NODE_IMAGE} AS dashboard
WORKDIR /dashboard
COPY dashboard/package.json dashboard/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY dashboard/ ./
RUN npm run build

# ---- dependencies ------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS deps

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /build
COPY adapter/pyproject.toml adapter/requirements.lock ./

# Which requirements, and why: adapter/requirements.lock is the tested, pinned set, but it is
# compiled with the `dev` extra (pytest, ruff, mypy, openai...), which has no place in production;
# `pip install ./adapter` would take the runtime list but resolve fresh, untested versions. So:
# the runtime dependencies are read from pyproject.toml's [project].dependencies, and the lock is
# passed as a *constraints* file, so every one of them (and every transitive one) is installed at
# exactly its locked version, and nothing from the dev extra is installed at all.
# The adapter's code is not pip-installed: like the local stack (scripts/lib/bootstrap.sh), it runs
# from its source on PYTHONPATH (copied in the runtime stage below).
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > runtime-requirements.txt \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --constraint requirements.lock --requirement runtime-requirements.txt \
    && /opt/venv/bin/pip check

# ---- runtime -----------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="passerelle-adapter" \
      org.opencontainers.image.description="OpenAI-compatible gateway in front of Triton Inference Server"

# ffmpeg and ffprobe (Debian's `ffmpeg` package): every audio upload is probed (container format,
# duration) and decoded to 16 kHz mono float32 PCM by these two binaries (passerelle/audio/decoding.py),
# and the formats the API accepts (wav, flac, mp3, ogg, m4a/mp4, aac, webm) are all in Debian's build.
# Not version-pinned (DL3008): the version follows the base image's Debian release and its security
# updates, and a pin would break the build as soon as the archive moves on.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg \
    && rm -rf /var/lib/apt/lists/* \
    && ffmpeg -hide_banner -version > /dev/null \
    && ffprobe -hide_banner -version > /dev/null

RUN groupadd --system --gid 10001 passerelle \
    && useradd --system --uid 10001 --gid passerelle --create-home --home-dir /home/passerelle \
       --shell /usr/sbin/nologin passerelle

COPY --from=deps /opt/venv /opt/venv
# Only the `passerelle` package: `passerelle_stack` (adapter/src/passerelle_stack) is the local ops
# tooling that installs and launches tritonserver; nothing at run time imports it.
COPY adapter/src/passerelle /app/src/passerelle
COPY --from=dashboard /dashboard/dist /app/dashboard
# The model repository the adapter reads (config.pbtxt: tasks, hf_repo, backends); compose mounts
# the checkout's copy over it, Kubernetes uses this one (the Triton image carries the same).
COPY model_repository /models/repository

# Settings are read from the environment (passerelle/core/config.py; names are the upper-case field names).
# These are the container's defaults; docker/compose.yaml sets the deployment's values. ffmpeg and
# ffprobe are named by absolute path, so nothing earlier on PATH (the venv's bin/) can stand in.
# The image runs with a read-only root filesystem (compose: read_only; Kubernetes:
# readOnlyRootFilesystem). It writes only to /tmp (audio uploads are spooled there by Starlette's
# form parser while they are decoded, up to MAX_AUDIO_UPLOAD_BYTES each), to the model cache
# (/models/cache: admin downloads, the HF token, load records; HF_HOME points there too, so that
# huggingface_hub never writes to the read-only home) and to /dev/shm (AUDIO_TRANSFER=shared_memory).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app/src \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ADAPTER_HOST=0.0.0.0 \
    ADAPTER_PORT=8080 \
    PROFILE=gpu \
    MODEL_REPOSITORY=/models/repository \
    MODEL_CACHE_DIR=/models/cache \
    HF_HOME=/models/cache/hf-home \
    HF_HUB_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    FFMPEG_BINARY=/usr/bin/ffmpeg \
    FFPROBE_BINARY=/usr/bin/ffprobe \
    FRONTEND_DIST=/app/dashboard

WORKDIR /app
# Numeric, so that runtimes that check for non-root without reading /etc/passwd (Kubernetes
# runAsNonRoot) accept it.
USER 10001:10001

EXPOSE 8080

# /health answers 200 only when Triton is live and ready, 503 otherwise (so this also reports a
# Triton that is down, or still loading a model).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4)"]

CMD ["python", "-m", "passerelle"]
