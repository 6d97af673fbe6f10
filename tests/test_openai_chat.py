"""Chat completions through the official OpenAI SDK, against the adapter in front of the real Triton + vLLM.

The model's weights are random, so these tests assert contracts: ids, roles, chunk order,
usage arithmetic, token counts, finish reasons, and what reached the engine.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, NotRequired, TypedDict, cast

import openai
import pytest
from openai.types.chat import (
    ChatCompletionContentPartImageParam,
    ChatCompletionContentPartParam,
    ChatCompletionContentPartTextParam,
    ChatCompletionMessageParam,
    ChatCompletionTokenLogprob,
)
from openai.types.chat.chat_completion import ChoiceLogprobs

from conftest import ImageServer, png_bytes, visible_text

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

ROOT = "passerelle/tiny-qwen3-vl-moe"
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello there"}]
LONG = {"ignore_eos": True}  # random weights may emit EOS at any step; this makes token counts exact


class SeededRequest(TypedDict):
    model: str
    messages: list[ChatCompletionMessageParam]
    max_tokens: int
    temperature: float
    seed: int
    extra_body: dict[str, bool]
    stop: NotRequired[list[str]]


def data_url(width: int, height: int) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(width, height)).decode()


def ascii_window(text: str, size: int = 3) -> str:
    """A plain-ASCII piece of `text` (from its second half if there is one), to use as a stop sequence."""
    for start in [*range(len(text) // 2, len(text) - size), *range(1, len(text) // 2)]:
        piece = text[start : start + size]
        if piece.isascii() and piece.isalpha():
            return piece
    raise AssertionError(f"no ASCII window in {text!r}")


def test_chat_completion_shape_and_usage(client: openai.OpenAI, tokenizer: PreTrainedTokenizerBase) -> None:
    response = client.chat.completions.create(model="qwen", messages=HELLO, max_tokens=8, extra_body=LONG)
    assert response.id.startswith("chatcmpl-")
    assert response.object == "chat.completion"
    assert response.model == ROOT
    (choice,) = response.choices
    assert choice.index == 0 and choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.message.content
    assert choice.finish_reason == "length"
    usage = response.usage
    assert usage is not None and usage.completion_tokens == 8
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    rendered = "<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n"
    assert usage.prompt_tokens == len(tokenizer.encode(rendered, add_special_tokens=False))


def test_streaming_chunks_in_order_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="qwen", messages=HELLO, max_tokens=6, stream=True, stream_options={"include_usage": True}, extra_body=LONG
    )
    chunks = list(stream)
    assert len({chunk.id for chunk in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert all(chunk.object == "chat.completion.chunk" and chunk.model == ROOT for chunk in chunks)
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].choices[0].delta.content == ""
    *body, finish, usage_chunk = chunks
    assert finish.choices[0].finish_reason == "length" and not finish.choices[0].delta.content
    assert all(chunk.choices[0].finish_reason is None for chunk in body)
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    assert usage_chunk.usage.completion_tokens == 6
    assert all(chunk.usage is None for chunk in chunks[:-1])
    assert "".join(chunk.choices[0].delta.content or "" for chunk in body)


def test_streaming_without_usage_has_no_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="qwen", messages=HELLO, max_tokens=3, stream=True))
    assert all(chunk.choices for chunk in chunks)
    assert all(chunk.usage is None for chunk in chunks)


def test_n_choices(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(model="qwen", messages=HELLO, max_tokens=4, n=2, seed=11, extra_body=LONG)
    assert [choice.index for choice in response.choices] == [0, 1]
    assert all(choice.finish_reason == "length" for choice in response.choices)
    assert response.usage is not None and response.usage.completion_tokens == 8

    chunks = list(client.chat.completions.create(model="qwen", messages=HELLO, max_tokens=4, n=2, stream=True, extra_body=LONG))
    finished = {choice.index: choice.finish_reason for chunk in chunks for choice in chunk.choices if choice.finish_reason}
    assert finished == {0: "length", 1: "length"}
    roles = [choice.index for chunk in chunks for choice in chunk.choices if choice.delta.role == "assistant"]
    assert roles == [0, 1]


def test_seed_and_stop_sequences(client: openai.OpenAI) -> None:
    kwargs: SeededRequest = {"model": "qwen", "messages": HELLO, "max_tokens": 24, "temperature": 1.0, "seed": 1234, "extra_body": LONG}
    first = client.chat.completions.create(**kwargs).choices[0].message.content
    second = client.chat.completions.create(**kwargs).choices[0].message.content
    assert first == second and first
    stop = ascii_window(first)
    stopped = client.chat.completions.create(**kwargs | {"stop": [stop]}).choices[0]
    assert stopped.finish_reason == "stop"
    assert stop not in (stopped.message.content or "")
    assert first.startswith(stopped.message.content or "")


def test_max_completion_tokens_and_length(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(model="qwen", messages=HELLO, max_completion_tokens=5, extra_body=LONG)
    assert response.choices[0].finish_reason == "length"
    assert response.usage is not None and response.usage.completion_tokens == 5


def test_default_max_tokens_is_what_the_context_allows(client: openai.OpenAI, tokenizer: PreTrainedTokenizerBase) -> None:
    """Without max_tokens the answer runs to the context limit (4096 here), not vLLM's silent 16."""
    filler = " ".join(["story"] * 1990)
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": filler}]
    rendered = f"<|im_start|>user\n{filler}<|im_end|>\n<|im_start|>assistant\n"
    prompt_tokens = len(tokenizer.encode(rendered, add_special_tokens=False))
    assert 3900 < prompt_tokens < 4096 - 32
    response = client.chat.completions.create(model="qwen", messages=messages, extra_body=LONG)
    assert response.usage is not None and response.usage.prompt_tokens == prompt_tokens
    assert response.usage.completion_tokens == 4096 - prompt_tokens
    assert response.choices[0].finish_reason == "length"


