"""``harness``: the command line. Each sub-command lives in its own module, imported
only when that command runs; the module provides ``add_arguments(parser)`` and
``run(args) -> int``. Errors become one line on stderr and the exit codes of DESIGN.md.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

from harness.errors import EXIT_INVALID, EXIT_MISSING, HarnessError

COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("harness.runner", "run a scenario file end to end and write results/"),
    "serve": ("harness.server.cli", "run the pre-fork SIP server"),
    "load": ("harness.loadgen.cli", "drive a SIP server with the built-in load generator"),
    "report": ("harness.report", "render plots and an HTML/Markdown report of a results folder"),
    "compare": ("harness.compare", "regression verdicts between two results folders"),
    "bench-store": ("harness.benchstore", "micro-benchmark one backend's Store operations"),
    "list": ("harness.listing", "list backends or scenarios"),
}


def build_parser(command: Optional[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description="sipstate: shared session state for "
                                     "pre-fork SIP servers, measured")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (modname, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:  # import only the module of the command being run
            importlib.import_module(modname).add_arguments(sp)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in COMMANDS:
        command = None
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_INVALID
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except HarnessError as exc:
        print(f"harness {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ImportError as exc:  # a missing optional library (MissingDependency is one)
        print(f"harness {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_MISSING
    except ValueError as exc:  # ConfigError and other bad input
        print(f"harness {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        print(f"harness {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
