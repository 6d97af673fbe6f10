"""One real stack per test session: tritonserver (explicit model control) with the CPU profile's
repository and the tiny Qwen3-VL-MoE on vLLM, plus the adapter, all on free loopback ports."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import openai
import pytest
import tritonclient.grpc as grpcclient

from hub_server import HubServer
from passerelle_stack.launcher import Stack, StackConfig, free_port
from speech import SpeechSet, build

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

os.environ.setdefault("HF_HUB_OFFLINE", "1")
API_KEYS = ("test-key-alpha", "test-key-beta")
ADMIN_KEY = "test-admin-key-0123"
LIFECYCLE_REPOSITORY = Path(__file__).parent / "model_repositories" / "lifecycle"
CORS_ORIGIN = "http://dashboard.example"
SPARE_MODEL = "qwen_spare"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that start a second vLLM engine run last: Triton 2.51's Python backend shares the
    vllm:* metric families between engines, and the cancellation tests read those metrics. After
    them come the modules that set `RUNS_LAST = True` (the scan of the session's logs for secrets)."""
    items.sort(
        key=lambda item: (
            bool(getattr(getattr(item, "module", None), "RUNS_LAST", False)),
            item.get_closest_marker("second_vllm_engine") is not None,
        )
    )


_MODULE_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    module = report.nodeid.split("::", 1)[0]
    _MODULE_SECONDS[module] = _MODULE_SECONDS.get(module, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The time of each test module (fixtures included where they first run): the suite's phases."""
    terminalreporter.section("time per test module")
    for module, seconds in _MODULE_SECONDS.items():
        terminalreporter.write_line(f"{seconds:7.1f} s  {module}")


def visible_text(token: str) -> str:
    """What a sampled token adds to the answer's text. Random weights may sample a special token, which vLLM
    shows in logprobs but leaves out of the text, or a byte-level token whose text is an incomplete UTF-8
    sequence ("\ufffd")."""
    return "" if re.fullmatch(r"<\|[^|<>]*\|>", token) else token.replace("\ufffd", "")


def png_bytes(width: int, height: int, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class ImageServer:
    url: str
    hits: list[str]


class _ImageHandler(BaseHTTPRequestHandler):
    hits: list[str] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.hits.append(self.path)
        if self.path.startswith("/image.png"):
            body = png_bytes(64, 64)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path.startswith("/redirect-local"):
            self.send_response(302)
            self.send_header("Location", "/image.png")
            self.end_headers()
        elif self.path.startswith("/redirect-away"):
            self.send_response(302)
            self.send_header("Location", "http://localhost.invalid/image.png")
            self.end_headers()
        elif self.path.startswith("/huge.png"):
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(50 * 1024 * 1024))
            self.end_headers()
        else:
            self.send_response(404)
            self.end_headers()


@pytest.fixture(scope="session")
def image_server() -> Iterator[ImageServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ImageHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield ImageServer(f"http://127.0.0.1:{server.server_address[1]}", _ImageHandler.hits)
    server.shutdown()


def _spare_repository(stack: Stack, root: Path) -> Path:
    """A second repository (Triton takes several) holding a copy of qwen that starts unloaded."""
    repository = root / "spare_repository"
    shutil.rmtree(repository, ignore_errors=True)
    shutil.copytree(stack.repository / "qwen", repository / SPARE_MODEL)
    engine = repository / SPARE_MODEL / "1" / "model.json"
    args = json.loads(engine.read_text())
    args["served_model_name"] = "passerelle/tiny-qwen3-vl-moe-spare"
    engine.write_text(json.dumps(args))
    return repository


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, image_server: ImageServer) -> Iterator[Stack]:
    run_dir = tmp_path_factory.mktemp("stack")
    config = StackConfig.on_free_ports(
        run_dir,
        adapter_env={
            "OPENAI_API_KEYS": ",".join(API_KEYS),
            "CORS_ORIGINS": CORS_ORIGIN,
            "ALLOW_IMAGE_URLS": "true",
            "IMAGE_URL_ALLOWED_HOSTS": "127.0.0.1,localhost.invalid",
            "IMAGE_URL_ALLOWED_PRIVATE_NETWORKS": "127.0.0.1/32",
            "MAX_REQUEST_BODY_BYTES": str(4 * 1024 * 1024),
            "MAX_IMAGE_PIXELS": str(1024 * 1024),
            "LAZY_LOAD_MODELS": "true",
            "LOG_LEVEL": "INFO",
            "ADMIN_API_KEY": ADMIN_KEY,
            "STATUS_INTERVAL_S": "1",
            "MODEL_TTL_S": "ttl_echo=2",
        },
    )
    config.extra_repositories.append(LIFECYCLE_REPOSITORY)
    stack = Stack(config)
    try:
        stack.prepare()
        config.extra_repositories.append(_spare_repository(stack, run_dir))
        stack.start_triton()
        with grpcclient.InferenceServerClient(stack.triton_grpc) as client:
            started = time.monotonic()
            client.load_model("qwen", client_timeout=600)
            print(f"qwen loaded in {time.monotonic() - started:.1f} s")
        stack.start_adapter()
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def tiny_model_dir(stack: Stack) -> Path:
    engine = json.loads((stack.repository / "qwen" / "1" / "model.json").read_text())
    return Path(engine["model"])


@pytest.fixture(scope="session")
def tokenizer(tiny_model_dir: Path) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir), local_files_only=True)