def test_logprobs_in_openai_format(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(model="qwen", messages=HELLO, max_tokens=4, logprobs=True, top_logprobs=3, extra_body=LONG)
    # The adapter always fills logprobs.content when asked; the SDK types both as optional.
    content = cast("list[ChatCompletionTokenLogprob]", cast(ChoiceLogprobs, response.choices[0].logprobs).content)
    assert len(content) == 4
    assert all(visible_text(entry.token) in (response.choices[0].message.content or "") for entry in content)
    for entry in content:
        assert entry.bytes == list(entry.token.encode("utf-8"))
        assert entry.logprob <= 0
        assert len(entry.top_logprobs) == 3
        values = [top.logprob for top in entry.top_logprobs]
        assert values == sorted(values, reverse=True)
        assert entry.logprob <= values[0] + 1e-6
    without = client.chat.completions.create(model="qwen", messages=HELLO, max_tokens=2)
    assert without.choices[0].logprobs is None


def _prompt_tokens(client: openai.OpenAI, parts: list[ChatCompletionContentPartParam]) -> int:
    response = client.chat.completions.create(model="qwen", messages=[{"role": "user", "content": parts}], max_tokens=1)
    assert response.usage is not None
    return response.usage.prompt_tokens


@pytest.mark.parametrize(("width", "height", "tokens"), [(96, 64, 6), (128, 128, 16), (64, 32, 2)])
def test_image_reaches_the_model(client: openai.OpenAI, width: int, height: int, tokens: int) -> None:
    """An image adds <|vision_start|>, (W/32)*(H/32) image tokens and <|vision_end|> to the prompt."""
    question: ChatCompletionContentPartTextParam = {"type": "text", "text": "What is in the picture?"}
    without = _prompt_tokens(client, [question])
    image: ChatCompletionContentPartImageParam = {"type": "image_url", "image_url": {"url": data_url(width, height), "detail": "low"}}
    assert _prompt_tokens(client, [question, image]) - without == tokens + 2


def test_image_from_an_allowlisted_url(client: openai.OpenAI, image_server: ImageServer) -> None:
    question: ChatCompletionContentPartTextParam = {"type": "text", "text": "Describe"}
    without = _prompt_tokens(client, [question])
    for path in ("/image.png", "/redirect-local"):
        image: ChatCompletionContentPartImageParam = {"type": "image_url", "image_url": {"url": image_server.url + path}}
        assert _prompt_tokens(client, [question, image]) - without == 4 + 2  # 64x64
    assert "/image.png" in image_server.hits


async def test_async_client_streams_and_answers(async_client: openai.AsyncOpenAI) -> None:
    stream = await async_client.chat.completions.create(model="qwen", messages=HELLO, max_tokens=3, stream=True, extra_body=LONG)
    pieces = [chunk async for chunk in stream]
    assert pieces[-1].choices[0].finish_reason == "length"
    response = await async_client.chat.completions.create(model="qwen", messages=HELLO, max_tokens=3)
    assert response.choices[0].message.role == "assistant"


def test_harmless_fields_are_accepted(client: openai.OpenAI) -> None:
    system = client.chat.completions.create(model="qwen", messages=[{"role": "system", "content": "Be brief."}, *HELLO], max_tokens=1)
    developer = client.chat.completions.create(
        model="qwen",
        messages=[{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Hello there", "name": "ana"}],
        max_tokens=1,
        user="user-42",
        metadata={"team": "ops"},
        store=False,
        response_format={"type": "text"},
        tool_choice="none",
    )
    assert system.usage is not None and developer.usage is not None
    assert developer.usage.prompt_tokens == system.usage.prompt_tokens  # developer is rendered as system


@pytest.mark.parametrize("name", ["qwen", "QWEN", ROOT, ROOT.upper(), "tiny-qwen3-vl-moe"])
def test_model_name_aliases(client: openai.OpenAI, name: str) -> None:
    response = client.chat.completions.create(model=name, messages=HELLO, max_tokens=1)
    assert response.model == ROOT
