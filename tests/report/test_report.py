"""`harness report`: the files it writes, what the plots contain, and the derived tables."""
from __future__ import annotations

import base64
import re

import matplotlib
import pandas as pd
import pytest

from harness import results
from harness.report import plots, style, tables, verdicts
from harness.report.render import build_sections, write_report
from tests.report.conftest import run_harness

matplotlib.use("Agg")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
IMG_RE = re.compile(r"<img alt='[^']*' src='data:image/png;base64,([A-Za-z0-9+/=]+)'>")


def test_real_run_report_embeds_at_least_five_pngs(real_results, copy_of):
    folder = copy_of(real_results)
    proc = run_harness("report", str(folder))
    assert proc.returncode == 0, proc.stderr
    html = (folder / "report.html").read_text()
    images = IMG_RE.findall(html)
    assert len(images) >= 5
    for data in images:
        assert base64.b64decode(data).startswith(PNG_MAGIC)
    # self-contained; "http" is looked for outside the base64 data, where it can occur by chance
    text = IMG_RE.sub("", html)
    assert "src='plots/" not in text and "http" not in text
    md = (folder / "report.md").read_text()
    linked = re.findall(r"\]\((plots/[^)]+\.png)\)", md)
    assert len(linked) == len(images) and all((folder / p).is_file() for p in linked)
    # this tiny matrix has no durability variants: the plot is skipped with a note
    assert "Not plotted: no backend ran with more than one durability mode" in html
    assert "note: Cost of durability" in proc.stdout


def test_real_run_verdicts_come_from_the_data(real_results):
    runs = style.normalise_runs(results.load(real_results).runs)
    table = verdicts.verdicts(runs).set_index("question")
    lost = int(runs.loc[runs["backend"] == "local", "lost_dialogs"].sum())
    assert lost > 0, "the unshared control must lose dialogs across 2 workers"
    assert table.at["Unshared control `local`", "answer"].startswith(f"lost {lost} dialogs")
    lmdb = runs[runs["backend"] == "lmdb"]
    if lmdb["lost_dialogs"].sum():
        expected = "none: every shared backend lost dialogs"
    elif (lmdb["throughput_cps"] >= 0.95 * lmdb["rate_target"]).all():
        expected = "no ranking: every lossless backend kept up with the target rate"
    else:
        expected = "lmdb"
    assert table.at["Fastest backend that lost nothing", "answer"] == expected


def test_fabricated_report_has_all_six_plots_and_tables(fabricated, copy_of):
    folder = copy_of(fabricated)
    report = write_report(folder)
    assert sorted(p.name for p in report.plots) == sorted(
        ["throughput.png", "latency_invite.png", "latency_bye.png", "cpu.png", "durability.png",
         "timeseries.png"])
    assert report.notes == []
    html = report.html.read_text()
    for heading in ("Verdicts", "Correctness", "Generator health", "Environment",
                    "Runs excluded", "Synthetic CPU"):
        assert heading in html


def test_verdicts_on_synthetic_data(fabricated):
    runs = style.normalise_runs(results.load(fabricated).runs)
    table = verdicts.verdicts(runs).set_index("question")
    ok = runs[runs["ok"]]
    med = ok.groupby("variant")["throughput_cps"].median()
    lossless = [v for v in med.index if not v.startswith("local")]
    assert table.at["Fastest backend that lost nothing", "answer"] == med[lossless].idxmax()
    off, on = med["lmdb"], med["lmdb fsync"]
    assert table.at["Price of fsync for lmdb", "answer"].startswith(f"{100 * (on / off - 1):+.0f}% calls/s")
    assert "recovers" in table.at["eatmydata on lmdb", "answer"]
    assert table.at["Shared backends that lost dialogs", "answer"] == "none"


def test_cheapest_and_quickest_name_the_rivals_their_repeats_cannot_separate(fabricated):
    runs = style.normalise_runs(results.load(fabricated).runs)
    ok = runs[runs["ok"] & (runs["backend"] != "local")]
    for question, col in (("Cheapest lossless backend in CPU per call", "cpu_us_per_call"),
                          ("Lowest INVITE p99 among lossless backends", "invite_p99_ms")):
        by = ok.groupby("variant")[col]
        best = by.median().idxmin()
        overlap = sorted(v for v in by.median().index
                         if v != best and by.min()[v] <= by.max()[best])
        answer = verdicts.verdicts(runs).set_index("question").at[question, "answer"]
        assert answer.split(" (")[0] == best
        assert ("repeats overlap" in answer) == bool(overlap), (answer, overlap)
        assert all(v in answer for v in overlap)
    # one repeat of a rival made as cheap as the winner's worst: now they overlap
    best = ok.groupby("variant")["cpu_us_per_call"].median().idxmin()
    rival = next(v for v in ok["variant"].unique() if v != best)
    worst = ok.loc[ok["variant"] == best, "cpu_us_per_call"].max()
    edited = runs.copy()
    edited.loc[edited.index[(edited["variant"] == rival) & edited["ok"]][0], "cpu_us_per_call"] = worst
    answer = verdicts.verdicts(edited).set_index("question").at[
        "Cheapest lossless backend in CPU per call", "answer"]
    assert answer.startswith(f"{best} (repeats overlap with") and rival in answer


