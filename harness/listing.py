"""``harness list backends|scenarios``."""
from __future__ import annotations

import argparse
from pathlib import Path

from backends.base import BACKENDS, MissingDependency, resolve


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", choices=["backends", "scenarios"])
    parser.add_argument("--dir", default="scenarios", help="scenario directory (default: scenarios)")


def run(args: argparse.Namespace) -> int:
    if args.what == "backends":
        for name in BACKENDS:
            try:
                cls = resolve(name)
                doc = (cls.__doc__ or (cls.__module__ and __import__(cls.__module__, fromlist=["x"]).__doc__) or "")
                note = doc.strip().splitlines()[0] if doc.strip() else ""
            except MissingDependency as exc:
                note = f"unavailable: {exc}"
            except Exception as exc:  # a broken out-of-tree module should not hide the rest
                note = f"unavailable: {exc}"
            print(f"{name:10s} {note}")
        return 0
    for path in sorted(Path(args.dir).glob("*.yaml")):
        first = ""
        try:
            import yaml
            data = yaml.safe_load(path.read_text()) or {}
            first = str(data.get("description", "")).strip().splitlines()[0] if data.get("description") else ""
        except Exception as exc:
            first = f"unreadable: {exc}"
        print(f"{path.name:24s} {first}")
    return 0
