"""Run the test Chainlit app (``app.py`` beside this file) as a real server on loopback.

``ChainlitApp`` copies the app and its ``.chainlit/config.toml`` into a fresh temporary
directory, creates the SQLite schema there, and starts
``python -m chainlit run app.py --headless --host 127.0.0.1 --port PORT`` in its own
process group with that directory as cwd and ``CHAINLIT_APP_ROOT``, so whatever
Chainlit writes (``.files/``, ``chainlit.md``, ``.chainlit/translations/``) stays in
the temporary directory. ``stop()`` ends the whole process group (SIGTERM, then
SIGKILL after a bound) and removes the directory.

Nothing here imports chainlit: importing it creates ``.files/`` in the current
directory, which for pytest is the repository.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from types import TracebackType
from typing import Any

from .schema import create_schema

APP_DIR = Path(__file__).resolve().parent
DB_ENV = "SUPERVISOR_CHAINLIT_DB"
HOST = "127.0.0.1"
READY_PATH = "/health"  # server.py: GET /health -> {"status": "ok"}, no auth, no data layer
AUTH_COOKIE = "access_token"

# Variables that would change what the child does: Chainlit's own settings (the click
# CLI reads CHAINLIT_* and these bare names as option values), or a different data
# layer / Literal AI / OAuth provider configured from the environment.
_SCRUBBED_PREFIXES = ("CHAINLIT_", "LITERAL_", "OAUTH_", "UVICORN_")
_SCRUBBED_NAMES = frozenset(
    {"DATABASE_URL", "CI", "DEBUG", "WATCH", "HEADLESS", "NO_CACHE", "RUN_TARGET", "PORT"}
)


class ChainlitAppError(RuntimeError):
    """The Chainlit server did not start, or died; the message ends with its log."""


class LoginFailed(RuntimeError):
    """``POST /login`` did not answer 200; ``status`` and ``body`` say what it did answer."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"POST /login answered {status}: {body}")
        self.status = status
        self.body = body


@dataclass(frozen=True)
class LoginResponse:
    """What ``POST /login`` answered: status, JSON body, raw Set-Cookie headers, cookies."""

    status: int
    body: Any
    set_cookie: tuple[str, ...]
    cookies: dict[str, str] = field(default_factory=dict)


