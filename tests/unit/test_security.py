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