def test_failed_and_saturated_runs_are_listed_not_plotted(tmp_path):
    from tests.report import fabricate

    folder = fabricate.write_results(tmp_path / "r", failed="redis", saturated="shm")
    res = results.load(folder)
    runs = style.normalise_runs(res.runs)
    excluded = tables.excluded(runs)
    assert set(excluded["status"]) == {"failed", "generator saturated"}
    assert "server died during the run" in set(excluded["reason"])
    fig = plots.plot_throughput(runs)
    dots = sum(len(line.get_xdata()) for ax in fig.axes for line in ax.lines
               if line.get_marker() == "o")
    assert dots == int(runs["ok"].sum())


def _bar_colours(fig) -> dict[str, set]:
    """x tick label -> face colours of the bars drawn at that tick."""
    found: dict[str, set] = {}
    for ax in fig.axes:
        labels = {round(t, 3): lbl.get_text() for t, lbl in zip(ax.get_xticks(), ax.get_xticklabels())}
        for patch in ax.patches:
            x = round(patch.get_x() + patch.get_width() / 2, 3)
            if x in labels:
                found.setdefault(labels[x], set()).add(matplotlib.colors.to_hex(patch.get_facecolor()))
    return found


def test_a_backend_has_the_same_colour_in_every_plot(fabricated):
    res = results.load(fabricated)
    runs = style.normalise_runs(res.runs)
    for fig in (plots.plot_throughput(runs), plots.plot_cpu(runs)):
        colours = _bar_colours(fig)
        assert colours["lmdb fsync"] == {style.colour("lmdb")}
        assert colours["redis"] == {style.colour("redis")}
    latency = plots.plot_latency(runs, res.histograms)
    (fig_legend,) = latency.legends  # one legend below the panels, none inside them
    assert not any(ax.get_legend() for ax in latency.axes)
    legend = {t.get_text(): matplotlib.colors.to_hex(h.get_color())
              for t, h in zip(fig_legend.get_texts(), fig_legend.legend_handles)}
    assert legend["shm"] == style.colour("shm") and legend["lmdb fsync"] == style.colour("lmdb")
    assert style.colour("my-backend") == style.colour("my-backend")  # unknown names: stable too


def test_every_plot_has_title_axis_labels_with_units_and_legend(fabricated):
    for sec in build_sections(results.load(fabricated)):
        fig = sec.figure
        assert fig is not None, sec.name
        assert fig.get_suptitle() or fig.axes[0].get_title(), sec.name
        visible = [ax for ax in fig.axes if ax.get_visible() and ax.get_ylabel()]
        assert visible and all("(" in ax.get_ylabel() for ax in visible), sec.name  # unit
        xlabels = [ax.get_xlabel() for ax in fig.axes if ax.get_xlabel()]
        assert xlabels, sec.name
        assert fig.legends or any(ax.get_legend() for ax in fig.axes), sec.name


def test_latency_axis_is_in_nines(fabricated):
    res = results.load(fabricated)
    fig = plots.plot_latency(res.runs, res.histograms)
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels[:4] == ["0%", "90%", "99%", "99.9%"]
    assert fig.axes[0].get_xscale() == "log"


def test_report_of_a_missing_folder_exits_2(tmp_path):
    proc = run_harness("report", str(tmp_path / "absent"))
    assert proc.returncode == 2 and "absent" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_markdown_table_escapes_pipes():
    from harness.report.render import markdown_table

    text = markdown_table(pd.DataFrame({"a": ["x|y"], "b": [1.5]}))
    assert "x\\|y" in text and text.count("\n") == 3


@pytest.mark.parametrize("fsync,eat,mode", [(True, False, "fsync"), (True, True, "fsync+eatmydata"),
                                            ("false", None, "off"), ("True", "true", "fsync+eatmydata")])
def test_durability_labels(fsync, eat, mode):
    assert style.durability(fsync, eat) == mode
