"""Triton's vLLM backend contract, pinned with a native tritonclient against the running `qwen`.

The adapter relies on exactly these behaviours; NVIDIA's backend (production) documents the
same ones. Here they are served by passerelle's stand-in driving a real vLLM engine.
"""

from __future__ import annotations

import base64
import json
import queue
import time
import uuid
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from conftest import assert_cancels, metric_value, png_bytes, triton_metrics
from passerelle_stack.launcher import Stack

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

MODEL = "qwen"
PROMPT = "<|im_start|>user\nTell me a story<|im_end|>\n<|im_start|>assistant\n"


def _bytes(name: str, values: list[str]) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, [len(values)], "BYTES")
    tensor.set_data_from_numpy(np.array([v.encode() for v in values], dtype=np.object_))
    return tensor


def _bool(name: str, value: bool) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, [1], "BOOL")
    tensor.set_data_from_numpy(np.array([value], dtype=bool))
    return tensor


def call(
    triton_url: str,
    prompt: str = PROMPT,
    sampling: dict[str, Any] | None = None,
    stream: bool | None = None,
    exclude: bool | None = None,
    images: list[str] | None = None,
    switches: tuple[str, ...] = (),
    raw_sampling: str | None = None,
    cancel_after: int | None = None,
    request_id: str | None = None,
) -> tuple[list[grpcclient.InferResult], str | None]:
    """One request over gRPC streaming; returns (responses, error message)."""
    inputs = [_bytes("text_input", [prompt])]
    if sampling is not None or raw_sampling is not None:
        inputs.append(_bytes("sampling_parameters", [raw_sampling if raw_sampling is not None else json.dumps(sampling)]))
    if stream is not None:
        inputs.append(_bool("stream", stream))
    if exclude is not None:
        inputs.append(_bool("exclude_input_in_output", exclude))
    if images:
        inputs.append(_bytes("image", images))
    inputs += [_bool(name, True) for name in switches]
    events: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client = grpcclient.InferenceServerClient(triton_url)
    client.start_stream(callback=lambda result, error: events.put((result, error)))
    try:
        client.async_stream_infer(MODEL, inputs, request_id=request_id or uuid.uuid4().hex, enable_empty_final_response=True)
        responses: list[grpcclient.InferResult] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            result, error = events.get(timeout=120)
            if error is not None:
                return responses, error.message()
            final = result.get_response().parameters.get("triton_final_response")
            if result.get_response().outputs:
                responses.append(result)
            if cancel_after is not None and len(responses) >= cancel_after:
                client.stop_stream(cancel_requests=True)
                return responses, None
            if final is not None and final.bool_param:
                return responses, None
        raise AssertionError("no final response within 120 s")
    finally:
        client.close()


def texts(result: grpcclient.InferResult) -> list[str]:
    return [item.decode() for item in result.as_numpy("text_output")]


@pytest.fixture(scope="module")
def url(stack: Stack) -> str:
    return stack.triton_grpc


def test_auto_completed_config(triton: grpcclient.InferenceServerClient) -> None:
    config = triton.get_model_config(MODEL, as_json=True)["config"]
    inputs = {item["name"]: item for item in config["input"]}
    outputs = {item["name"]: item for item in config["output"]}
    assert config["backend"] == "vllm"
    assert config["model_transaction_policy"]["decoupled"] is True
    assert config.get("max_batch_size", 0) == 0
    assert inputs["text_input"]["data_type"] == "TYPE_STRING" and inputs["text_input"]["dims"] == ["1"]
    assert not inputs["text_input"].get("optional", False)
    assert inputs["image"]["dims"] == ["-1"] and inputs["image"]["optional"]
    for name in (
        "stream",
        "exclude_input_in_output",
        "return_finish_reason",
        "return_cumulative_logprob",
        "return_logprobs",
        "return_num_input_tokens",
        "return_num_output_tokens",
    ):
        assert inputs[name]["data_type"] == "TYPE_BOOL" and inputs[name]["optional"], name
    assert inputs["sampling_parameters"]["data_type"] == "TYPE_STRING"
    assert {name: item["data_type"] for name, item in outputs.items()} == {
        "text_output": "TYPE_STRING",
        "finish_reason": "TYPE_STRING",
        "cumulative_logprob": "TYPE_FP32",
        "logprobs": "TYPE_STRING",
        "num_input_tokens": "TYPE_UINT32",
        "num_output_tokens": "TYPE_UINT32",
    }
    assert config["parameters"]["REPORT_CUSTOM_METRICS"]["string_value"] == "true"


