"""The dashboard's API client is typed from the adapter's OpenAPI (dashboard/src/api/schema.d.ts).
This fails when the adapter's schema changed and the types were not written again with
`python -m passerelle_stack dashboard-types`."""

from __future__ import annotations

import difflib

from passerelle_stack import dashboard


def test_dashboard_api_types_match_the_adapters_openapi() -> None:
    document = dashboard.openapi_document()
    assert "/api/admin/status" in document["paths"]
    expected = dashboard.api_types(document)
    committed = dashboard.TYPES_FILE.read_text()
    if committed != expected:
        diff = "".join(difflib.unified_diff(committed.splitlines(True), expected.splitlines(True), "committed", "from the adapter", n=1))
        raise AssertionError(f"schema.d.ts is stale; run `python -m passerelle_stack dashboard-types`:\n{diff[:3000]}")


def test_the_types_describe_the_admin_responses() -> None:
    committed = dashboard.TYPES_FILE.read_text()
    for name in ("Status", "ModelState", "MetricsPoint", "TokenState", "DownloadState", "HostFacts"):
        assert f"        {name}: {{" in committed, name
