# Production Triton Inference Server for passerelle.
#
# NVIDIA's vLLM container as it ships (Triton, its Python 3.12, torch, vLLM and NVIDIA's vLLM backend
# at /opt/tritonserver/backends/vllm), plus what passerelle adds to Triton's Python:
#   - the audio engines of the Python-backend models: NeMo (`canary`, `langid`), pyannote.audio (`pyannote`)
#     and silero-vad, installed around NVIDIA's packages, never over them (see the install step);
#   - `passerelle_triton`, the code those models share, and its .pth start-up hook.
# The CPU stand-in backend (triton-python/backends/vllm_standin) is deliberately NOT copied: it exists
# only for machines without NVIDIA's backend, and here NVIDIA's backend serves `backend: "vllm"`.
#
# Build from the repository root (the build context must be the root):
#   docker build -f docker/triton.Dockerfile -t passerelle/triton .
#   docker build -f docker/triton.Dockerfile --build-arg TRITON_TAG=26.01 -t passerelle/triton .
#
# The tag is pinned to 26.01 (compose.yaml and .env.example default to the same; a test checks that
# they agree). Why that one:
#   - Qwen3-VL needs vLLM >= 0.11, which the vllm-python-py3 images carry from 25.11 on; the build
#     fails on an older tag (the vLLM check below).
#   - The adapter sends structured outputs (JSON schema, regex, choice, grammar; also how `required`
#     and named tool choices are constrained) under the `structured_outputs` key of
#     `sampling_parameters` (adapter/src/passerelle/chat/). NVIDIA's vLLM backend reads that
#     key only after 25.11 (vllm_backend commit 83179b1, 2025-11-25; before it, the key was
#     `guided_decoding`, and a 25.11 image would ignore the constraint without an error).
#   - 26.01 is the first monthly release that carries both, so the fewest untested changes.
# For a byte-for-byte pin, build FROM the tag's digest (docker buildx imagetools inspect
# nvcr.io/nvidia/tritonserver:26.01-vllm-python-py3) once you have pulled it.

ARG TRITON_TAG=26.01
FROM nvcr.io/nvidia/tritonserver:${TRITON_TAG}-vllm-python-py3

LABEL org.opencontainers.image.title="passerelle-triton" \
      org.opencontainers.image.description="Triton Inference Server (NVIDIA vLLM backend, NeMo Canary, pyannote) serving passerelle's model repository"

# A failing command anywhere in a pipeline fails the step.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Build-time pip settings (ARG: not in the running container's environment). Everything goes into
# the image's own Python, the one the Python-backend stub embeds (the first python3 on PATH); its
# Ubuntu 24.04 interpreter may carry the PEP 668 marker, and we do mean to install into it.
ARG PIP_BREAK_SYSTEM_PACKAGES=1
ARG PIP_DISABLE_PIP_VERSION_CHECK=1
ARG PIP_ROOT_USER_ACTION=ignore

# Fail early, before the long install, when:
#   - the image has no NVIDIA vLLM backend, or vLLM is older than 0.11 (Qwen3-VL);
#   - NVIDIA's entrypoint, used below, has moved.
RUN test -f /opt/tritonserver/backends/vllm/model.py \
    && test -x /opt/nvidia/nvidia_entrypoint.sh \
    && python3 -c "from importlib.metadata import version; v = version('vllm'); major, minor = (int(p) for p in v.split('.')[:2]); assert (major, minor) >= (0, 11), f'vLLM {v} < 0.11: Qwen3-VL needs a tritonserver tag >= 25.11'; print('vLLM', v)"

