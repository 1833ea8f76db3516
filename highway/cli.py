"""The `highway` command: `highway serve [--host H] [--port P] [--workers N]`."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from highway import __version__
from highway.config import Settings, SettingsError, load_settings, redact_url
from highway.log import configure_logging

log = logging.getLogger("highway")

# Exit codes: 2 for a usage or configuration problem (like argparse), 1 for a failure at run
# time, 130 for an interrupt that arrived before the server could handle it.
EXIT_CONFIG = 2
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "simulate-call":
            return _simulate_call(args)
        raise AssertionError(f"unhandled command {args.command!r}")  # argparse requires one
    except _Refusal as refusal:
        print(f"highway: {refusal}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        # Ctrl-C before the server's own signal handling was in place: nothing to clean up.
        return EXIT_INTERRUPTED


class _Refusal(Exception):
    """A configuration the CLI will not run with; the message is one line for stderr."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="highway", description="Highway: a phone-to-AI voice bridge."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the server (Hypercorn, trio worker)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument(
        "--port", type=_port, default=8000, help="port to bind; 0 picks a free one (default 8000)"
    )
    serve.add_argument(
        "--workers",
        type=_positive,
        default=1,
        help="worker processes; more than 1 needs PostgreSQL (default 1)",
    )
    simulate = commands.add_parser(
        "simulate-call",
        help="ring a running Highway like Twilio does and print latencies and the transcript",
    )
    _simulate_arguments(simulate)
    return parser


def _simulate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", default="http://127.0.0.1:8000", help="Highway's address (default %(default)s)"
    )
    parser.add_argument(
        "--from",
        dest="caller",
        default="+15005550199",
        help="the caller's number; a pending verification for it is used (default %(default)s)",
    )
    parser.add_argument("--turns", type=int, default=2, help="caller turns (default 2)")
    parser.add_argument(
        "--speech-ms", type=int, default=1500, help="generated speech per turn (default 1500)"
    )
    parser.add_argument("--wav", type=Path, help="speak this WAV file instead, every turn")
    parser.add_argument("--save-heard", type=Path, help="write what the caller heard (WAV)")
    parser.add_argument(
        "--timeout", type=float, default=60, help="give up after this many seconds (default 60)"
    )


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _port(text: str) -> int:
    value = _whole_number(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("must be between 0 and 65535")
    return value


def _positive(text: str) -> int:
    value = _whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def is_loopback(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1 (also written [::1] or ::ffff:127.x.x.x)."""
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # some other host name: it may resolve to anything
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _load() -> Settings:
    try:
        return load_settings()
    except SettingsError as error:
        raise _Refusal(str(error)) from None


def _serve(args: argparse.Namespace) -> int:
    settings = _load()
    if settings.api_key is None and not is_loopback(args.host):
        raise _Refusal(
            f"refusing to listen on {args.host} without HIGHWAY_API_KEY: "
            "set HIGHWAY_API_KEY, or use a loopback --host such as 127.0.0.1"
        )
    if args.workers > 1 and settings.uses_sqlite:
        raise _Refusal(
            f"--workers {args.workers} needs PostgreSQL: SQLite takes one writer at a time, "
            "so use --workers 1 or a postgresql:// HIGHWAY_DATABASE_URL"
        )

    configure_logging(settings.log_level, settings.log_format)
    # Imported here so that settings errors are reported without loading the server stack.
    from highway import server

    config = server.hypercorn_config(args.host, args.port, settings.shutdown_grace_seconds)
    try:
        sockets = server.bind_sockets(config)
    except OSError as error:
        print(
            f"highway: cannot listen on {args.host}:{args.port}: {error.strerror or error}",
            file=sys.stderr,
        )
        return EXIT_FAILURE

    log.info(
        "Highway %s starting: database %s, audio mode %s, %d worker(s)",
        __version__,
        redact_url(settings.database_url),
        settings.audio_mode,
        args.workers,
    )
    if settings.offline:
        log.warning(
            "offline mode: OPENAI_API_KEY is not set, so calls are answered by Highway's"
            " built-in stand-in agent, not by an AI model"
        )
    if settings.api_key is None:
        log.info(
            "HIGHWAY_API_KEY is not set: the API is open to anyone who can reach %s", args.host
        )
    return server.serve(settings, config, sockets, args.workers)


def _simulate_call(args: argparse.Namespace) -> int:
    settings = _load()
    configure_logging(logging.WARNING, settings.log_format)
    # Imported here, like the server: `highway serve` need not load the simulator.
    import trio

    from highway import simulate_call

    try:
        report = trio.run(simulate_call.simulate_call, settings, simulate_call.options_from(args))
    except simulate_call.SimulationFailed as failure:
        print(f"highway: {failure}", file=sys.stderr)
        return EXIT_FAILURE
    print(report)
    return 0
