"""The Hugging Face token file lives in a folder shared with Triton's container: its staging file
must not be predictable, nor followed through a link someone planted."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from passerelle.admin.tokens import InvalidToken, TokenStore

TOKEN = "hf_abcdefghijklmnop0123"


def test_planted_links_at_every_guessable_staging_name_are_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    store = TokenStore(tmp_path / ".hf_token")
    # The old staging name was ".hf_token.<pid>.tmp": plant it (and neighbours) as links to the victim.
    for pid in {os.getpid(), *range(1, 64)}:
        (tmp_path / f"..hf_token.{pid}.tmp").symlink_to(victim)
        (tmp_path / f".hf_token.{pid}.tmp").symlink_to(victim)
    store.set(TOKEN)
    assert victim.read_text() == "untouched"
    assert store.get() == TOKEN
    assert stat.S_IMODE((tmp_path / ".hf_token").stat().st_mode) == 0o600
    assert not (tmp_path / ".hf_token").is_symlink()
    leftovers = [path.name for path in tmp_path.iterdir() if path.name.endswith(".tmp") and not path.is_symlink()]
    assert leftovers == []


def test_invalid_tokens_are_refused_and_delete_reports_what_it_did(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / ".hf_token")
    with pytest.raises(InvalidToken):
        store.set("short")
    with pytest.raises(InvalidToken):
        store.set("hf_token with spaces")
    assert store.get() is None
    store.set(TOKEN)
    assert store.delete() is True
    assert store.delete() is False
