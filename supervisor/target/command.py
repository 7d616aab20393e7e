"""``supervisor target``: the command-line face of the embedded target.

:func:`add_arguments` and :func:`options_from_args` let the main CLI mount
the subcommand; :func:`main` runs it stand-alone (``main(["--port", "0"])``).
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Sequence
from typing import NoReturn

from supervisor import _collector
from supervisor.target.options import TargetOptions


class OneLineParser(argparse.ArgumentParser):
    """argparse errors as one line and a pointer to --help, not the usage block."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see '{self.prog} --help')\n")
        sys.exit(2)


def port_number(value: str) -> int:
    """A TCP port, 0 to 65535 (0: any free one)."""
    try:
        port = int(value)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        msg = f"must be a port number from 0 to 65535, got {value!r}"
        raise argparse.ArgumentTypeError(msg)
    return port


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the target's options to ``parser``."""
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=port_number, default=8000,
                        help="port to bind; 0 picks a free one (default: %(default)s)")
    parser.add_argument("--identity-style", choices=("2", "1"), default="2",
                        help="Chainlit identity style to expect (default: %(default)s)")
    parser.add_argument("--require-login", action="store_true",
                        help="refuse connects without a token from POST /login")
    parser.add_argument("--password", default=None,
                        help="shared login password (default: the username itself)")
    parser.add_argument("--secret", default=None,
                        help="HS256 token secret (default: random); share it to mint tokens")
    parser.add_argument("--foreign-thread", choices=("refuse", "error"), default="refuse",
                        help="another user's threadId: refuse the connect, or resume_thread_error")
    parser.add_argument("--opaque-refusals", action="store_true",
                        help="refuse with Chainlit's fixed text instead of a reason")
    parser.add_argument("--token-delay", type=float, default=0.0, help="seconds per reply token")
    parser.add_argument("--reply-tokens", type=int, default=None,
                        help="tokens per reply (default: one per word of the message)")
    parser.add_argument("--handshake-log", default=None, help="JSON-lines file of connects")
    parser.add_argument("--message-log", default=None,
                        help="JSON-lines file of the chat messages clients sent")
    parser.add_argument("--drop-probability", type=float, default=0.0,
                        help="chance to cut the connection per turn or echoed frame")
    parser.add_argument("--drop-when", choices=("after_reply", "on_message"),
                        default="after_reply", help="when a turn's cut happens")
    parser.add_argument("--refuse-probability", type=float, default=0.0,
                        help="chance to refuse each connect")
    parser.add_argument("--handshake-delay", type=float, default=0.0,
                        help="seconds before each connect is decided")
    parser.add_argument("--seed", type=int, default=None, help="seed for the fault dice")
    parser.add_argument("--ping-interval", type=int, default=25,
                        help="Engine.IO ping interval, whole seconds (default: %(default)s)")
    parser.add_argument("--ping-timeout", type=float, default=20.0,
                        help="seconds a client has to answer a ping (default: %(default)s)")
    parser.add_argument("--log-level", default="info",
                        choices=("critical", "error", "warning", "info", "debug"),
                        help="uvicorn's log level (default: %(default)s)")


def options_from_args(args: argparse.Namespace) -> TargetOptions:
    """The :class:`TargetOptions` the parsed ``args`` ask for; ValueError when one is bad."""
    for name in ("password", "secret"):
        if getattr(args, name) == "":
            msg = f"--{name} must not be empty (leave it out for the default)"
            raise ValueError(msg)
    extra = {"secret": args.secret} if args.secret else {}
    return TargetOptions(
        identity_style=args.identity_style, require_login=args.require_login,
        password=args.password, foreign_thread=args.foreign_thread,
        opaque_refusals=args.opaque_refusals, token_delay=args.token_delay,
        reply_tokens=args.reply_tokens, handshake_log=args.handshake_log,
        message_log=args.message_log,
        drop_probability=args.drop_probability, drop_when=args.drop_when,
        refuse_probability=args.refuse_probability, handshake_delay=args.handshake_delay,
        seed=args.seed, ping_interval=args.ping_interval, ping_timeout=args.ping_timeout,
        **extra)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the target in the foreground until SIGINT/SIGTERM; the exit status."""
    parser = OneLineParser(
        prog="supervisor target",
        description="Run the embedded Chainlit-compatible chat server.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        options = options_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        socket.getaddrinfo(args.host, args.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        parser.error(f"argument --host: cannot bind to {args.host!r}: {exc}")

    def announce(url: str) -> None:
        _collector.settle()  # start-up is over: everything imported, the app built
        # One parseable line, flushed: scripts (and tests) learn the port from it.
        print(f"supervisor target listening on {url}", flush=True)

    from supervisor.target.server import serve_forever  # noqa: PLC0415 - see __init__

    return serve_forever(args.host, args.port, options, log_level=args.log_level,
                         on_started=announce)