@pytest.fixture(scope="session")
def adapter_url(stack: Stack) -> str:
    return stack.adapter_url


@pytest.fixture(scope="session")
def client(adapter_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{adapter_url}/v1", api_key=API_KEYS[0], max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def async_client(adapter_url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{adapter_url}/v1", api_key=API_KEYS[1], max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def http(adapter_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=adapter_url, headers={"Authorization": f"Bearer {API_KEYS[0]}"}, timeout=120) as session:
        yield session


@pytest.fixture(scope="session")
def admin(adapter_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{adapter_url}/api/admin", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=300) as session:
        yield session


@pytest.fixture(scope="session")
def triton(stack: Stack) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(stack.triton_grpc) as client:
        yield client


def triton_metrics(stack: Stack) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.config.metrics_port}/metrics", timeout=10) as response:
        return str(response.read().decode())


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{key}="{expected}"' in head for key, expected in labels.items()):
            total += float(value)
    return total


def generation_settle(stack: Stack, timeout: float = 60) -> dict[str, float]:
    """qwen's generated tokens and requests finished by reaching max_tokens ("length"), once no
    request runs and the counters have stopped moving (the backend publishes metrics asynchronously).
    vLLM reports no finish reason for aborted requests."""
    deadline = time.monotonic() + timeout
    previous: dict[str, float] | None = None
    while time.monotonic() < deadline:
        text = triton_metrics(stack)
        current = {
            "tokens": metric_value(text, "vllm:generation_tokens_total", model="qwen"),
            "length": metric_value(text, "vllm:request_success_total", model="qwen", finished_reason="length"),
        }
        if current == previous and metric_value(text, "vllm:num_requests_running", model="qwen") == 0:
            return current
        previous = current
        time.sleep(1.0)
    raise AssertionError("the engine kept generating")


def log_lines(path: Path, fragment: str, timeout: float = 10) -> list[str]:
    """The lines of a log that contain `fragment`, waiting up to `timeout` for one to appear."""
    deadline = time.monotonic() + timeout
    while True:
        found = [line for line in path.read_text(errors="replace").splitlines() if fragment in line] if path.exists() else []
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def assert_cancels(stack: Stack, attempt: Callable[[str], None], tries: int = 3, adapter_log: str | None = "adapter") -> None:
    """`attempt(request_id)` starts a long qwen generation (ignore_eos, 4000 tokens) under that request
    id and abandons it. Each attempt prints three findings: the adapter logged that it cancelled the
    Triton request (skipped with `adapter_log=None`, for native Triton clients), the model logged that
    the cancellation reached it, and the engine stopped short of max_tokens (Triton's metrics).

    An adapter miss fails at once. Triton 2.51 now and then loses a gRPC stream cancellation on its
    side (the model's `is_cancelled()` never turns true: about 1 in 40 here); such a Triton miss is
    reported and the attempt repeated, up to `tries` attempts."""
    triton_misses: list[str] = []
    for number in range(1, tries + 1):
        request_id = uuid.uuid4().hex
        before = generation_settle(stack)
        attempt(request_id)
        after = generation_settle(stack)
        adapter = True
        if adapter_log is not None:
            adapter = bool(log_lines(stack.config.run_dir / f"{adapter_log}.log", f"cancelled Triton request {request_id}"))
        model = bool(log_lines(stack.config.run_dir / "tritonserver.log", f"Triton request '{request_id}'", timeout=5 if adapter else 0))
        aborted = after["tokens"] > before["tokens"] and after["length"] == before["length"]
        print(f"cancellation attempt {number}: request {request_id}: adapter cancelled={adapter}, model saw it={model}, aborted={aborted}")
        assert adapter, f"adapter miss: the adapter never cancelled Triton request {request_id}"
        if model:
            assert aborted, f"the model saw the cancellation of {request_id} but the engine ran on: {before} -> {after}"
            if triton_misses:
                print(f"Triton missed {len(triton_misses)} cancellation(s) before this one: {triton_misses}")
            return
        triton_misses.append(request_id)
    raise AssertionError(f"Triton missed every cancellation ({tries} in a row; about 1 in 40 expected): {triton_misses}")


class Triton:
    """Triton's own request trace at the TENSORS level: the input tensors as they reached Triton."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.new: list[Path] = []

    def _files(self) -> set[Path]:
        trace = self.stack.trace_file
        return set(trace.parent.glob(trace.name + "*"))

    @contextmanager
    def tensors(self, model: str) -> Iterator[None]:
        before = self._files()
        setting = f"{self.stack.triton_http}/v2/models/{model}/trace/setting"
        httpx.post(setting, json={"trace_level": ["TENSORS"], "trace_rate": "1", "log_frequency": "1"}).raise_for_status()
        try:
            yield
        finally:
            httpx.post(setting, json={"trace_level": ["OFF"]}).raise_for_status()
            self.new = sorted(self._files() - before, key=lambda path: int(path.suffix.lstrip(".") or 0))

    def inputs(self, name: str) -> list[str]:
        """The values of the BYTES input `name` in each traced request."""
        found = []
        for path in self.new:
            text = path.read_text(encoding="utf-8")
            found += re.findall(rf'"name":"{name}","data":"\\"(.*?)\\"","shape"', text)  # BYTES data, quoted inside
        return found

    def sampling_parameters(self) -> list[dict[str, Any]]:
        """Each traced request's `sampling_parameters`, in order (the trace writes BYTES data unescaped)."""
        found = []
        for path in self.new:
            text = path.read_text(encoding="utf-8")
            found += [json.loads(data) for data in re.findall(r'"name":"sampling_parameters","data":"\\"(.*?)\\"","shape"', text, re.S)]
        return found


@pytest.fixture(scope="session")
def speech(tmp_path_factory: pytest.TempPathFactory) -> SpeechSet:
    """The espeak-ng dialogue, its ten-minute repeat and its encodings (tests/speech.py), built once for the
    audio test modules."""
    return build(tmp_path_factory.mktemp("speech"))


def infer(triton: grpcclient.InferenceServerClient, model: str, inputs: dict[str, Any]) -> grpcclient.InferResult:
    """One native gRPC inference; each input's Triton type follows its numpy dtype."""
    tensors = []
    for name, array in inputs.items():
        dtype = {np.float32: "FP32", np.int32: "INT32", np.bool_: "BOOL", np.object_: "BYTES"}[array.dtype.type]
        tensor = grpcclient.InferInput(name, list(array.shape), dtype)
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return triton.infer(model, tensors, client_timeout=600)


def start_hub_adapter(
    stack: Stack, hub: HubServer, cache: Path, name: str, status_interval_s: float = 0.5, env: dict[str, str] | None = None
) -> str:
    """An adapter of its own that downloads from the tests' local Hub into `cache`, with the admin key
    (and `env` on top). huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE at import: the rest of
    the session stays offline."""
    return stack.start_adapter(
        name=name,
        port=free_port(),
        env={
            "HF_ENDPOINT": hub.url,
            "HF_HUB_OFFLINE": "0",
            "MODEL_CACHE_DIR": str(cache),
            "ADMIN_API_KEY": ADMIN_KEY,
            "STATUS_INTERVAL_S": str(status_interval_s),
            **(env or {}),
        },
    )


# After a SIGKILL of Triton -------------------------------------------------------------------


def backend_regions(stack: Stack) -> set[str]:
    """The /dev/shm regions of this Triton's Python-backend stubs (named on each stub's command line)."""
    found = subprocess.run(["pgrep", "-af", f"triton_python_backend_stub {stack.repository}/"], capture_output=True, text=True)
    return set(re.findall(r"triton_\w+_backend_shm_region_[0-9a-f-]+", found.stdout))


def remove_orphaned_engine_memory() -> None:
    """vLLM's engine keeps its queues in Python shared memory (/dev/shm/psm_*), hundreds of MB, which
    a SIGKILL leaves behind: remove those that no live process maps any more."""
    mapped = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            mapped.update(re.findall(r"/dev/shm/(psm_\w+)", maps.read_text()))
        except OSError:  # the process ended meanwhile
            continue
    for segment in Path("/dev/shm").glob("psm_*"):
        if segment.name not in mapped:
            segment.unlink(missing_ok=True)