def free_port(host: str = HOST) -> int:
    """A port that was free on ``host`` a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def cookie_header(cookies: dict[str, str]) -> str:
    """Render cookies as one ``Cookie`` request-header value."""
    return "; ".join(f"{name}={value}" for name, value in cookies.items())


class ChainlitApp:
    """A Chainlit server for one test run; a context manager.

    Attributes once started: ``url`` (``http://127.0.0.1:PORT``), ``port``, ``root``
    (the temporary app root), ``db_path``, ``secret`` (``CHAINLIT_AUTH_SECRET``),
    ``python`` (the interpreter whose Chainlit runs; see ``versions.py`` for the
    extra versions), ``config`` (which ``.chainlit/`` file becomes its config.toml),
    ``log_path`` (the server's stdout and stderr) and ``startup_s`` (seconds from
    spawn to the first 200 from ``/health``).
    """

    def __init__(
        self,
        *,
        startup_timeout: float = 60.0,
        stop_timeout: float = 10.0,
        keep_root: bool = False,
        extra_env: dict[str, str] | None = None,
        python: str = sys.executable,
        config: str = "config.toml",
    ) -> None:
        self.python = python
        self.config = config
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.keep_root = keep_root
        self.extra_env = dict(extra_env or {})
        self.secret = secrets.token_urlsafe(48)
        self.port = 0
        self.url = ""
        self.root: Path | None = None
        self.db_path: Path | None = None
        self.log_path: Path | None = None
        self.startup_s: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, attempts: int = 3) -> ChainlitApp:
        """Start the server and wait until it answers; retries on a lost port race."""
        if self._proc is not None:
            raise ChainlitAppError("already started")
        self._prepare_root()
        last: ChainlitAppError | None = None
        for _ in range(attempts):
            try:
                self._spawn_and_wait()
                return self
            except ChainlitAppError as exc:
                last = exc
                self._terminate()
                if "address already in use" not in str(exc).lower():
                    break
        self.stop()
        assert last is not None
        raise last

    def stop(self) -> None:
        """Stop the server's process group and remove the temporary app root."""
        self._terminate()
        if self.root is not None and not self.keep_root:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> ChainlitApp:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def log_text(self) -> str:
        """Everything the server has printed so far."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    # -- HTTP helpers ------------------------------------------------------------------

    def post_login(self, username: str, password: str) -> LoginResponse:
        """``POST /login`` form-encoded, as the React client does; any status is returned."""
        data = urllib.parse.urlencode({"username": username, "password": password}).encode()
        request = urllib.request.Request(  # noqa: S310 - http://127.0.0.1 only
            f"{self.url}/login",
            data=data,
            method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
                status, raw, headers = resp.status, resp.read(), resp.headers
        except urllib.error.HTTPError as err:
            status, raw, headers = err.code, err.read(), err.headers
        set_cookie = tuple(headers.get_all("Set-Cookie") or ())
        cookies: dict[str, str] = {}
        for header in set_cookie:
            jar: SimpleCookie = SimpleCookie()
            jar.load(header)
            cookies.update({name: morsel.value for name, morsel in jar.items()})
        text = raw.decode("utf-8", errors="replace")
        try:
            body: Any = json.loads(text)
        except ValueError:
            body = text
        return LoginResponse(status=status, body=body, set_cookie=set_cookie, cookies=cookies)

    def login(self, username: str, password: str) -> dict[str, str]:
        """Log in and return the cookies the server set (``access_token``, possibly chunked)."""
        resp = self.post_login(username, password)
        if resp.status != 200 or not any(name.startswith(AUTH_COOKIE) for name in resp.cookies):
            raise LoginFailed(resp.status, json.dumps(resp.body))
        return resp.cookies

    def get_json(self, path: str, cookies: dict[str, str] | None = None) -> tuple[int, Any]:
        """``GET path`` with optional cookies; returns (status, parsed JSON or text)."""
        headers = {"Cookie": cookie_header(cookies)} if cookies else {}
        request = urllib.request.Request(f"{self.url}{path}", headers=headers)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        text = raw.decode("utf-8", errors="replace")
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    # -- data layer --------------------------------------------------------------------

    def steps(self, thread_id: str) -> list[tuple[str, str]]:
        """(type, output) of the thread's persisted steps, oldest first."""
        assert self.db_path is not None
        conn = sqlite3.connect(self.db_path)
        try:
            rows = conn.execute(
                'SELECT "type", "output" FROM steps WHERE "threadId" = ? ORDER BY "createdAt"',
                (thread_id,),
            ).fetchall()
        finally:
            conn.close()
        return [(str(kind), str(output or "")) for kind, output in rows]

    def owner(self, thread_id: str) -> str | None:
        """The ``userIdentifier`` of the persisted thread, or None (no row, or no user yet)."""
        assert self.db_path is not None
        conn = sqlite3.connect(self.db_path)
        try:
            row = conn.execute('SELECT "userIdentifier" FROM threads WHERE "id" = ?',
                               (thread_id,)).fetchone()
        finally:
            conn.close()
        return None if row is None or row[0] is None else str(row[0])

    def wait_persisted(
        self,
        thread_id: str,
        predicate: Callable[[list[tuple[str, str]]], bool],
        timeout: float = 10.0,
        owner: str | None = None,
    ) -> list[tuple[str, str]]:
        """Wait until the thread's persisted steps satisfy ``predicate``; return them.

        Chainlit writes steps in fire-and-forget tasks and signals nothing when they
        land: a reply and ``task_end`` can reach the client before the steps are in the
        database, so a resume straight after a turn may miss that turn. Looking at the
        database is the only way to know. The thread's user is written by another such
        task, and a resume before it lands is "not the author" (so not found): pass
        ``owner`` to wait for it too. The poll interval is a wait on the server
        process, so a crashed server fails at once.
        """
        deadline = time.monotonic() + timeout
        while True:
            steps = self.steps(thread_id)
            if predicate(steps) and (owner is None or self.owner(thread_id) == owner):
                return steps
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"thread {thread_id} steps after {timeout}s: {steps}, "
                                   f"owner {self.owner(thread_id)!r}")
            if self._proc is None:
                raise ChainlitAppError("not running")
            try:
                code = self._proc.wait(timeout=min(0.01, remaining))
            except subprocess.TimeoutExpired:
                continue
            raise ChainlitAppError(f"chainlit exited with {code}\n" + self.log_text()[-4000:])

    # -- internals ---------------------------------------------------------------------

    def _prepare_root(self) -> None:
        root = Path(tempfile.mkdtemp(prefix="chainlit-app-"))
        self.root = root
        shutil.copy2(APP_DIR / "app.py", root / "app.py")
        (root / ".chainlit").mkdir()
        shutil.copy2(APP_DIR / ".chainlit" / self.config, root / ".chainlit" / "config.toml")
        self.db_path = create_schema(root / "chainlit.sqlite3")
        self.log_path = root / "server.log"

    def _child_env(self) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(_SCRUBBED_PREFIXES) and key not in _SCRUBBED_NAMES
        }
        assert self.root is not None
        env.update(
            {
                "CHAINLIT_AUTH_SECRET": self.secret,
                "CHAINLIT_APP_ROOT": str(self.root),
                DB_ENV: str(self.db_path),
                "PYTHONUNBUFFERED": "1",
                "PYTHONDONTWRITEBYTECODE": "1",
                "NO_PROXY": "127.0.0.1,localhost",
            }
        )
        env.update(self.extra_env)
        return env

    def _spawn_and_wait(self) -> None:
        assert self.root is not None
        assert self.log_path is not None
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self._log = self.log_path.open("ab")
        cmd = [
            self.python, "-m", "chainlit", "run", "app.py",
            "--headless", "--host", HOST, "--port", str(self.port),
        ]  # fmt: skip
        started = time.monotonic()
        self._proc = subprocess.Popen(
            cmd,
            cwd=self.root,
            env=self._child_env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() kills every child
        )
        deadline = started + self.startup_timeout
        while True:
            if self._ready():
                self.startup_s = time.monotonic() - started
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ChainlitAppError(
                    f"chainlit did not answer {READY_PATH} within {self.startup_timeout}s\n"
                    + self.log_text()[-4000:]
                )
            try:  # doubles as the poll interval and notices an early exit
                code = self._proc.wait(timeout=min(0.1, remaining))
            except subprocess.TimeoutExpired:
                continue
            raise ChainlitAppError(f"chainlit exited with {code}\n" + self.log_text()[-4000:])

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}{READY_PATH}", timeout=1) as resp:  # noqa: S310
                return bool(resp.status == 200)
        except (OSError, ValueError):
            return False

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                self._signal_group(proc, signal.SIGTERM)
                try:
                    proc.wait(timeout=self.stop_timeout)
                except subprocess.TimeoutExpired:
                    self._signal_group(proc, signal.SIGKILL)
                    proc.wait(timeout=self.stop_timeout)
            # Children left in the group after the leader exited (none expected).
            self._signal_group(proc, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None

    @staticmethod
    def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
