"""Errors that the CLI turns into exit codes (DESIGN.md: 0 ok, 1 failed runs or
regression, 2 invalid input, 3 a missing dependency made every run impossible)."""
from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_MISSING = 3


class HarnessError(Exception):
    """Base: its message is one line meant for the user; ``exit_code`` says how to exit."""

    exit_code = EXIT_FAILED


class InvalidInput(HarnessError):
    """Bad command line, scenario file or results folder: name file, field, what is allowed."""

    exit_code = EXIT_INVALID


class MissingBinary(HarnessError):
    """A system program is absent; the message gives the command that installs it."""

    exit_code = EXIT_MISSING

    def __init__(self, program: str, package: str) -> None:
        self.program = program
        self.package = package
        super().__init__(f"{program} not found; install it with: sudo apt-get install -y {package}")