def test_non_streaming_prepends_prompt_by_default(url: str) -> None:
    responses, error = call(url, sampling={"max_tokens": 4, "temperature": 0, "ignore_eos": True})
    assert error is None and len(responses) == 1
    (text,) = texts(responses[0])
    assert text.startswith(PROMPT) and len(text) > len(PROMPT)
    # Extra outputs stay absent unless asked for.
    for name in ("finish_reason", "num_input_tokens", "num_output_tokens", "logprobs", "cumulative_logprob"):
        assert responses[0].as_numpy(name) is None, name


def test_exclude_input_and_greedy_stream_equals_whole(url: str) -> None:
    sampling = {"max_tokens": 12, "temperature": 0, "ignore_eos": True}
    whole, error = call(url, sampling=sampling, exclude=True, switches=("return_num_output_tokens",))
    assert error is None
    (text,) = texts(whole[0])
    assert not text.startswith("<|im_start|>")
    assert whole[0].as_numpy("num_output_tokens").tolist() == [12]
    streamed, error = call(url, sampling=sampling, stream=True, exclude=True, switches=("return_num_output_tokens", "return_finish_reason"))
    assert error is None and len(streamed) >= 2
    assert "".join(texts(r)[0] for r in streamed) == text
    assert sum(int(r.as_numpy("num_output_tokens")[0]) for r in streamed) == 12
    reasons = [r.as_numpy("finish_reason")[0].decode() for r in streamed]
    assert reasons[:-1] == ["None"] * (len(reasons) - 1) and reasons[-1] == "length"


def test_streaming_with_input_in_output_is_an_error(url: str) -> None:
    responses, error = call(url, sampling={"max_tokens": 2}, stream=True, exclude=False)
    assert responses == []
    assert error is not None and "exclude_input_in_output" in error


def test_streaming_defaults_to_excluding_the_prompt(url: str) -> None:
    responses, error = call(url, sampling={"max_tokens": 3, "temperature": 0}, stream=True)
    assert error is None
    assert not "".join(texts(r)[0] for r in responses).startswith("<|im_start|>")


def test_n_choices_usage_and_finish_reasons(url: str, tokenizer: PreTrainedTokenizerBase) -> None:
    switches = ("return_finish_reason", "return_num_input_tokens", "return_num_output_tokens", "return_cumulative_logprob")
    sampling = {"max_tokens": 5, "n": 3, "temperature": 1.0, "seed": 7, "ignore_eos": True}
    responses, error = call(url, sampling=sampling, exclude=True, switches=switches)
    assert error is None and len(responses) == 1
    result = responses[0]
    assert len(texts(result)) == 3
    assert [r.decode() for r in result.as_numpy("finish_reason")] == ["length"] * 3
    assert result.as_numpy("num_output_tokens").tolist() == [5, 5, 5]
    prompt_tokens = int(result.as_numpy("num_input_tokens")[0])
    assert prompt_tokens == len(tokenizer.encode(PROMPT, add_special_tokens=False))
    cumulative = result.as_numpy("cumulative_logprob")
    assert cumulative.dtype == np.float32 and cumulative.shape == (3,)

    streamed, error = call(url, sampling={"max_tokens": 5, "n": 2, "seed": 3, "ignore_eos": True}, stream=True, switches=switches)
    assert error is None
    assert all(len(texts(r)) == 2 for r in streamed)
    totals = np.sum([r.as_numpy("num_output_tokens") for r in streamed], axis=0)
    assert totals.tolist() == [5, 5]
    assert [r.decode() for r in streamed[-1].as_numpy("finish_reason")] == ["length", "length"]


def test_stop_sequence_and_seed(url: str) -> None:
    base = {"max_tokens": 20, "temperature": 1.0, "seed": 42, "ignore_eos": True}
    first, _ = call(url, sampling=base, exclude=True)
    second, _ = call(url, sampling=base, exclude=True)
    text = texts(first[0])[0]
    assert text == texts(second[0])[0]  # same seed, same sample
    # A stop string from the second half that is plain text (random weights may also emit byte fragments).
    middle = len(text) // 2
    stop = next(text[i : i + 2] for i in range(middle, len(text) - 1) if text[i : i + 2].isascii() and text[i : i + 2].strip())
    stopped, error = call(url, sampling={**base, "stop": [stop]}, exclude=True, switches=("return_finish_reason",))
    assert error is None
    assert stop not in texts(stopped[0])[0]
    assert stopped[0].as_numpy("finish_reason")[0].decode() == "stop"


