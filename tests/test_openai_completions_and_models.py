"""Legacy completions and the model list, through the official OpenAI SDK."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, TypedDict, cast

import openai
import pytest

from conftest import visible_text

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

ROOT = "passerelle/tiny-qwen3-vl-moe"
LONG = {"ignore_eos": True}


class GreedyArgs(TypedDict):
    max_tokens: int
    temperature: float
    extra_body: dict[str, bool]


class FilledLogprobs(Protocol):
    """`Logprobs` as the adapter returns it when asked: every field present (the SDK types each as optional)."""

    text_offset: list[int]
    token_logprobs: list[float]
    tokens: list[str]
    top_logprobs: list[dict[str, float]]


def test_completion(client: openai.OpenAI, tokenizer: PreTrainedTokenizerBase) -> None:
    response = client.completions.create(model="qwen", prompt="Once upon a time", max_tokens=7, extra_body=LONG)
    assert response.id.startswith("cmpl-") and response.object == "text_completion" and response.model == ROOT
    (choice,) = response.choices
    assert choice.index == 0 and choice.finish_reason == "length" and choice.text
    assert response.usage is not None
    assert response.usage.prompt_tokens == len(tokenizer.encode("Once upon a time", add_special_tokens=False))
    assert response.usage.completion_tokens == 7


def test_completion_stream_with_usage(client: openai.OpenAI) -> None:
    chunks = list(
        client.completions.create(
            model="qwen", prompt="Once upon a time", max_tokens=5, stream=True, stream_options={"include_usage": True}, extra_body=LONG
        )
    )
    assert len({chunk.id for chunk in chunks}) == 1
    *body, usage_chunk = chunks
    assert body[-1].choices[0].finish_reason == "length"
    assert usage_chunk.choices == [] and usage_chunk.usage is not None and usage_chunk.usage.completion_tokens == 5


def test_echo_and_several_prompts(client: openai.OpenAI) -> None:
    # Greedy, so the echoed request must be the prompt followed by exactly what the plain request says
    # (random tiny weights may pick tokens that decode to nothing, so the length alone proves little).
    greedy: GreedyArgs = {"max_tokens": 2, "temperature": 0, "extra_body": LONG}
    plain = client.completions.create(model="qwen", prompt="Echo me", **greedy)
    echoed = client.completions.create(model="qwen", prompt="Echo me", echo=True, **greedy)
    assert echoed.choices[0].text == "Echo me" + plain.choices[0].text
    assert echoed.usage is not None and echoed.usage.completion_tokens == 2
    several = client.completions.create(model="qwen", prompt=["First", "Second"], max_tokens=3, n=2, extra_body=LONG)
    assert [choice.index for choice in several.choices] == [0, 1, 2, 3]
    assert several.usage is not None and several.usage.completion_tokens == 12
    streamed = list(client.completions.create(model="qwen", prompt=["First", "Second"], max_tokens=2, stream=True, extra_body=LONG))
    assert {choice.index for chunk in streamed for choice in chunk.choices if choice.finish_reason} == {0, 1}


def test_completion_logprobs(client: openai.OpenAI) -> None:
    response = client.completions.create(model="qwen", prompt="Once", max_tokens=3, logprobs=2, temperature=0, extra_body=LONG)
    logprobs = cast("FilledLogprobs | None", response.choices[0].logprobs)
    assert logprobs is not None and len(logprobs.tokens) == 3 == len(logprobs.token_logprobs) == len(logprobs.top_logprobs)
    assert all(visible_text(token) in response.choices[0].text for token in logprobs.tokens)
    assert logprobs.text_offset[0] == 0 and logprobs.text_offset == sorted(logprobs.text_offset)
    # Greedy: the sampled token is the first of the two; two tokens whose text is the same would share
    # a key (the legacy format is a dict), which this prompt's answer does not have.
    assert all(len(top) == 2 for top in logprobs.top_logprobs), logprobs.top_logprobs
    assert all(max(top.values()) == logprob for top, logprob in zip(logprobs.top_logprobs, logprobs.token_logprobs, strict=True))


def test_model_list(client: openai.OpenAI) -> None:
    models = {model.id: model for model in client.models.list().data}
    assert "qwen" in models
    qwen = models["qwen"]
    assert qwen.object == "model" and qwen.owned_by == "passerelle"
    extra = qwen.model_extra or {}
    assert extra["root"] == ROOT and extra["state"] == "READY" and extra["max_model_len"] == 4096 and extra["task"] == "chat"
    assert client.models.retrieve("qwen").id == "qwen"
    assert client.models.retrieve(ROOT).id == "qwen"


def test_unknown_model(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("gpt-4o")
    body = cast("dict[str, Any]", caught.value.body)
    assert body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    body = cast("dict[str, Any]", caught.value.body)
    assert body["param"] == "model" and "gpt-4o" in body["message"]
