"""The browser policy of the admin API and the dashboard (docs/security.md): the Host must be one of
the gateway's names (DNS rebinding), and admin writes need JSON or a header that no cross-site simple
request can carry. /health, /metrics and the APIs are exempt, for probes and scrapes that arrive with
a pod's IP as Host. Also: the dashboard at a sub-path, and /docs without a CDN."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import httpx
import pytest

from conftest import ADMIN_KEY, API_KEYS
from passerelle_stack.launcher import Stack, free_port

MODEL = "tiny_echo"  # a fast-loading Python model of the lifecycle repository


@pytest.fixture(scope="module")
def open_admin(stack: Stack) -> Iterator[str]:
    """An adapter without an admin key (loopback clients only: the case a cross-site page attacks),
    with the dashboard at a sub-path and a public name."""
    url = stack.start_adapter(
        name="adapter-browser-policy",
        port=free_port(),
        env={"ADMIN_API_KEY": "", "DASHBOARD_PATH": "/ui/", "PUBLIC_HOSTNAME": "gateway.example", "STATUS_INTERVAL_S": "1"},
    )
    yield url
    stack.stop(names=["adapter-browser-policy"])


def _state(url: str) -> str:
    state: str = httpx.get(f"{url}/api/admin/status", timeout=30).json()["models"][MODEL]["state"]
    return state


def _settled_state(url: str, wanted: str) -> str:
    """The model's state once the status (sampled every second) shows `wanted`, or after 15 s."""
    deadline = time.monotonic() + 15
    while (state := _state(url)) != wanted and time.monotonic() < deadline:
        time.sleep(0.3)
    return state


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8080", "127.0.0.1.nip.io", "10.0.0.7:8080", ""])
def test_admin_and_dashboard_refuse_foreign_host_names(adapter_url: str, host: str) -> None:
    headers = {"Host": host, "Authorization": f"Bearer {ADMIN_KEY}"}
    for path in ("/api/admin/status", "/", "/index.html"):
        response = httpx.get(f"{adapter_url}{path}", headers=headers, timeout=30)
        assert response.status_code == 403, (path, response.text)
        assert response.json()["error"]["code"] == "host_not_allowed"
        assert "ALLOWED_HOSTS" in response.json()["error"]["message"]


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]"])
def test_loopback_names_with_any_port_are_the_default_names(adapter_url: str, host: str) -> None:
    port = adapter_url.rsplit(":", 1)[1]
    headers = {"Host": f"{host}:{port}", "Authorization": f"Bearer {ADMIN_KEY}"}
    assert httpx.get(f"{adapter_url}/api/admin/status", headers=headers, timeout=30).status_code == 200
    page = httpx.get(f"{adapter_url}/", headers=headers, timeout=30)
    assert page.status_code == 200 and '<div id="root">' in page.text
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy and page.headers["x-frame-options"] == "DENY"
    # The seed's address of its dashboard leads to it.
    assert httpx.get(f"{adapter_url}/dashboard", headers=headers, timeout=30).headers.get("location") == "/"


def test_probes_scrapes_and_apis_keep_working_with_a_pod_ip_as_host(adapter_url: str) -> None:
    pod = {"Host": "10.42.0.17:8080"}
    assert httpx.get(f"{adapter_url}/health", headers=pod, timeout=30).status_code == 200
    metrics = httpx.get(f"{adapter_url}/metrics", headers=pod, timeout=30)
    assert metrics.status_code == 200 and "passerelle_requests_total" in metrics.text
    models = httpx.get(f"{adapter_url}/v1/models", headers={**pod, "Authorization": f"Bearer {API_KEYS[0]}"}, timeout=30)
    assert models.status_code == 200 and models.json()["object"] == "list"


def test_public_hostname_and_dashboard_sub_path(open_admin: str) -> None:
    page = httpx.get(f"{open_admin}/ui/", headers={"Host": "gateway.example"}, timeout=30)
    assert page.status_code == 200 and '<div id="root">' in page.text
    # Asset URLs are relative, so the same build works at any sub-path.
    asset = re.search(r'src="(\./assets/[^"]+\.js)"', page.text)
    assert asset is not None, page.text
    assert httpx.get(f"{open_admin}/ui/{asset.group(1)[2:]}", timeout=30).status_code == 200
    for alias in ("/", "/dashboard"):
        redirect = httpx.get(f"{open_admin}{alias}", timeout=30)
        assert redirect.status_code == 307 and redirect.headers["location"] == "/ui/", alias
    assert httpx.get(f"{open_admin}/ui/", headers={"Host": "other.example"}, timeout=30).status_code == 403


@pytest.mark.parametrize(
    "headers",
    [
        {},  # a body-less POST, as <form method=post> or fetch(no-cors) from any page sends
        {"Content-Type": "text/plain"},
        {"Content-Type": "application/x-www-form-urlencoded"},
        {"Content-Type": "multipart/form-data; boundary=x"},
    ],
    ids=["no-body", "text-plain", "form-urlencoded", "multipart"],
)
def test_cross_site_simple_requests_cannot_load_or_unload(open_admin: str, headers: dict[str, str]) -> None:
    before = _state(open_admin)
    for action in ("load", "unload"):
        response = httpx.post(f"{open_admin}/api/admin/models/{MODEL}/{action}", headers=headers, timeout=60)
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == "cross_site_request_refused"
    token = httpx.put(f"{open_admin}/api/admin/huggingface/token", headers=headers, content=b'{"token": "hf_x"}', timeout=30)
    assert token.status_code == 403
    assert _state(open_admin) == before


def test_json_or_a_custom_header_lets_admin_writes_through(open_admin: str) -> None:
    loaded = httpx.post(f"{open_admin}/api/admin/models/{MODEL}/load", json={}, timeout=120)
    assert loaded.status_code == 200, loaded.text
    assert _settled_state(open_admin, "READY") == "READY"
    unloaded = httpx.post(f"{open_admin}/api/admin/models/{MODEL}/unload", headers={"X-Requested-With": "fetch"}, timeout=120)
    assert unloaded.status_code == 200, unloaded.text
    assert _settled_state(open_admin, "UNAVAILABLE") == "UNAVAILABLE"


def test_docs_assets_are_served_locally(adapter_url: str) -> None:
    for page in ("/docs", "/redoc"):
        html = httpx.get(f"{adapter_url}{page}", timeout=30).text
        assert "cdn.jsdelivr.net" not in html and "fonts.googleapis" not in html, html
        for asset in re.findall(r'(?:src|href)="(/docs/assets/[^"]+)"', html):
            assert httpx.get(f"{adapter_url}{asset}", timeout=30).status_code == 200, asset
    assert "/docs/assets/swagger-ui-bundle.js" in httpx.get(f"{adapter_url}/docs", timeout=30).text


def test_keyless_admin_refuses_requests_that_came_through_a_proxy(open_admin: str) -> None:
    """Loopback behind a reverse proxy: the proxy connects from 127.0.0.1 for every client, and
    uvicorn trusts X-Forwarded-For from loopback (FORWARDED_ALLOW_IPS; `*` trusts anyone's). Without an
    admin key, a request with forwarding headers is refused whatever address it shows."""
    assert httpx.get(f"{open_admin}/api/admin/status", timeout=30).status_code == 200
    for header in ({"X-Forwarded-For": "127.0.0.1"}, {"X-Forwarded-For": "203.0.113.9"}, {"Forwarded": "for=127.0.0.1"}):
        response = httpx.get(f"{open_admin}/api/admin/status", headers=header, timeout=30)
        assert response.status_code == 403 and response.json()["error"]["code"] == "admin_loopback_only", header
