"""The profile renderer and the set-up's cache keys (no Triton)."""

from __future__ import annotations

import json
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from passerelle_stack.paths import digest
from passerelle_stack.repository import SOURCE, merge_patch, render


def test_merge_patch_follows_rfc_7386() -> None:
    target = {"a": 1, "b": {"c": 2, "d": 3}, "e": [1, 2]}
    assert merge_patch(target, {"a": None, "b": {"c": 9}, "e": [3], "f": "new"}) == {"b": {"c": 9, "d": 3}, "e": [3], "f": "new"}
    assert merge_patch(target, "replaced") == "replaced"
    assert target == {"a": 1, "b": {"c": 2, "d": 3}, "e": [1, 2]}  # the patch never changes its target


def test_cpu_profile_renders_cpu_placement_and_the_tiny_model(tmp_path: Path) -> None:
    out = render("cpu", tmp_path / "repository", {"MODEL_CACHE_DIR": "/cache"})
    config = model_config_pb2.ModelConfig()
    text_format.Parse((out / "qwen" / "config.pbtxt").read_text(), config)
    assert config.backend == "vllm"
    assert [group.kind for group in config.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_CPU]
    engine = json.loads((out / "qwen" / "1" / "model.json").read_text())
    assert engine["model"].startswith("/cache/passerelle-tiny/") and engine["enforce_eager"] is True
    assert not (out / "qwen" / "profiles").exists()
    # git's repository is production, and rendering never edits it.
    production = json.loads((SOURCE / "qwen" / "1" / "model.json").read_text())
    assert production["model"] == "Qwen/Qwen3-VL-30B-A3B-Instruct"


def test_cache_keys_follow_content(tmp_path: Path) -> None:
    (tmp_path / "builder.py").write_text("A = 1\n")
    first = digest(tmp_path / "builder.py")
    assert digest(tmp_path / "builder.py") == first
    (tmp_path / "builder.py").write_text("A = 2\n")
    assert digest(tmp_path / "builder.py") != first
