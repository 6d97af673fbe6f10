"""Run vLLM's own `hermes` tool parser on texts, whole and streamed at every split point.

Run with the Python of Triton's environment (where vLLM is installed), never imported by the tests:
    python vllm_hermes_oracle.py < {"tokenizer": DIR, "texts": [...]}  > [{"whole": ..., "splits": [...]}]
Each split point i streams the text as two deltas, text[:i] and text[i:]; the last entry streams it
one character at a time. A streamed result is the joined content and, per call, its name and joined
arguments.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from transformers import AutoTokenizer
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
from vllm.tool_parsers import ToolParserManager

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


def streamed(parser_class: Any, tokenizer: Any, request: Any, deltas: list[str]) -> dict[str, Any]:
    parser = parser_class(tokenizer)
    previous, content = "", ""
    calls: dict[int, dict[str, str]] = {}
    for delta in deltas:
        current = previous + delta
        message = parser.extract_tool_calls_streaming(previous, current, delta, [], [], [], request)
        previous = current
        if message is None:
            continue
        content += message.content or ""
        for call in message.tool_calls or []:
            entry = calls.setdefault(call.index, {"name": "", "arguments": ""})
            function = call.function
            if function is None:
                continue
            entry["name"] += (function.get("name") if isinstance(function, dict) else function.name) or ""
            entry["arguments"] += (function.get("arguments") if isinstance(function, dict) else function.arguments) or ""
    return {"content": content, "calls": [[calls[i]["name"], calls[i]["arguments"]] for i in sorted(calls)]}


def main() -> None:
    given = json.load(sys.stdin)
    tokenizer = AutoTokenizer.from_pretrained(given["tokenizer"])
    parser_class = ToolParserManager.get_tool_parser("hermes")
    request = ChatCompletionRequest(model="tiny", messages=[{"role": "user", "content": "hi"}], tools=TOOLS)
    results = []
    for text in given["texts"]:
        whole = parser_class(tokenizer).extract_tool_calls(text, request)
        splits = [streamed(parser_class, tokenizer, request, [part for part in (text[:i], text[i:]) if part]) for i in range(len(text) + 1)]
        splits.append(streamed(parser_class, tokenizer, request, list(text)))
        results.append(
            {
                "whole": {"content": whole.content, "calls": [[c.function.name, c.function.arguments] for c in whole.tool_calls]},
                "splits": splits,
            }
        )
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
