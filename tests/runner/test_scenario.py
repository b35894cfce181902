"""Scenario files: validation (one clear line, exit 2), matrix expansion, --only, shipped files."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from backends.base import BACKENDS
from harness import cli
from harness.errors import InvalidInput
from harness.progress import estimate_seconds
from harness.scenario import expand, filter_specs, load_scenario, parse_only
from tests.support import ROOT

SCENARIOS = ROOT / "scenarios"
GOOD = """\
name: t
backends:
  - name: lmdb
  - names: [local, shm]
load: {rate: 50, duration: 1, warmup: 0}
"""

# (what is wrong, file text, fragments the one error line must contain)
MISTAKES = [
    ("unknown top-level key", GOOD + "colour: red\n", ["colour", "unknown key", "allowed keys here", "backends"]),
    ("unknown key in a list item", GOOD.replace("- name: lmdb", "- name: lmdb\n    colour: red"),
     ["backends[0].colour", "unknown key", "storage"]),
    ("bad backend option value", GOOD.replace("- name: lmdb", "- name: lmdb\n    options: {sync: maybe}"),
     ["backends[0].options.sync", "'maybe'", "allowed: true or false"]),
    ("unknown backend option", GOOD.replace("- name: lmdb", "- name: lmdb\n    options: {colour: 1}"),
     ["backends[0].options.colour", "unknown option", "map_size"]),
    ("unknown backend", GOOD.replace("[local, shm]", "[local, postgres]"),
     ["backends[1].names[1]", "'postgres'", "allowed: local, shm"]),
    ("wrong type", GOOD + "server: {workers: two}\n", ["server.workers", "'two'", "allowed: a valid integer"]),
    ("out of range", GOOD + "repeat: 0\n", ["repeat", "got 0", "greater than or equal to 1"]),
    ("value not in a choice", GOOD.replace("rate: 50", "rate: 50, mode: half"),
     ["load.mode", "'half'", "'open' or 'closed'"]),
    ("fsync where it means nothing", GOOD.replace("- name: lmdb", "- name: shm\n    fsync: true"),
     ["backends[0].fsync", "got true", "allowed: false", "'shm'"]),
    ("eatmydata without fsync", GOOD.replace("- name: lmdb", "- name: lmdb\n    eatmydata: true"),
     ["backends[0].eatmydata", "allowed: false unless fsync"]),
    ("YAML syntax error", GOOD.replace("[local, shm]", "[local, shm"), ["line ", "not valid YAML"]),
    ("duplicate key", GOOD + "name: again\n", ["line 6", "'name' appears twice"]),
    ("missing required key", "name: t\nbackends: [{name: lmdb}]\n", ["load", "required key is missing"]),
    ("closed loop without concurrency", GOOD.replace("rate: 50", "rate: 50, mode: closed"),
     ["load", "mode closed needs 'concurrency'"]),
    ("both rate and rates", GOOD.replace("rate: 50", "rate: 50, rates: [10, 20]"), ["load", "either 'rate' or 'rates'"]),
    ("CPU not on this machine", GOOD + "cpu: {server: [0, 999]}\n", ["cpu.server", "999", "CPUs of this machine"]),
    ("mix with an unknown flow", GOOD.replace("rate: 50", "rate: 50, mix: {invite: 1, dance: 2}"),
     ["load.mix", "'dance'", "invite, register, options"]),
    ("not a mapping", "- just\n- a list\n", ["expected a mapping"]),
]


@pytest.mark.parametrize("what,text,fragments", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_each_mistake_is_one_clear_line_and_exit_2(tmp_path, capsys, what, text, fragments):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert cli.main(["run", str(path), "--dry-run"]) == 2
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert len(lines) == 1, out.err
    assert str(path) in lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (what, lines[0])
    assert out.out == ""


def test_missing_file_and_bad_only(tmp_path, capsys):
    assert cli.main(["run", str(tmp_path / "none.yaml"), "--dry-run"]) == 2
    assert "no such scenario file" in capsys.readouterr().err
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    assert cli.main(["run", str(path), "--dry-run", "--only", "colour=red"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--only 'colour=red'" in err and "backend" in err
    assert cli.main(["run", str(path), "--dry-run", "--only", "workers=lots"]) == 2
    assert "allowed: a number" in capsys.readouterr().err
    assert cli.main(["run", str(path), "--dry-run", "--only", "backend=redis"]) == 2
    assert "matches none of the runs" in capsys.readouterr().err


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_durability_variants_only_where_meaningful(tmp_path):
    scenario = load_scenario(write(tmp_path, """\
        name: t
        server: {workers: [1, 2]}
        backends:
          - names: [local, lmdb, memcached]
            fsync: [true, false]
            eatmydata: [false, true]
        load: {rates: [10, 20], duration: 1}
        repeat: 2
        """))
    specs = expand(scenario)
    cells = {(s.backend, s.fsync, s.eatmydata) for s in specs}
    assert cells == {("local", False, False), ("memcached", False, False), ("lmdb", True, False),
                     ("lmdb", True, True), ("lmdb", False, False)}
    assert len(specs) == 5 * 2 * 2 * 2
    assert [s.repeat for s in specs[:20]] == [1] * 20 and specs[20].repeat == 2  # repeats outermost
    ids = [s.run_id for s in specs]
    assert len(set(ids)) == len(ids) and not any("." in i for i in ids)
    assert specs[0].run_id == "001-local-w1-10cps-r1"
    picked = filter_specs(specs, parse_only("backend=lmdb,workers=2,fsync=true,repeat=1"))
    assert {(s.eatmydata, s.rate) for s in picked} == {(False, 10), (True, 10), (False, 20), (True, 20)}
    picked = filter_specs(specs, parse_only("backend=local,backend=memcached,rate=20"))
    assert {s.backend for s in picked} == {"local", "memcached"} and all(s.rate == 20 for s in picked)


def test_scenario_models_are_frozen(tmp_path):
    scenario = load_scenario(write(tmp_path, GOOD))
    with pytest.raises(Exception):
        scenario.repeat = 3
    spec = expand(scenario)[0]
    with pytest.raises(Exception):
        spec.workers = 9


def test_dry_run_lists_the_matrix(tmp_path, capsys):
    assert cli.main(["run", str(write(tmp_path, GOOD)), "--dry-run", "--only", "backend=shm"]) == 0
    out = capsys.readouterr().out
    assert "1 runs" in out and "003-shm-w2-50cps-r1" in out and "lmdb" not in out


@pytest.mark.parametrize("name", ["invite_storm", "register_storm", "fsync_matrix", "ci_smoke"])
def test_shipped_scenarios_validate(name):
    scenario = load_scenario(SCENARIOS / f"{name}.yaml")
    assert scenario.name == name and expand(scenario)


def test_shipped_scenarios_cover_what_the_issue_asks():
    storm = expand(load_scenario(SCENARIOS / "invite_storm.yaml"))
    assert {s.store for s in storm} == set(BACKENDS)
    assert {s.workers for s in storm} == {1, 2}
    durable = {s.store for s in storm if s.fsync}
    assert durable == {"lmdb", "files", "sqlite", "redis"}
    assert all(s.storage == "disk" for s in storm if s.store in durable)
    assert sum(1 for s in storm if s.eatmydata) >= 1
    assert sum(map(estimate_seconds, storm)) < 15 * 60

    smoke = expand(load_scenario(SCENARIOS / "ci_smoke.yaml"))
    assert {s.store for s in smoke} >= {"local", "shm", "lmdb", "redis"}
    assert {s.workers for s in smoke} == {2} and {s.repeat for s in smoke} == {1, 2, 3}
    assert sum(map(estimate_seconds, smoke)) < 3 * 60

    fsync = expand(load_scenario(SCENARIOS / "fsync_matrix.yaml"))
    assert {s.store for s in fsync} == {"lmdb", "files", "sqlite", "redis"}
    assert all(s.storage == "disk" for s in fsync)
    for store in ("lmdb", "files", "sqlite", "redis"):
        assert {(s.fsync, s.eatmydata) for s in fsync if s.store == store} == {(True, False), (False, False),
                                                                                (True, True)}
    registrar = load_scenario(SCENARIOS / "register_storm.yaml")
    assert registrar.load.mix.get("register", 0) > 0


def test_invalid_input_is_the_exception_type(tmp_path):
    with pytest.raises(InvalidInput):
        load_scenario(write(tmp_path, GOOD + "repeat: -1\n"))