def test_logprobs_output(url: str) -> None:
    sampling = {"max_tokens": 3, "logprobs": 2, "temperature": 0, "ignore_eos": True}
    responses, error = call(url, sampling=sampling, exclude=True, switches=("return_logprobs",))
    assert error is None
    positions = json.loads(responses[0].as_numpy("logprobs")[0])
    assert len(positions) == 3
    for position in positions:
        entries = list(position.values())
        assert 2 <= len(entries) <= 3
        assert {"logprob", "rank", "decoded_token"} <= set(entries[0])
        assert entries[0]["rank"] == 1  # greedy: the sampled token is the most likely one
    no_logprobs, _ = call(url, sampling={"max_tokens": 2}, exclude=True, switches=("return_logprobs",))
    assert no_logprobs[0].as_numpy("logprobs")[0] == b"null"


def test_images_as_base64_strings(url: str) -> None:
    prompt = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is it?<|im_end|>\n<|im_start|>assistant\n"
    switches = ("return_num_input_tokens",)
    image_96x64 = base64.b64encode(png_bytes(96, 64)).decode()
    image_128 = base64.b64encode(png_bytes(128, 128)).decode()
    without, _ = call(url, prompt=prompt, sampling={"max_tokens": 1}, exclude=True, switches=switches)
    small, error = call(url, prompt=prompt, sampling={"max_tokens": 1}, exclude=True, images=[image_96x64], switches=switches)
    assert error is None
    large, _ = call(url, prompt=prompt, sampling={"max_tokens": 1}, exclude=True, images=[image_128], switches=switches)
    count = [int(r[0].as_numpy("num_input_tokens")[0]) for r in (without, small, large)]
    # One <|image_pad|> becomes (W/32)*(H/32) tokens: 6 for 96x64, 16 for 128x128.
    assert count[1] - count[0] == 6 - 1
    assert count[2] - count[0] == 16 - 1


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"raw_sampling": "{not json"}, "not valid JSON"),
        ({"sampling": {"max_tokens": 2, "no_such_parameter": 1}}, "no_such_parameter"),
        ({"sampling": {"max_tokens": 2, "temperature": -1}}, "temperature"),
        ({"sampling": {"max_tokens": 2, "lora_name": "x"}}, "LoRA"),
        ({"sampling": {"max_tokens": 2}, "images": ["%%%not-base64%%%"]}, "image[0]"),
        # NVIDIA's from_dict reads `structured_outputs` as a JSON string, never as an object.
        ({"sampling": {"max_tokens": 2, "structured_outputs": {"choice": ["a"]}}}, "TritonSamplingParams"),
        ({"sampling": {"max_tokens": 2, "structured_outputs": json.dumps({"json": "{}"})}}, "JSON schema dictionary"),
        ({"sampling": {"max_tokens": 2, "structured_outputs": json.dumps({"regex": "(unclosed"})}}, "regex"),
    ],
)
def test_invalid_requests_get_an_error_response(url: str, kwargs: dict[str, Any], fragment: str) -> None:
    responses, error = call(url, exclude=True, **kwargs)
    assert responses == []
    assert error is not None and fragment in error


def test_cancelling_the_stream_aborts_the_engine(url: str, stack: Stack) -> None:
    def attempt(request_id: str) -> None:
        responses, error = call(url, sampling={"max_tokens": 4000, "ignore_eos": True}, stream=True, cancel_after=3, request_id=request_id)
        assert error is None and len(responses) == 3

    assert_cancels(stack, attempt, adapter_log=None)


def test_custom_vllm_metrics_are_exported(stack: Stack) -> None:
    text = triton_metrics(stack)
    for name in (
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "vllm:time_to_first_token_seconds_count",
        "vllm:e2e_request_latency_seconds_count",
        "vllm:request_generation_tokens_count",
    ):
        assert metric_value(text, name, model=MODEL) > 0, name
    assert metric_value(text, "nv_inference_request_success", model=MODEL) > 0


def test_sampling_parameters_are_converted_as_nvidias_backend_does(url: str) -> None:
    """Scalars are passed through their SamplingParams type (strings become numbers); the legacy
    `guided_decoding` key still maps to structured outputs."""
    as_strings = {"max_tokens": "3", "temperature": "0", "ignore_eos": True}
    responses, error = call(url, sampling=as_strings, exclude=True, switches=("return_num_output_tokens",))
    assert error is None and int(responses[-1].as_numpy("num_output_tokens")[0]) == 3
    legacy, error = call(url, sampling={"max_tokens": 5, "guided_decoding": {"choice": ["yes", "no"]}}, exclude=True)
    assert error is None and texts(legacy[-1])[0] in ("yes", "no")


def test_logit_bias_cannot_cross_the_backend(url: str) -> None:
    """JSON object keys are strings and the backend does not convert them: vLLM refuses the map.
    This is why the adapter refuses `logit_bias` (README, "OpenAI API")."""
    responses, error = call(url, sampling={"max_tokens": 2, "logit_bias": {"5": 10.0}}, exclude=True)
    assert responses == [] and error is not None
