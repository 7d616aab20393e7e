"""The plain HTTP requests around a handshake (internal, transport level).

Chainlit's identity style is found with one ``GET /user`` per server; the
request runs in a connection's own thread (through the codec's ``handshake()``),
never in an actor.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request

from supervisor.errors import HandshakeError
from supervisor.protocols.socketio import http_base_url

_versions: dict[str, str] = {}
_versions_lock = threading.Lock()


def server_base(url: str) -> str:
    """The HTTP base URL of a server named by a ws(s)/http(s) URL (Socket.IO path dropped)."""
    base = http_base_url(url, "ws/socket.io")
    base = http_base_url(base, "socket.io")
    if not base.startswith(("http://", "https://")):
        msg = f"not a server URL (http, https, ws or wss with a host): {url!r}"
        raise ValueError(msg)
    return base


def detect_chainlit_version(url: str, timeout: float = 10.0) -> str:
    """``"2"`` or ``"1"``: which identity style the Chainlit server at ``url`` speaks.

    Asks ``GET /user`` once per server (cached): Chainlit 2.x answers JSON (a
    user, or a JSON 401), 1.x serves its HTML page there.
    """
    base = server_base(url)
    with _versions_lock:
        if base in _versions:
            return _versions[base]
    # server_base admits only http(s), so urlopen never reads a file: URL.
    request = urllib.request.Request(  # noqa: S310
        f"{base}/user", headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            content_type = response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        content_type = exc.headers.get("Content-Type", "")
    except (OSError, ValueError) as exc:
        msg = f"cannot detect the Chainlit version of {base}: {exc}"
        raise HandshakeError(msg) from exc
    version = "1" if "text/html" in content_type else "2"
    with _versions_lock:
        _versions[base] = version
    return version