# The audio engines, installed WITHOUT replacing anything NVIDIA built. The versions are those of
# triton-python/requirements.in (keep them in step); nvidia-ml-py and psutil are for the `system`
# model (GPU facts through NVML, host facts for the admin API).
#
# 1. torchaudio. pyannote.audio imports it unconditionally, and NVIDIA's torch builds (versions such
#    as 2.9.0a0+<commit>.nv25.10) usually come without it. PyPI's torchaudio pins one exact PyPI torch
#    and its compiled libraries are linked against that build, so when the image has none we take the
#    newest release not newer than torch's minor version, without dependencies, delete its compiled
#    libraries and drop its `torch==` pin from its metadata. torchaudio then runs as pure Python on
#    NVIDIA's torch, which is all pyannote uses (Kaldi fbank, resampling): the waveform it gets is
#    already decoded. The local CPU environment does the same (triton-python/overrides.txt, and
#    passerelle_stack/environments.py's _strip_torchaudio_libraries). An image that ships torchaudio
#    keeps its own.
# 2. The pins. The image's own `pip list --format=freeze` (pip freeze, but always name==version: NVIDIA's
#    packages can be installed from local wheels, which `pip freeze` writes as `name @ file://...`, and
#    pip refuses links as constraints), filtered to what must not move, becomes a constraints file:
#    torch and its family (torchvision, torchaudio, the Triton compiler: `triton`, or `pytorch-triton`
#    in NVIDIA's builds), numpy (the stub's tensors and every compiled extension), vLLM and its compiled
#    kernels (xformers, flashinfer), transformers/tokenizers/huggingface-hub (what vLLM's Qwen3-VL code
#    and the cache layout rely on), numba/llvmlite (compiled, pinned by vLLM), the CUDA bindings and
#    NVIDIA's CUDA-library wheels (nvidia-*), TensorRT. pip must then choose NeMo's and pyannote's
#    dependencies among versions that work with those, or fail the build; it can never swap one out.
#    The file is kept in the image (/usr/local/share/passerelle/nvidia-pins.txt) for later installs.
# 3. The check. `pip check` runs before and after; a conflict that was not there before fails the
#    build (conflicts NVIDIA's image already has are reported, not ours to fix). Every pinned package
#    must still be at its version afterwards. pip may still move packages outside the pins (e.g.
#    `packaging` goes below 25 for lightning 2.4.0, the one version both NeMo's and pyannote's ranges
#    allow); the `pip check` comparison is what proves vLLM's own requirements still hold.
# 4. The smoke test: the three engines import, offline and without telemetry (as at run time), and
#    torchaudio's Kaldi fbank runs. The build has no GPU; this needs none.
#
# Not installed: ffmpeg. Triton never sees an audio file: the adapter decodes every upload to 16 kHz
# mono float32 PCM and sends that. torchcodec (a hard dependency of pyannote.audio 4, its file
# reader) is installed but unused; without FFmpeg's libraries it cannot load, and pyannote only
# warns about that at import.
RUN critical='^(torch|torchvision|torchaudio|triton|pytorch[-_.]triton|numpy|vllm|xformers|flashinfer[-_.]python|transformers|tokenizers|huggingface[-_.]hub|numba|llvmlite|cuda[-_.]python|cuda[-_.]bindings|cupy[-_.a-z0-9]*|nvidia[-_.][-_.a-z0-9]+|tensorrt[-_.a-z0-9]*)==' \
    && pins=/usr/local/share/passerelle/nvidia-pins.txt \
    && mkdir -p "$(dirname "$pins")" \
    && if ! python3 -c "import importlib.metadata as m; m.version('torchaudio')" 2>/dev/null; then \
         below=$(python3 -c "from importlib.metadata import version; major, minor = (int(p) for p in version('torch').split('.')[:2]); print(f'{major}.{minor + 1}')") \
         && python3 -m pip install --no-cache-dir --no-deps "torchaudio>=2.8,<${below}" \
         && site=$(python3 -m pip show torchaudio | sed -n 's/^Location: //p') \
         && rm -f "$site"/torchaudio/lib/*.so \
         && sed -i '/^Requires-Dist: torch *[=<>!~(;]/d' "$site"/torchaudio-*.dist-info/METADATA \
         && echo "torchaudio: the image has none; installed $(python3 -m pip show torchaudio | sed -n 's/^Version: //p') as pure Python over torch $(python3 -m pip show torch | sed -n 's/^Version: //p')"; \
       fi \
    && python3 -m pip list --format=freeze | grep -iE "$critical" | sort > "$pins" \
    && echo "Pinned to the image's versions:" && cat "$pins" \
    && { python3 -m pip check > /tmp/pip-check.before || true; } \
    && echo "pip check before (the image's own state):" && cat /tmp/pip-check.before \
    && python3 -m pip install --no-cache-dir --constraint "$pins" \
         "nemo_toolkit[asr]==3.0.0" "pyannote.audio==4.0.7" "silero-vad==6.2.3" "nvidia-ml-py>=12" "psutil>=5.9" \
    && { python3 -m pip check > /tmp/pip-check.after || true; } \
    && if grep -v '^No broken requirements found' /tmp/pip-check.after | grep -vxFf /tmp/pip-check.before; then \
         echo "pip check: the conflicts above are new: the audio packages broke requirements of the image's own packages" >&2 && exit 1; \
       fi \
    && python3 -m pip list --format=freeze | grep -iE "$critical" | sort > /tmp/pins.after \
    && if grep -vxFf /tmp/pins.after "$pins"; then \
         echo "the packages above were pinned but have changed" >&2 && exit 1; \
       fi \
    && rm -f /tmp/pip-check.before /tmp/pip-check.after /tmp/pins.after \
    && HF_HUB_OFFLINE=1 PYANNOTE_METRICS_ENABLED=false python3 -c "import nemo.collections.asr, pyannote.audio, silero_vad" \
    && python3 -c "import torch, torchaudio.compliance.kaldi as kaldi; kaldi.fbank(torch.zeros(1, 16000), num_mel_bins=80)" \
    && python3 -c "from importlib.metadata import version; print(*(f'{p} {version(p)}' for p in ('torch', 'torchaudio', 'numpy', 'vllm', 'transformers', 'nemo_toolkit', 'pyannote.audio', 'silero-vad')), sep='\n')" \
    && python3 -c "from importlib.metadata import entry_points; print('vLLM general plugins, all off (VLLM_PLUGINS below):', sorted(e.name for e in entry_points(group='vllm.general_plugins')))"

# Only the shared package: never the stand-in backend (see the header). Copied after the long
# install above, so that a change to it does not reinstall NeMo.
COPY triton-python/passerelle_triton /tmp/passerelle_triton

# --no-deps: it declares no dependencies and must not touch anything installed above. Building the
# wheel fetches its build backend (hatchling) from PyPI into pip's throw-away build environment;
# nothing of it stays in the image. The checks after the install fail the build when:
#   - the .pth start-up hook is not run by the image's interpreter (it sets the UTF-8 locale that
#     the stub's embedded interpreter lacks, see passerelle_triton/embedded_startup.py);
#   - silero-vad cannot run its bundled model (CPU, no download): one second of silence must give
#     no speech.
RUN python3 -m pip install --no-cache-dir --no-deps /tmp/passerelle_triton \
    && rm -rf /tmp/passerelle_triton \
    && python3 -c "import sys; assert 'passerelle_triton.embedded_startup' in sys.modules, 'passerelle_triton.pth was not run at start-up'" \
    && python3 -c "import numpy as np; from passerelle_triton import vad; assert vad.speech_regions(np.zeros(16000, dtype=np.float32)) == []"

# Hugging Face cache on the shared model-cache volume (mounted at /models/cache; same layout as
# the local stack: hub/ for the Hugging Face cache, hf-home/ for the rest). HF_HUB_OFFLINE=0 lets
# vLLM fetch a missing model at load time; set it to 1 once the cache is filled (see docker/README.md).
# The audio models never download, whatever it says: they resolve their repos from hub/ with
# local_files_only (passerelle_triton/artifacts.py), so fill the cache first.
# VLLM_CACHE_ROOT keeps vLLM's compile caches on the volume so restarts start faster.
# VLLM_PLUGINS empty: vLLM loads no general plugin. NeMo registers one (`nemo_speechlm`, an
# entry point in vllm.general_plugins) whose failed import leaves llvmlite loaded in vLLM's worker
# processes, where vLLM's kernel rebinding then trips over it; vLLM's platforms are built in, not
# plugins, so nothing vLLM needs is lost (the build log lists the plugins this turns off).
# PYANNOTE_METRICS_ENABLED=false: pyannote.audio 4 sends usage telemetry by default (DNS lookups and
# requests to otel.pyannote.ai, on every pipeline run).
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
    VLLM_PLUGINS="" \
    PYANNOTE_METRICS_ENABLED=false \
    DO_NOT_TRACK=1 \
    TOKENIZERS_PARALLELISM=false

# The stub's embedded interpreters put the working directory on sys.path: start from an empty one,
# so that nothing there can shadow a package.
WORKDIR /opt/passerelle

# The model repository (git's model_repository/, the production configuration; Triton ignores the
# profiles/ folders, which are not version directories). Kubernetes runs it from the image;
# compose mounts the checkout's copy over it, read-only.
COPY model_repository /models/repository

# 8000 HTTP (KServe v2, health), 8001 gRPC (the adapter's streams), 8002 Prometheus metrics.
EXPOSE 8000 8001 8002

HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/v2/health/live', timeout=4)"]

# The model repository is git's model_repository/ as it is (it is the production configuration),
# at /models/repository (above). Explicit model control: the adapter loads models
# (PRELOAD_MODELS, or lazily on a first request); the small `system` model (GPU and dependency facts
# for the admin API) is loaded at start; Kubernetes appends --load-model for its group's models and
# --strict-readiness=true (a repeated flag: the last value wins), so that a pod is ready only once
# they are (docker/kubernetes/). A generous /dev/shm must come with the container (compose:
# shm_size; Kubernetes: an emptyDir of medium Memory) for the Python backend's shared memory. Each Python model instance starts with
# a 16 MB region that grows in 64 MB steps (shm-growth-byte-size; the default step is 1 MB): audio
# tensors are large, an hour of 16 kHz float32 PCM is 230 MB. NVIDIA's entrypoint prints the banner
# and checks the driver before exec'ing tritonserver. Arguments given to `docker run` or compose's
# `command:` are appended as extra tritonserver flags (e.g. --log-verbose=1).
ENTRYPOINT ["/opt/nvidia/nvidia_entrypoint.sh", "tritonserver", \
            "--model-repository=/models/repository", \
            "--model-control-mode=explicit", \
            "--allow-gpu-metrics=true", \
            "--strict-readiness=false", \
            "--backend-config=python,shm-default-byte-size=16777216", \
            "--backend-config=python,shm-growth-byte-size=67108864", \
            "--http-port=8000", \
            "--grpc-port=8001", \
            "--metrics-port=8002", \
            "--load-model=system"]
CMD []
