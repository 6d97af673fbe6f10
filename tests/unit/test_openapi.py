"""The OpenAPI document is the clients' and the dashboard's contract: typed answers, and errors in one shape."""

from __future__ import annotations

from typing import Any

import pytest

from passerelle.core.config import Settings
from passerelle.main import create_app

ADMIN = {
    ("get", "/api/admin/status"): "Status",
    ("get", "/api/admin/metrics"): "MetricsHistory",
    ("post", "/api/admin/models/{key}/load"): "Loaded",
    ("post", "/api/admin/models/{key}/unload"): "Unloaded",
    ("post", "/api/admin/models/{key}/download"): "DownloadAccepted",
    ("get", "/api/admin/huggingface/token"): "TokenState",
    ("put", "/api/admin/huggingface/token"): "TokenState",
    ("delete", "/api/admin/huggingface/token"): "TokenDeleted",
}


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    schema: dict[str, Any] = create_app(Settings(_env_file=None)).openapi()  # type: ignore[call-arg]
    return schema


def _schema_ref(response: dict[str, Any]) -> str:
    return str(response["content"]["application/json"]["schema"]["$ref"]).rsplit("/", 1)[-1]


@pytest.mark.parametrize(("method", "path"), sorted(ADMIN))
def test_admin_answers_are_typed(openapi: dict[str, Any], method: str, path: str) -> None:
    assert _schema_ref(openapi["paths"][path][method]["responses"]["200"]) == ADMIN[method, path]


def test_status_names_every_part_the_dashboard_reads(openapi: dict[str, Any]) -> None:
    schemas = openapi["components"]["schemas"]
    assert set(schemas["Status"]["properties"]) == {
        "collected_at",
        "triton",
        "replicas",
        "models",
        "gpus",
        "host",
        "dependencies",
        "settings",
    }
    assert set(schemas["ReplicaState"]["properties"]) == {"upstream", "address", "live", "ready", "models"}
    assert {"state", "statistics", "placement", "runtime", "cache", "download", "vllm"} <= set(schemas["ModelState"]["properties"])


def test_errors_are_declared_in_one_shape_and_never_as_422(openapi: dict[str, Any]) -> None:
    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "422" not in responses, f"{method} {path}"
            if path.startswith(("/v1/", "/api/")):
                assert _schema_ref(responses["4XX"]) == "ErrorResponse" and _schema_ref(responses["503"]) == "ErrorResponse"
