"""OpenAI sampling fields → vLLM's sampling parameters: the token budget, stops, refusals (no Triton)."""

from __future__ import annotations

import pytest

from passerelle.chat.protocol import SamplingFields, check_common, sampling_parameters, stop_list, token_budget
from passerelle.core.catalog import ServedModel
from passerelle.core.errors import InvalidRequest


def model(max_model_len: int | None) -> ServedModel:
    args = {} if max_model_len is None else {"max_model_len": max_model_len}
    return ServedModel(key="qwen", task="chat", root="qwen", aliases=("qwen",), engine_args=args)


def test_budget_defaults_to_what_the_context_leaves() -> None:
    assert token_budget(model(4096), None, 96, "max_tokens") == 4000


def test_budget_keeps_a_request_that_fits() -> None:
    assert token_budget(model(4096), 4000, 96, "max_tokens") == 4000


def test_budget_refuses_a_request_past_the_context() -> None:
    with pytest.raises(InvalidRequest) as raised:
        token_budget(model(4096), 4001, 96, "max_completion_tokens")
    assert raised.value.param == "max_completion_tokens" and raised.value.code == "context_length_exceeded"
    assert "4097 tokens (96 in the prompt, 4001 for the completion)" in raised.value.message


def test_budget_refuses_a_prompt_that_fills_the_context() -> None:
    with pytest.raises(InvalidRequest) as raised:
        token_budget(model(4096), None, 4096, "max_tokens")
    assert raised.value.param == "messages" and raised.value.code == "context_length_exceeded"


def test_budget_without_a_known_context_needs_the_client_s_number() -> None:
    assert token_budget(model(None), 7, 10**6, "max_tokens") == 7
    with pytest.raises(InvalidRequest) as raised:
        token_budget(model(None), None, 10, "max_tokens")
    assert raised.value.code == "missing_required_parameter"


def test_stops() -> None:
    assert stop_list(None) == []
    assert stop_list("END") == ["END"]
    assert stop_list(["a", "b", "c", "d"]) == ["a", "b", "c", "d"]
    for bad in (["a", "b", "c", "d", "e"], ["a", ""]):
        with pytest.raises(InvalidRequest) as raised:
            stop_list(bad)
        assert raised.value.param == "stop"


def test_parameters_carry_only_what_was_given_and_always_max_tokens() -> None:
    request = SamplingFields(model="qwen", temperature=0.0, stop="x", ignore_eos=True)
    assert sampling_parameters(request, 12, None) == {"n": 1, "max_tokens": 12, "temperature": 0.0, "ignore_eos": True, "stop": ["x"]}
    assert sampling_parameters(SamplingFields(model="qwen", n=2), 5, 3) == {"n": 2, "max_tokens": 5, "logprobs": 3}


def test_min_tokens_above_max_tokens_is_refused() -> None:
    with pytest.raises(InvalidRequest) as raised:
        sampling_parameters(SamplingFields(model="qwen", min_tokens=9), 8, None)
    assert raised.value.param == "min_tokens"


def test_logit_bias_is_refused_by_name() -> None:
    with pytest.raises(InvalidRequest) as raised:
        check_common(SamplingFields(model="qwen", logit_bias={"1": 5.0}))
    assert raised.value.param == "logit_bias" and raised.value.code == "unsupported_parameter"
    check_common(SamplingFields(model="qwen", logit_bias={}))


def test_stream_options_need_stream() -> None:
    with pytest.raises(InvalidRequest) as raised:
        check_common(SamplingFields.model_validate({"model": "qwen", "stream_options": {"include_usage": True}}))
    assert raised.value.param == "stream_options"


def test_several_choices_need_sampling() -> None:
    """vLLM refuses n > 1 with greedy sampling; the adapter says so before the engine does (a 400, not a 503)."""
    check_common(SamplingFields(model="qwen", n=3, temperature=0.5))
    with pytest.raises(InvalidRequest) as raised:
        check_common(SamplingFields(model="qwen", n=3, temperature=0))
    assert raised.value.param == "n" and "temperature" in raised.value.message
