"""passerelle's STAND-IN for Triton's vLLM backend (not NVIDIA's code).

Production runs NVIDIA's vLLM backend, shipped in the
``nvcr.io/nvidia/tritonserver:<yy.mm>-vllm-python-py3`` containers. That backend
cannot be installed outside those images, so on machines without it
``scripts/serve`` installs this file as ``<backend-directory>/vllm/model.py``.
Triton then runs any model whose config says ``backend: "vllm"`` with it, through
the Python backend. It is never installed where NVIDIA's backend is present.

It implements the backend's public contract (see README, "Triton tensors") and
nothing more, driving a real ``vllm`` ``AsyncLLM`` engine:

* engine arguments: ``<model dir>/<version>/model.json`` -> ``AsyncEngineArgs``;
* auto-completed config: the inputs and outputs below, decoupled, max_batch_size 0;
* ``text_input`` is the raw prompt; ``image`` holds base64 strings (no data: prefix);
* ``sampling_parameters`` is JSON of ``SamplingParams`` fields, converted as NVIDIA's
  ``TritonSamplingParams.from_dict`` does (``build_sampling_params``; ``structured_outputs``
  itself a JSON string);
* ``exclude_input_in_output`` defaults to false when not streaming (the prompt is
  prepended) and must not be false when streaming;
* streaming responses carry only the new text; every response carries one element
  per choice (``n``), position ``i`` being choice ``i``;
* ``return_*`` switches add ``finish_reason`` (``str()`` of vLLM's reason, "None"
  while unfinished), ``cumulative_logprob``, ``logprobs`` (JSON, new tokens only),
  ``num_input_tokens`` and ``num_output_tokens`` (new tokens only);
* cancellation aborts the engine request and ends with a CANCELLED error;
* ``REPORT_CUSTOM_METRICS`` exports ``vllm:*`` counters and histograms.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import math
import os
import queue
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import triton_python_backend_utils as pb_utils

if TYPE_CHECKING:
    from vllm.outputs import RequestOutput
    from vllm.sampling_params import SamplingParams
    from vllm.v1.engine.async_llm import AsyncLLM
    from vllm_standin_metrics import stat_logger_factory

_ENGINE_ARGS_FILE = "model.json"

_BOOL_SWITCHES = (
    "return_finish_reason",
    "return_cumulative_logprob",
    "return_logprobs",
    "return_num_input_tokens",
    "return_num_output_tokens",
)

_INPUTS: list[dict[str, Any]] = [
    {"name": "text_input", "data_type": "TYPE_STRING", "dims": [1]},
    {"name": "image", "data_type": "TYPE_STRING", "dims": [-1], "optional": True},
    {"name": "stream", "data_type": "TYPE_BOOL", "dims": [1], "optional": True},
    {"name": "sampling_parameters", "data_type": "TYPE_STRING", "dims": [1], "optional": True},
    {"name": "exclude_input_in_output", "data_type": "TYPE_BOOL", "dims": [1], "optional": True},
    *({"name": name, "data_type": "TYPE_BOOL", "dims": [1], "optional": True} for name in _BOOL_SWITCHES),
]

_OUTPUTS: list[dict[str, Any]] = [
    {"name": "text_output", "data_type": "TYPE_STRING", "dims": [-1]},
    {"name": "finish_reason", "data_type": "TYPE_STRING", "dims": [-1]},
    {"name": "cumulative_logprob", "data_type": "TYPE_FP32", "dims": [-1]},
    {"name": "logprobs", "data_type": "TYPE_STRING", "dims": [-1]},
    {"name": "num_input_tokens", "data_type": "TYPE_UINT32", "dims": [1]},
    {"name": "num_output_tokens", "data_type": "TYPE_UINT32", "dims": [-1]},
]


class RequestError(ValueError):
    """The request itself is wrong; answered as an error response, never raised to Triton."""


@dataclass
class ParsedRequest:
    prompt: Any
    prompt_text: str
    stream: bool
    prepend_input: bool
    sampling: dict[str, Any]
    switches: dict[str, bool]


@dataclass
class ChoiceState:
    """What was already sent for one choice, so that responses carry only deltas."""

    text_len: int = 0
    token_count: int = 0
    logprob_count: int = 0
    latest: Any = None


@dataclass
class Delivery:
    """Shared between the engine loop and the sender thread for one request."""

    sender: Any
    cancelled: bool = False
    closed: threading.Event = field(default_factory=threading.Event)


def _input(request: Any, name: str) -> np.ndarray | None:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def _scalar_bool(request: Any, name: str, default: bool) -> bool:
    value = _input(request, name)
    return default if value is None or value.size == 0 else bool(value.reshape(-1)[0])


def _text(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def parse_request(request: Any) -> ParsedRequest:
    from PIL import Image

    text = _input(request, "text_input")
    if text is None or text.size == 0:
        raise RequestError("text_input is required")
    prompt_text = _text(text.reshape(-1)[0])

    stream = _scalar_bool(request, "stream", False)
    exclude = _input(request, "exclude_input_in_output")
    prepend_input = (not stream) if exclude is None or exclude.size == 0 else not bool(exclude.reshape(-1)[0])
    if prepend_input and stream:
        raise RequestError("When streaming, `exclude_input_in_output` = False is not allowed.")

    images = []
    raw_images = _input(request, "image")
    for index, item in enumerate([] if raw_images is None else raw_images.reshape(-1)):
        try:
            data = base64.b64decode(_text(item), validate=True)
            images.append(Image.open(io.BytesIO(data)).convert("RGB"))
        except (binascii.Error, ValueError, OSError) as exc:
            raise RequestError(f"image[{index}] is not a base64-encoded image: {exc}") from exc
    prompt: Any = {"prompt": prompt_text, "multi_modal_data": {"image": images}} if images else prompt_text

    raw_params = _input(request, "sampling_parameters")
    params_text = _text(raw_params.reshape(-1)[0]) if raw_params is not None and raw_params.size else request.parameters()
    try:
        sampling = json.loads(params_text or "{}")
    except json.JSONDecodeError as exc:
        raise RequestError(f"sampling_parameters is not valid JSON: {exc}") from exc
    if not isinstance(sampling, dict):
        raise RequestError("sampling_parameters must be a JSON object")

    switches = {name: _scalar_bool(request, name, False) for name in _BOOL_SWITCHES}
    return ParsedRequest(prompt, prompt_text, stream, prepend_input, sampling, switches)


def build_sampling_params(raw: dict[str, Any]) -> SamplingParams:
    """``sampling_parameters`` -> ``SamplingParams`` with the conversions of NVIDIA's
    ``TritonSamplingParams.from_dict`` (so that this profile accepts no more than production):

    * keys whose value is null are dropped (vLLM's defaults apply);
    * ``structured_outputs`` must be a JSON *string* of ``StructuredOutputsParams`` fields;
      ``guided_decoding`` (the pre-26.01 key, a string or an object) is mapped to it;
    * a value whose ``SamplingParams`` annotation is int, float, bool, str or ``int | None`` is
      passed through that type (``"0.5"`` becomes 0.5; any non-empty string is true); every other
      value (``logit_bias``, ``stop``, ``allowed_token_ids``, ...) reaches vLLM as JSON decoded it;
    * a structured-outputs ``json`` must be an object, ``choice`` a list of strings, ``regex`` and
      ``grammar`` must compile.
    NVIDIA's backend logs a failure here and then fails the request with an unrelated message
    ("'NoneType' object has no attribute 'lora_name'"); this stand-in answers INVALID_ARG with the cause.
    """
    from typing import Optional

    from vllm.sampling_params import SamplingParams, StructuredOutputsParams

    conversions: dict[Any, type] = {int: int, float: float, bool: bool, str: str, Optional[int]: int}  # noqa: UP045 - the backend's own key
    annotations = SamplingParams.__annotations__
    try:
        params = {key: value for key, value in raw.items() if value is not None}
        if params.pop("lora_name", None) is not None:
            raise RequestError("LoRA feature is not enabled.")
        if "structured_outputs" in params:
            params["structured_outputs"] = StructuredOutputsParams(**json.loads(params["structured_outputs"]))
        legacy = params.pop("guided_decoding", None)
        if legacy is not None:
            legacy = dict(json.loads(legacy) if isinstance(legacy, str) else legacy)
            backend = legacy.pop("backend", None)
            if backend is not None and backend not in ("xgrammar", "xgrammar:no-fallback", "auto", "xgrammar:_auto"):
                raise ValueError(f"guided_decoding.backend is no longer supported request-level. Provided: {backend}")
            params.setdefault("structured_outputs", StructuredOutputsParams(**legacy))
        for key, value in params.items():
            if key in annotations and annotations[key] in conversions:
                params[key] = conversions[annotations[key]](value)
        _check_structured_outputs(params.get("structured_outputs"))
        return SamplingParams(**params)
    except RequestError:
        raise
    except Exception as exc:
        raise RequestError(f"Was trying to create `TritonSamplingParams`, but got exception: {exc}") from exc


def _check_structured_outputs(params: Any) -> None:
    """The checks of ``TritonSamplingParams.__post_init__``."""
    if params is None:
        return
    if params.regex:
        from interegular.patterns import parse_pattern

        try:
            parse_pattern(params.regex)
        except Exception as exc:
            raise ValueError(f"Invalid regex constraint for structured outputs: {exc}") from exc
    if params.grammar:
        from xgrammar import Grammar

        try:
            Grammar.from_ebnf(params.grammar)
        except RuntimeError as exc:
            raise ValueError(f"Invalid BNF grammar for structured outputs: {exc}") from exc
    if params.choice and (not isinstance(params.choice, list) or not all(isinstance(item, str) for item in params.choice)):
        raise ValueError("structured_outputs.choice must be a list of strings")
    if params.json and not isinstance(params.json, dict):
        raise ValueError("structured_outputs.json must be a JSON schema dictionary")


def build_response(parsed: ParsedRequest, output: RequestOutput, states: list[ChoiceState], first: bool) -> Any:
    """One response for the current engine output; every tensor has one element per choice."""
    for completion in output.outputs:
        states[completion.index].latest = completion
    texts, reasons, cumulative, logprobs, counts = [], [], [], [], []
    for state in states:
        completion = state.latest
        text = "" if completion is None else completion.text
        token_ids = [] if completion is None else completion.token_ids
        prefix = parsed.prompt_text if first and parsed.prepend_input else ""
        texts.append((prefix + text[state.text_len :]).encode("utf-8"))
        state.text_len = len(text)
        counts.append(len(token_ids) - state.token_count)
        state.token_count = len(token_ids)
        reasons.append(str(None if completion is None else completion.finish_reason))
        value = None if completion is None else completion.cumulative_logprob
        cumulative.append(math.nan if value is None else value)
        entries = None if completion is None else completion.logprobs
        if entries is None:
            logprobs.append(b"null")
        else:
            new = entries[state.logprob_count :]
            state.logprob_count = len(entries)
            logprobs.append(
                json.dumps(
                    [
                        {
                            str(token_id): {"logprob": lp.logprob, "rank": lp.rank, "decoded_token": lp.decoded_token}
                            for token_id, lp in position.items()
                        }
                        for position in new
                    ]
                ).encode("utf-8")
            )

    tensors = [pb_utils.Tensor("text_output", np.asarray(texts, dtype=np.object_))]
    if parsed.switches["return_finish_reason"]:
        tensors.append(pb_utils.Tensor("finish_reason", np.asarray(reasons, dtype=np.object_)))
    if parsed.switches["return_cumulative_logprob"]:
        tensors.append(pb_utils.Tensor("cumulative_logprob", np.asarray(cumulative, dtype=np.float32)))
    if parsed.switches["return_logprobs"]:
        tensors.append(pb_utils.Tensor("logprobs", np.asarray(logprobs, dtype=np.object_)))
    if parsed.switches["return_num_input_tokens"]:
        prompt_tokens = len(output.prompt_token_ids or [])
        tensors.append(pb_utils.Tensor("num_input_tokens", np.asarray([prompt_tokens], dtype=np.uint32)))
    if parsed.switches["return_num_output_tokens"]:
        tensors.append(pb_utils.Tensor("num_output_tokens", np.asarray(counts, dtype=np.uint32)))
    return pb_utils.InferenceResponse(output_tensors=tensors)


def error_response(message: str, code: Any = None) -> Any:
    error = pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)
    return pb_utils.InferenceResponse(error=error)


class TritonPythonModel:
    @classmethod
    def auto_complete_config(cls, auto_complete_model_config: Any) -> Any:
        config = auto_complete_model_config.as_dict()
        present_inputs = {item["name"] for item in config["input"]}
        present_outputs = {item["name"] for item in config["output"]}
        for item in _INPUTS:
            if item["name"] not in present_inputs:
                auto_complete_model_config.add_input(item)
        for item in _OUTPUTS:
            if item["name"] not in present_outputs:
                auto_complete_model_config.add_output(item)
        auto_complete_model_config.set_model_transaction_policy({"decoupled": True})
        auto_complete_model_config.set_max_batch_size(0)
        return auto_complete_model_config

    def initialize(self, args: dict[str, Any]) -> None:
        from vllm.engine.arg_utils import AsyncEngineArgs

        self.args = args
        self.model_config: dict[str, Any] = json.loads(args["model_config"])
        if not pb_utils.using_decoupled_model_transaction_policy(self.model_config):
            raise pb_utils.TritonModelException("the vLLM backend needs model_transaction_policy { decoupled: true }")
        parameters: dict[str, dict[str, str]] = self.model_config.get("parameters", {})

        def flag(name: str) -> bool:
            return parameters.get(name, {}).get("string_value", "").lower() == "true"

        path = os.path.join(pb_utils.get_model_dir(), _ENGINE_ARGS_FILE)
        if not os.path.isfile(path):
            raise pb_utils.TritonModelException(
                f"'{_ENGINE_ARGS_FILE}' with the vLLM engine arguments is missing in {pb_utils.get_model_dir()}"
            )
        with open(path, encoding="utf-8") as handle:
            engine_config: dict[str, Any] = json.load(handle)
        self._place_on_device(engine_config)
        self.engine_args = AsyncEngineArgs(**engine_config)
        self.health_check = flag("ENABLE_VLLM_HEALTH_CHECK")
        self.healthy = True

        stat_loggers: list[stat_logger_factory] = []
        if flag("REPORT_CUSTOM_METRICS") and not self.engine_args.disable_log_stats:
            from vllm_standin_metrics import stat_logger_factory

            stat_loggers.append(stat_logger_factory({"model": args["model_name"], "version": args["model_version"]}))
        self.stat_loggers = stat_loggers

        self.loop = asyncio.new_event_loop()
        self.loop_thread = threading.Thread(target=self.loop.run_forever, name="vllm-standin-loop", daemon=True)
        self.loop_thread.start()
        self.engine: AsyncLLM = asyncio.run_coroutine_threadsafe(self._start_engine(), self.loop).result()
        self.in_flight = 0
        self.outbox: queue.Queue[tuple[Delivery, Any, int] | None] = queue.Queue()
        self.sender_thread = threading.Thread(target=self._send_loop, name="vllm-standin-sender", daemon=True)
        self.sender_thread.start()

    def _place_on_device(self, engine_config: dict[str, Any]) -> None:
        kind = self.args["model_instance_kind"]
        device_id = int(self.args["model_instance_device_id"])
        parallel = int(engine_config.get("tensor_parallel_size", 1)) * int(engine_config.get("pipeline_parallel_size", 1))
        if kind == "GPU" and parallel > 1:
            raise pb_utils.TritonModelException("KIND_GPU is for single-GPU models; use KIND_MODEL for tensor or pipeline parallelism")
        if kind == "GPU" and device_id >= 0:
            os.environ["CUDA_VISIBLE_DEVICES"] = str(device_id)

    async def _start_engine(self) -> AsyncLLM:
        from vllm.v1.engine.async_llm import AsyncLLM

        return AsyncLLM.from_engine_args(self.engine_args, stat_loggers=self.stat_loggers or None)

    def _send_loop(self) -> None:
        while True:
            item = self.outbox.get()
            if item is None:
                return
            delivery, response, flags = item
            try:
                delivery.sender.send(response, flags)
                if not flags:
                    delivery.cancelled = delivery.sender.is_cancelled()
            except Exception:  # noqa: BLE001 - a dead client must not stop the sender thread
                pb_utils.Logger.log_error(f"[vllm stand-in] could not send a response: {traceback.format_exc()}")
                delivery.cancelled = True
            if flags:
                delivery.closed.set()

    def execute(self, requests: list[Any]) -> None:
        if self.health_check and not self._check_health():
            for request in requests:
                request.get_response_sender().send(
                    error_response("Model is unavailable due to unhealthy vLLM engine", pb_utils.TritonError.UNAVAILABLE),
                    flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
                )
            return None
        for request in requests:
            asyncio.run_coroutine_threadsafe(self._serve(request), self.loop)
        return None

    def _check_health(self) -> bool:
        if self.healthy:
            try:
                asyncio.run_coroutine_threadsafe(self.engine.check_health(), self.loop).result()
            except Exception:  # noqa: BLE001 - any failure means the engine is gone
                pb_utils.Logger.log_error(f"[vllm stand-in] engine unhealthy, unloading: {traceback.format_exc()}")
                self.healthy = False
                pb_utils.unload_model(self.model_config["name"])
        return self.healthy

    async def _serve(self, request: Any) -> None:
        self.in_flight += 1  # only ever changed on the engine's event loop
        final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        delivery = Delivery(request.get_response_sender())
        request_id = uuid.uuid4().hex
        try:
            parsed = parse_request(request)
            sampling = build_sampling_params(parsed.sampling)
            states = [ChoiceState() for _ in range(sampling.n)]
            first = True
            output: RequestOutput | None = None
            checked_at = time.monotonic()
            async for output in self.engine.generate(parsed.prompt, sampling, request_id):
                # The sender thread notices cancellation as it sends, but it can lag behind a fast
                # engine; asking Triton directly (an IPC call) every 0.1 s bounds the wasted work.
                if not delivery.cancelled and time.monotonic() - checked_at > 0.1:
                    delivery.cancelled = delivery.sender.is_cancelled()
                    checked_at = time.monotonic()
                if delivery.cancelled:
                    await self.engine.abort(request_id)
                    pb_utils.Logger.log_info(
                        f"[vllm stand-in] Triton request {request.request_id()!r} (engine request {request_id}) "
                        "cancelled by its client; engine request aborted"
                    )
                    self.outbox.put((delivery, error_response("Request was cancelled", pb_utils.TritonError.CANCELLED), final))
                    return
                if parsed.stream:
                    response = build_response(parsed, output, states, first)
                    self.outbox.put((delivery, response, final if output.finished else 0))
                    first = False
                else:
                    for completion in output.outputs:
                        states[completion.index].latest = completion
            if not parsed.stream:
                if output is None:
                    raise RuntimeError("the engine returned no output")
                output.outputs = [state.latest for state in states]
                self.outbox.put((delivery, build_response(parsed, output, [ChoiceState() for _ in states], True), final))
        except RequestError as exc:
            self.outbox.put((delivery, error_response(str(exc), pb_utils.TritonError.INVALID_ARG), final))
        except Exception as exc:  # noqa: BLE001 - every failure must reach the client as a final response
            pb_utils.Logger.log_error(f"[vllm stand-in] generation failed: {traceback.format_exc()}")
            self.outbox.put((delivery, error_response(f"Error generating stream: {exc}"), final))
        finally:
            self.in_flight -= 1

    def finalize(self) -> None:
        deadline = 30.0
        while self.in_flight > 0 and deadline > 0:
            threading.Event().wait(0.5)
            deadline -= 0.5
        self.engine.shutdown()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.loop_thread.join(timeout=10)
        self.outbox.put(None)
        self.sender_thread.join(timeout=10)
        for factory in self.stat_loggers:
            factory.finalize()
