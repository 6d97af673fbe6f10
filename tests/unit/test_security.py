"""Access checks, without a server: the admin API without a key serves loopback clients only."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from passerelle.core.errors import APIError
from passerelle.core.security import AdminCheck


@pytest.mark.parametrize(("client_host", "allowed"), [("127.0.0.1", True), ("::1", True), ("192.0.2.10", False), ("10.1.2.3", False)])
def test_without_an_admin_key_only_loopback_clients_are_served(client_host: str, allowed: bool) -> None:
    request = Request({"type": "http", "method": "GET", "path": "/api/admin/status", "headers": [], "client": (client_host, 50000)})
    check = AdminCheck(None)
    if allowed:
        check(request)
    else:
        with pytest.raises(APIError) as refused:
            check(request)
        assert refused.value.status == 403 and refused.value.code == "admin_loopback_only"


@pytest.mark.parametrize(
    "header",
    [("x-forwarded-for", "127.0.0.1"), ("forwarded", "for=127.0.0.1"), ("x-real-ip", "127.0.0.1"), ("x-forwarded-host", "gw")],
)
def test_without_an_admin_key_a_proxied_request_is_not_local(header: tuple[str, str]) -> None:
    """A reverse proxy on the host connects from loopback for everyone (and FORWARDED_ALLOW_IPS=*
    lets a client write its own X-Forwarded-For): forwarding headers mean not local."""
    name, value = header
    scope = {"type": "http", "method": "GET", "path": "/api/admin/status", "headers": [(name.encode(), value.encode())]}
    with pytest.raises(APIError) as refused:
        AdminCheck(None)(Request({**scope, "client": ("127.0.0.1", 50000)}))
    assert refused.value.status == 403 and "proxy" in refused.value.message


def test_with_an_admin_key_proxied_requests_are_judged_by_the_key() -> None:
    headers = [(b"x-forwarded-for", b"203.0.113.9"), (b"authorization", b"Bearer k-0123456789")]
    request = Request({"type": "http", "method": "GET", "path": "/api/admin/status", "headers": headers, "client": ("10.0.0.2", 1)})
    AdminCheck("k-0123456789")(request)
