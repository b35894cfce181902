"""results.write / results.load round trip on real files (hgrm from a real HdrHistogram)."""
from __future__ import annotations

import csv
import io
import json
import os

import pytest

from harness import results
from harness.errors import InvalidInput
from harness.schema import RUN_COLUMNS, TIMESERIES_COLUMNS


def make_hgrm(path, values_us):
    from hdrh.histogram import HdrHistogram

    hist = HdrHistogram(1, 60_000_000, 3)
    for v in values_us:
        hist.record_value(v)
    buf = io.BytesIO()
    hist.output_percentile_distribution(buf, 1000.0)  # microseconds recorded, ms printed
    path.write_bytes(buf.getvalue())
    return path


def make_row(run_id, backend, **extra):
    row = {c: None for c in RUN_COLUMNS}
    row.update(run_id=run_id, repeat=1, backend=backend, fsync=False, eatmydata=False, workers=2,
               generator="builtin", mode="open", rate_target=100.0, throughput_cps=99.5,
               invite_p99_ms=3.25, lost_dialogs=0, generator_saturated=False, status="ok", reason="")
    row.update(extra)
    return row


def write_folder(tmp_path, scenario="smoke", when=1_700_000_000):
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    inv = make_hgrm(src / "a.hgrm", range(100, 5000, 7))
    rows = [make_row("r001-local-w2", "local", lost_dialogs=7, extra_col="x"),
            make_row("r002-shm-w2", "shm", status="failed", reason="server died, exit 1",
                     generator_saturated=None, throughput_cps=None)]
    ts = [{"run_id": "r001-local-w2", "t_s": 1, "calls_completed": 100, "calls_failed": 0,
           "p50_ms": 1.0, "p99_ms": 2.0}]
    folder = results.new_run_folder(tmp_path / "results", scenario, when)
    results.write(folder, rows, ts, {"scenario": {"name": scenario}},
                  hdr={"r001-local-w2": {"invite": inv, "bye": src / "absent.hgrm"}})
    return folder


def test_write_lays_out_the_schema(tmp_path):
    folder = write_folder(tmp_path)
    assert folder.parent.name == "smoke" and folder.name == "20231114-221320"
    with open(folder / "runs.csv") as fh:
        header = next(csv.reader(fh))
    assert header[: len(RUN_COLUMNS)] == list(RUN_COLUMNS)
    assert header[len(RUN_COLUMNS):] == ["extra_col"]
    import pandas as pd

    parquet = pd.read_parquet(folder / "runs.parquet")
    assert list(parquet.columns) == header and parquet["lost_dialogs"].tolist() == [7, 0]
    assert (folder / "hdr" / "r001-local-w2.invite.hgrm").is_file()
    assert not (folder / "hdr" / "r001-local-w2.bye.hgrm").exists()
    assert json.loads((folder / "manifest.json").read_text())["scenario"]["name"] == "smoke"
    link = tmp_path / "results" / "latest"
    assert link.is_symlink() and os.readlink(link) == "smoke/20231114-221320"


def test_load_accepts_every_kind_of_path(tmp_path):
    folder = write_folder(tmp_path)
    newer = write_folder(tmp_path, when=1_700_000_000)  # same second: gets a -2 suffix
    assert newer.name == "20231114-221320-2"
    for path in (folder, folder.parent, tmp_path / "results", tmp_path / "results" / "latest"):
        res = results.load(path)
        expected = folder if path == folder else newer
        assert res.path == expected.resolve()
    res = results.load(folder)
    runs = res.runs
    assert list(runs["run_id"]) == ["r001-local-w2", "r002-shm-w2"]
    assert runs.loc[0, "lost_dialogs"] == 7
    assert runs["fsync"].tolist() == [False, False]
    assert runs["generator_saturated"].isna().tolist() == [False, True]
    assert runs.loc[0, "extra_col"] == "x"
    assert str(runs["fsync"].dtype) == "boolean"
    assert runs["throughput_cps"].isna().tolist() == [False, True]
    assert runs.loc[1, "reason"] == "server died, exit 1"
    assert list(res.timeseries.columns) == list(TIMESERIES_COLUMNS)
    hist = res.histograms
    assert list(hist.columns) == ["run_id", "txn", "percentile", "value_ms", "total_count"]
    inv = hist[(hist.run_id == "r001-local-w2") & (hist.txn == "invite")]
    assert inv.percentile.max() == pytest.approx(100.0)
    assert inv.value_ms.max() == pytest.approx(4.995, rel=0.01)
    assert inv.value_ms.is_monotonic_increasing


def test_load_rejects_what_is_not_a_results_folder(tmp_path):
    with pytest.raises(InvalidInput, match="no such results folder"):
        results.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInput, match="not a results folder"):
        results.load(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "runs.csv").write_text("a,b\n1,2\n")
    with pytest.raises(InvalidInput, match="missing column 'run_id'"):
        results.load(bad)
