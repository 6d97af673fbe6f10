"""Renders the run-time model repository for a profile from the one in git.

`model_repository/` describes production and is never edited. Each model directory may
carry `profiles/<profile>.json`:
  - `config`: ModelConfig fields (protobuf JSON names) that replace those of config.pbtxt;
  - `files`: JSON merge patches (RFC 7386: null deletes a key) for JSON files such as `1/model.json`;
  - `artifacts`: a builder script and the path it fills (the CPU profile's tiny models).
`${MODEL_CACHE_DIR}` is substituted. Triton is pointed at the rendered copy, so a load made
through Triton's own repository API loads the profile's model, not only loads made by the adapter.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

SOURCE = Path(__file__).resolve().parents[3] / "model_repository"


def _substitute(value: Any, variables: dict[str, str]) -> Any:
    if isinstance(value, str):
        for name, replacement in variables.items():
            value = value.replace("${" + name + "}", replacement)
        return value
    if isinstance(value, list):
        return [_substitute(item, variables) for item in value]
    if isinstance(value, dict):
        return {key: _substitute(item, variables) for key, item in value.items()}
    return value


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def load_profile(model_dir: Path, profile: str, variables: dict[str, str]) -> dict[str, Any]:
    path = model_dir / "profiles" / f"{profile}.json"
    if not path.is_file():
        return {}
    loaded: dict[str, Any] = _substitute(json.loads(path.read_text(encoding="utf-8")), variables)
    return loaded


def _render_config(model_dir: Path, overrides: dict[str, Any]) -> str:
    config = model_config_pb2.ModelConfig()
    text_format.Parse((model_dir / "config.pbtxt").read_text(encoding="utf-8"), config)
    if overrides:
        patch = json_format.ParseDict(overrides, model_config_pb2.ModelConfig())
        for field_name in overrides:
            descriptor = patch.DESCRIPTOR.fields_by_camelcase_name.get(field_name) or patch.DESCRIPTOR.fields_by_name[field_name]
            config.ClearField(descriptor.name)
        config.MergeFrom(patch)
    header = f"# Rendered from model_repository/{model_dir.name}/config.pbtxt for this profile. Do not edit.\n"
    rendered: str = text_format.MessageToString(config)
    return header + rendered


def render(profile: str, dest: Path, variables: dict[str, str], source: Path = SOURCE) -> Path:
    staging = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    for model_dir in sorted(p for p in source.iterdir() if (p / "config.pbtxt").is_file()):
        spec = load_profile(model_dir, profile, variables)
        out = staging / model_dir.name
        shutil.copytree(model_dir, out, ignore=shutil.ignore_patterns("profiles", "__pycache__"))
        (out / "config.pbtxt").write_text(_render_config(model_dir, spec.get("config", {})), encoding="utf-8")
        for relative, patch in spec.get("files", {}).items():
            path = out / relative
            current = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
            path.write_text(json.dumps(merge_patch(current, patch), indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)
    return dest
