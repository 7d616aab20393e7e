"""websocket-client's address lookup: an IP literal skips the resolver; names and proxies do not."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import websocket._http as ws_http

from supervisor import _wsclient


def refuse_resolving(*_args: Any, **_kwargs: Any) -> Any:
    raise AssertionError("the resolver was asked")


class TestAddressLookup:
    def test_installed_in_websocket_client(self) -> None:
        """connect() looks the function up at call time: ours is the one it finds."""
        assert ws_http._get_addrinfo_list is _wsclient._addrinfo_list

    @pytest.mark.parametrize(("host", "family", "address"), [
        ("127.0.0.1", socket.AF_INET, ("127.0.0.1", 8000)),
        ("::1", socket.AF_INET6, ("::1", 8000, 0, 0)),
    ])
    def test_an_ip_literal_is_its_own_address(self, monkeypatch: pytest.MonkeyPatch, host: str,
                                               family: int, address: tuple[Any, ...]) -> None:
        """No getaddrinfo call (under gevent: no trip through its resolver's thread pool)."""
        monkeypatch.setattr(socket, "getaddrinfo", refuse_resolving)
        monkeypatch.delenv("http_proxy", raising=False)
        monkeypatch.delenv("https_proxy", raising=False)
        infos, tunnel, auth = _wsclient._addrinfo_list(host, 8000, False, ws_http.proxy_info())
        assert infos == [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", address)]
        assert (tunnel, auth) == (False, None)

    def test_a_name_is_resolved_as_before(self) -> None:
        """A host name goes to websocket-client's own lookup (the resolver)."""
        infos, tunnel, _ = _wsclient._addrinfo_list("localhost", 8000, False,
                                                    ws_http.proxy_info())
        assert infos
        assert tunnel is False
        assert all(info[4][1] == 8000 for info in infos)

    def test_a_proxy_keeps_websocket_clients_lookup(self) -> None:
        """With a proxy configured, the proxy is resolved and tunnelled to, as before."""
        proxy = ws_http.proxy_info(http_proxy_host="127.0.0.1", http_proxy_port=3128)
        infos, tunnel, _ = _wsclient._addrinfo_list("127.0.0.1", 8000, False, proxy)
        assert tunnel is True
        assert [info[4][:2] for info in infos] == [("127.0.0.1", 3128)]
