"""Raw-socket servers on loopback that misbehave on purpose, for the fault tests.

Each connection runs ``handler(peer)`` in its own thread (a greenlet under
gevent's patching), so a handler can stall, flood, trickle or lie exactly as a
broken server would. :class:`Peer` has the few WebSocket steps a handler needs:
read the request, answer the upgrade, write server frames, read client frames.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import socket
import ssl
import struct
import threading
from collections.abc import Callable
from typing import Any, Self

HOST = "127.0.0.1"
_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Peer:
    """The server side of one accepted connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def read_request(self) -> tuple[str, dict[str, str]]:
        """The request line's target and the headers (lower-cased names)."""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("client went away before its request ended")
            self.buffer += chunk
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return lines[0].split(" ")[1], headers

    def accept_upgrade(self, headers: dict[str, str]) -> None:
        accept = base64.b64encode(hashlib.sha1(  # noqa: S324 - RFC 6455
            (headers["sec-websocket-key"] + _GUID).encode()).digest()).decode()
        self.sock.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
                           ).encode())

    def send_frame(self, payload: bytes, opcode: int = 0x1, *, fin: bool = True,
                   announce: int | None = None) -> None:
        """One unmasked server frame; ``announce`` lies about the payload length."""
        length = len(payload) if announce is None else announce
        head = bytes([(0x80 if fin else 0) | opcode])
        if length < 126:
            head += bytes([length])
        elif length < 1 << 16:
            head += bytes([126]) + struct.pack("!H", length)
        else:
            head += bytes([127]) + struct.pack("!Q", length)
        self.sock.sendall(head + payload)

    def read_frame(self) -> tuple[int, bytes]:
        """One (masked) client frame: opcode and unmasked payload."""
        head = self._exact(2)
        length = head[1] & 0x7F
        if length == 126:
            length = struct.unpack("!H", self._exact(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self._exact(8))[0]
        key = self._exact(4)
        masked = self._exact(length)
        # One big-integer XOR: a byte-by-byte loop takes seconds on a multi-MB frame.
        mask = (key * (length // 4 + 1))[:length]
        payload = (int.from_bytes(masked, "big") ^ int.from_bytes(mask, "big")).to_bytes(
            length, "big")
        return head[0] & 0x0F, payload

    def _exact(self, n: int) -> bytes:
        if len(self.buffer) < n:
            parts, have = [self.buffer], len(self.buffer)  # joined once: no quadratic copy
            while have < n:
                chunk = self.sock.recv(max(65536, min(n - have, 1 << 20)))
                if not chunk:
                    raise ConnectionError("client closed")
                parts.append(chunk)
                have += len(chunk)
            self.buffer = b"".join(parts)
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data


class HostileServer:
    """A listening socket on loopback; each connection gets ``handler(peer)``."""

    def __init__(self, handler: Callable[[Peer], Any],
                 tls: ssl.SSLContext | None = None) -> None:
        self._handler = handler
        self._tls = tls
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((HOST, 0))
        self._listener.listen(128)
        self.port = self._listener.getsockname()[1]
        self.connections = 0
        self.requests: list[tuple[str, dict[str, str]]] = []
        """What handlers chose to record (target, headers)."""
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True, name="hostile")

    def url(self, scheme: str = "ws", path: str = "/") -> str:
        return f"{scheme}://{HOST}:{self.port}{path}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def record(self, target: str, headers: dict[str, str]) -> None:
        with self._lock:
            self.requests.append((target, headers))

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            socks = list(self._socks)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._thread.join(timeout=5)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._socks.append(sock)
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_side=True)
                with self._lock:
                    self._socks.append(sock)
            self._handler(Peer(sock))
        except (OSError, ConnectionError, ssl.SSLError):
            pass  # the client went away, or the test closed the server
        finally:
            with contextlib.suppress(OSError):
                sock.close()


def echo_handler(peer: Peer) -> None:
    """A well-behaved WebSocket echo server (text frames)."""
    _, headers = peer.read_request()
    peer.accept_upgrade(headers)
    while True:
        opcode, payload = peer.read_frame()
        if opcode == 0x8:
            peer.send_frame(payload[:2], 0x8)
            return
        peer.send_frame(payload, opcode)


def stall(release: threading.Event) -> Callable[[Peer], None]:
    """A handler: answer the upgrade, then never read again until ``release`` (60 s at most)."""
    def handler(peer: Peer) -> None:
        _, headers = peer.read_request()
        peer.accept_upgrade(headers)
        release.wait(60)
    return handler
