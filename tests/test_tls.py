"""TLS options that work (issue 8): a self-signed certificate on loopback, both ways."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hostile_server import HostileServer, Peer, echo_handler
from support import EventLog, fast_policy
from tls_certs import SelfSigned, make_self_signed

from supervisor import SessionFailed, SessionSpec, Supervisor
from supervisor._http import TlsOptions, lookup_chainlit_version
from supervisor._streams import shutdown
from supervisor.errors import HandshakeError


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[SelfSigned, SelfSigned]:
    """The server's self-signed certificate and an unrelated one."""
    directory = tmp_path_factory.mktemp("tls")
    return make_self_signed(directory, "server"), make_self_signed(directory, "stranger")


@pytest.fixture
def tls_echo(certs: tuple[SelfSigned, SelfSigned]) -> Iterator[HostileServer]:
    """A wss:// echo server with the self-signed certificate."""
    with HostileServer(echo_handler, tls=certs[0].server_context()) as server:
        yield server


def _round_trip(url: str, **spec: object) -> str:
    log = EventLog()
    with Supervisor.start(fast_policy(max_restarts=0)) as sup:
        session = sup.open(SessionSpec(url=url, on_event=log, **spec))  # type: ignore[arg-type]
        session.send("over tls").get(timeout=10)
        return str(log.wait_for_count(1)[0].data)


def _refused(url: str, **spec: object) -> str:
    with Supervisor.start(fast_policy(max_restarts=0)) as sup:
        session = sup.open(SessionSpec(url=url, **spec))  # type: ignore[arg-type]
        with pytest.raises(SessionFailed) as caught:
            session.resume(None).get(timeout=10)
        return caught.value.reason


class TestTls:
    """verify_tls and ca_file reach the TLS handshake."""

    def test_self_signed_is_refused_by_default(self, tls_echo: HostileServer) -> None:
        """Verification is on by default: a self-signed server fails the handshake."""
        assert "certificate verify failed" in _refused(tls_echo.url("wss"))

    def test_verify_tls_false_accepts_self_signed(self, tls_echo: HostileServer) -> None:
        """verify_tls=False connects to a self-signed server and frames flow."""
        assert _round_trip(tls_echo.url("wss"), verify_tls=False) == "over tls"

    def test_ca_file_trusts_that_ca(self, tls_echo: HostileServer,
                                    certs: tuple[SelfSigned, SelfSigned]) -> None:
        """ca_file naming the server's certificate verifies it (hostname included)."""
        assert _round_trip(tls_echo.url("wss"), ca_file=str(certs[0].cert_file)) == "over tls"

    def test_ca_file_of_another_ca_is_refused(self, tls_echo: HostileServer,
                                              certs: tuple[SelfSigned, SelfSigned]) -> None:
        """ca_file naming an unrelated CA still refuses the server."""
        reason = _refused(tls_echo.url("wss"), ca_file=str(certs[1].cert_file))
        assert "certificate verify failed" in reason

    def test_missing_ca_file_fails_the_handshake(self, tls_echo: HostileServer,
                                                 tmp_path: Path) -> None:
        """A ca_file that does not exist fails the handshake, naming the file."""
        reason = _refused(tls_echo.url("wss"), ca_file=str(tmp_path / "nope.pem"))
        assert "No such file" in reason


class TestTlsVersionLookup:
    """Chainlit version detection honours the same TLS options."""

    @staticmethod
    def _json(peer: Peer) -> None:
        peer.read_request()
        peer.sock.sendall(b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 2\r\n\r\n{}")

    def test_lookup_follows_verify_and_ca_file(self, certs: tuple[SelfSigned, SelfSigned]
                                               ) -> None:
        """Refused with verification on; answered with verify off or the right ca_file."""
        with HostileServer(self._json, tls=certs[0].server_context()) as server:
            base = server.url("https")
            with pytest.raises(HandshakeError, match="certificate verify failed"):
                lookup_chainlit_version(base, time.monotonic() + 5, TlsOptions(),
                                        lambda _s: None)
            for tls in (TlsOptions(verify=False), TlsOptions(ca_file=str(certs[0].cert_file))):
                assert lookup_chainlit_version(base, time.monotonic() + 5, tls,
                                               lambda _s: None) == "2"


class TestTlsTeardown:
    """Shutting a TLS connection down never leaves a window for cleartext writes."""

    def test_shutdown_keeps_the_tls_layer(self, tls_echo: HostileServer) -> None:
        """After the transport's shutdown the socket is still TLS: a late send fails, in TLS."""
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        raw = socket.create_connection(("127.0.0.1", tls_echo.port), timeout=5)
        with context.wrap_socket(raw) as sock:
            assert sock.version() is not None
            shutdown(sock)
            # ssl.SSLSocket.shutdown would have dropped the TLS object first, so a
            # send racing it could go out as plain TCP.
            assert sock.version() is not None
            with pytest.raises((ssl.SSLError, OSError)):
                sock.send(b"late")
