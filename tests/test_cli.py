"""The `harness` entry point, in-process."""
from __future__ import annotations

from harness.cli import COMMANDS, main


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_list_backends_names_every_backend(capsys):
    assert main(["list", "backends"]) == 0
    out = capsys.readouterr().out
    for name in ("local", "shm", "lmdb", "files", "sqlite", "redis", "memcached", "ultradict"):
        assert name in out


def test_list_scenarios(capsys):
    assert main(["list", "scenarios"]) == 0
    assert "invite_storm.yaml" in capsys.readouterr().out
