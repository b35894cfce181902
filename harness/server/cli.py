"""`harness serve`: the pre-fork SIP server's command line.

Numbers are taken as strings and validated in :func:`build_config`, so a bad
value is one line naming the option (exit 2) instead of argparse's usage text.
"""
from __future__ import annotations

import argparse

from backends.base import parse_opts
from harness.server.config import ServerConfig, build_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", default="local",
                        help="store backend name (harness list backends) or module:Class (default local)")
    parser.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                        help="backend option, repeatable (e.g. --opt path=/dev/shm/x --opt fsync=true)")
    parser.add_argument("--workers", default="1", metavar="N", help="worker processes (default 1)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", default="5060", metavar="P", help="TCP port; 0 picks a free one (default 5060)")
    parser.add_argument("--timeout", default="10", metavar="S",
                        help="kill and replace a worker whose heartbeat is older than S seconds (default 10)")
    parser.add_argument("--idle-timeout", default="30", metavar="S",
                        help="close a connection idle for S seconds (default 30)")
    parser.add_argument("--graceful-timeout", default="10", metavar="S",
                        help="on SIGTERM, how long workers may take to finish (default 10)")
    parser.add_argument("--no-100", action="store_true", help="do not send 100 Trying to INVITE")
    parser.add_argument("--no-180", action="store_true", help="do not send 180 Ringing to INVITE")


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    return build_config(backend=args.backend, options=parse_opts(args.opt), workers=args.workers,
                        host=args.host, port=args.port, timeout=args.timeout,
                        idle_timeout=args.idle_timeout, graceful_timeout=args.graceful_timeout,
                        send_100=not args.no_100, send_180=not args.no_180)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM / SIGQUIT / SIGINT; 0 on a requested stop."""
    from harness.server.master import Master
    return Master(config_from_args(args)).run()
