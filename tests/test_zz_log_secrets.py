"""No secret reaches a log: after every other test of the session (`RUNS_LAST`, see conftest's
ordering), every file under the stack's run folder (tritonserver.log, adapter.log, each extra
adapter's log, Triton's request traces, ...) and every other `*.log` the session's tests wrote is
searched for the API keys, the admin key and each Hugging Face token the tests send."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import ADMIN_KEY, API_KEYS
from passerelle_stack.launcher import Stack

RUNS_LAST = True
# The tests' Hugging Face tokens are literals in their modules (test_admin's PUT, the dashboard's
# settings page, the local Hub's right and wrong tokens): each is found there, so a new one is
# searched for too.
_TOKEN_LITERAL = re.compile(r"hf_[A-Za-z0-9]{12,}")


def hugging_face_tokens() -> set[str]:
    tokens = set()
    for module in Path(__file__).parent.glob("*.py"):
        if module != Path(__file__):
            tokens.update(_TOKEN_LITERAL.findall(module.read_text()))
    return tokens


def session_logs(stack: Stack, basetemp: Path) -> list[Path]:
    files = {path for path in stack.config.run_dir.rglob("*") if path.is_file() and not path.is_symlink()}
    files |= {path for path in basetemp.rglob("*.log") if path.is_file() and not path.is_symlink()}
    return sorted(files)


def test_no_key_or_token_appears_in_any_log_of_the_session(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> None:
    tokens = hugging_face_tokens()
    assert {"hf_passerelleTestToken0123456789", "hf_passerelleRightToken0123456789abcdef"} <= tokens, tokens
    secrets = {*API_KEYS, ADMIN_KEY, *tokens}
    files = session_logs(stack, tmp_path_factory.getbasetemp())
    names = {path.name for path in files}
    assert {"tritonserver.log", "adapter.log"} <= names, names
    scanned = 0
    found = []
    for path in files:
        data = path.read_bytes()
        scanned += len(data)
        found += [f"{path}: {secret[:6]}…" for secret in secrets if secret.encode() in data]
    assert (stack.config.run_dir / "adapter.log").stat().st_size > 0 and (stack.config.run_dir / "tritonserver.log").stat().st_size > 0
    assert scanned > 64 * 1024, f"only {scanned} bytes of logs: nothing was really searched"
    print(f"searched {len(files)} files ({scanned / 1e6:.1f} MB) for {len(secrets)} secrets")
    assert not found, found
