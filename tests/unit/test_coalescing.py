"""Adaptive coalescing of streamed responses, and the chunk template of plain content.

A slow consumer gets what piled up as one merged item; a consumer that keeps up gets every item
alone. Merged deltas must give the same text, logprobs and usage as the deltas one by one.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator

import pytest

from passerelle.chat.protocol import ChatChunkChoice, ChatCompletionRequest, ChunkDelta
from passerelle.chat.serving import ChatAccumulator
from passerelle.core.streaming import coalesced
from passerelle.triton.vllm import Delta, TokenChoice


async def numbers(count: int, pause_s: float, finally_ran: list[bool] | None = None) -> AsyncGenerator[int]:
    try:
        for number in range(count):
            yield number
            await asyncio.sleep(pause_s)
    finally:
        if finally_ran is not None:
            finally_ran.append(True)


def test_a_consumer_that_keeps_up_gets_each_item_alone() -> None:
    merges: list[int] = []

    async def consume() -> list[list[int]]:
        return [batch async for batch in coalesced(_wrapped(numbers(8, 0.01)), _concat, merges.append)]

    assert asyncio.run(consume()) == [[i] for i in range(8)]
    assert merges == []


def test_a_slow_consumer_gets_what_piled_up_merged_and_nothing_lost() -> None:
    merges: list[int] = []

    async def consume() -> list[list[int]]:
        batches = []
        async for batch in coalesced(_wrapped(numbers(50, 0)), _concat, merges.append):
            batches.append(batch)
            await asyncio.sleep(0.02)  # a slow client
        return batches

    batches = asyncio.run(consume())
    assert [n for batch in batches for n in batch] == list(range(50))
    assert len(batches) < 50
    assert merges and all(count >= 2 for count in merges)
    assert sum(merges) + sum(1 for batch in batches if len(batch) == 1) == 50


def test_an_error_comes_after_the_items_before_it() -> None:
    async def failing() -> AsyncGenerator[list[int]]:
        yield [1]
        yield [2]
        raise RuntimeError("engine died")

    async def consume() -> tuple[list[int], str]:
        seen: list[int] = []
        try:
            async for batch in coalesced(failing(), _concat, lambda _: None):
                seen += batch
        except RuntimeError as error:
            return seen, str(error)
        return seen, ""

    assert asyncio.run(consume()) == ([1, 2], "engine died")


def test_leaving_early_closes_the_source() -> None:
    finally_ran: list[bool] = []

    async def consume() -> None:
        stream = coalesced(_wrapped(numbers(1000, 0.01, finally_ran)), _concat, lambda _: None)
        async for _ in stream:
            break
        await stream.aclose()

    asyncio.run(consume())
    assert finally_ran == [True]


async def _wrapped(items: AsyncGenerator[int]) -> AsyncGenerator[list[int]]:
    async for item in items:
        yield [item]


def _concat(batches: list[list[int]]) -> list[int]:
    return [n for batch in batches for n in batch]


# Deltas -----------------------------------------------------------------------------------


def _deltas() -> list[Delta]:
    """Two choices; choice 1 ends one response before choice 0; logprobs on every token."""
    texts = [["Hel", "lo", " wor", "ld", "!"], ["Bon", "jour", "", "", ""]]
    reasons: list[list[str | None]] = [[None, None, None, None, "length"], [None, None, "stop", None, None]]
    deltas = []
    for step in range(5):
        deltas.append(
            Delta(
                texts=[texts[0][step], texts[1][step]],
                finish_reasons=[reasons[0][step], reasons[1][step]],
                output_tokens=[1, 1 if step < 3 else 0],
                prompt_tokens=12 if step == 0 else None,
                logprobs=[
                    [[TokenChoice(step, texts[0][step], -0.5 * step, 1), TokenChoice(99, "x", -3.0, 2)]],
                    [[TokenChoice(50 + step, texts[1][step], -0.25, 1)]] if step < 3 else [],
                ],
            )
        )
    return deltas


def _request(**fields: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "qwen", "messages": [{"role": "user", "content": "hi"}], "n": 2, "logprobs": True, "top_logprobs": 1, **fields}
    )


async def _stream(accumulator: ChatAccumulator, deltas: list[Delta]) -> list[dict[str, object]]:
    async def source() -> AsyncGenerator[Delta]:
        for delta in deltas:
            yield delta

    return [json.loads(chunk) async for chunk in accumulator.sse(source())]


@pytest.mark.parametrize("groups", [[1, 1, 1, 1, 1], [2, 3], [5], [1, 4], [3, 2]])
def test_merged_deltas_give_the_same_answer_as_one_by_one(groups: list[int]) -> None:
    deltas = _deltas()
    merged, start = [], 0
    for size in groups:
        merged.append(Delta.merge(deltas[start : start + size]))
        start += size
    request = _request(stream=True, stream_options={"include_usage": True})
    one_by_one, coalesced_ = ChatAccumulator(request, "a", "qwen"), ChatAccumulator(request, "a", "qwen")
    chunks_one, chunks_merged = asyncio.run(_stream(one_by_one, deltas)), asyncio.run(_stream(coalesced_, merged))

    def streamed(chunks: list[dict[str, object]], index: int) -> tuple[str, list[str], list[str]]:
        text, tokens, reasons = "", [], []
        for chunk in chunks:
            for choice in chunk["choices"]:  # type: ignore[attr-defined]
                if choice["index"] != index:
                    continue
                text += choice["delta"].get("content") or ""
                tokens += [entry["token"] for entry in (choice["logprobs"] or {}).get("content") or []]
                reasons += [choice["finish_reason"]] if choice["finish_reason"] else []
        return text, tokens, reasons

    for index in (0, 1):
        assert streamed(chunks_merged, index) == streamed(chunks_one, index)
    assert streamed(chunks_one, 0) == ("Hello world!", ["Hel", "lo", " wor", "ld", "!"], ["length"])
    assert streamed(chunks_one, 1) == ("Bonjour", ["Bon", "jour", ""], ["stop"])
    assert chunks_merged[-1]["usage"] == chunks_one[-1]["usage"] == {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20}
    assert coalesced_.completion().model_dump() == one_by_one.completion().model_dump() | {"created": coalesced_.created}


@pytest.mark.parametrize("text", ["plain", 'quotes " and \\ backslash', "é ü 漢字 🙂", "\n\t\u0000\u2028", ""])
def test_the_content_chunk_template_says_what_the_model_says(text: str) -> None:
    accumulator = ChatAccumulator(_request(n=2, logprobs=False, top_logprobs=None), "req-1", 'a "quoted" model')
    templated = json.loads(accumulator.content_chunk([(0, text, []), (1, text + "!", [])]))
    expected = json.loads(
        accumulator.chunk([ChatChunkChoice(index=i, delta=ChunkDelta(content=t)) for i, t in ((0, text), (1, text + "!"))])
    )
    assert templated == expected
