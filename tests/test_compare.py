"""testbed.compare on a small generated results folder: real short runs (inproc and zeromq, two loads,
two repetitions) from a sweep, plus a vision run folder, a run from another machine and an incomplete run."""
from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from testbed.analysis import columns, compare
from testbed.analysis import report
from testbed.orchestration import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS_A = ("decode", "resize", "normalize", "infer")
STEPS_B = ("h2d", "infer")


def _edit_summary(run_dir: str, **changes) -> None:
    path = os.path.join(run_dir, "summary.csv")
    with open(path, newline="") as fh:
        row = next(csv.DictReader(fh))
    row.update({k: str(v) for k, v in changes.items()})
    report.write_csv(path, [row], list(row))


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    base = tmp_path_factory.mktemp("cmp")
    exp = base / "exp.yaml"
    exp.write_text(textwrap.dedent("""
        name: cmp
        repetitions: 2
        grid:
          broker: [inproc, zeromq]
          consumer_load: [0.5, 1.5]
        fixed:
          rate: 20
          fanout: 2
          producer_rate: 200
          message_bytes: 1024
          duration: 2
          warmup: 0.5
          drain: 0.5
        """))
    out = base / "res"
    assert sweep.main([str(exp), "--out", str(out), "--quiet"]) == 0
    runs = sorted(d for d in os.listdir(out) if not d.startswith("_") and os.path.isdir(out / d))
    assert len(runs) == 8
    # a third repetition of one group, from another machine: must be flagged, not silently mixed
    src = next(d for d in runs if d.startswith("inproc-rho0.5"))
    shutil.copytree(out / src, out / "other-machine-run")
    _edit_summary(str(out / "other-machine-run"), machine="othermachine", seed=99)
    # an incomplete run: left out with a warning
    shutil.copytree(out / src, out / "broken-run")
    _edit_summary(str(out / "broken-run"), complete="false", error="interrupted (Ctrl-C)")
    # vision runs (per-step columns), as stages/vision writes them: one with queueing and the broker's
    # hop apart, one from before the split (transit only, none of the cost columns)
    with open(out / src / "summary.csv", newline="") as fh:
        row = next(csv.DictReader(fh))
    for i, s in enumerate(STEPS_A):
        row[f"a_{s}_ms"] = str(1.0 + i)
    for i, s in enumerate(STEPS_B):
        row[f"b_{s}_ms"] = str(3.0 + i)
    new = dict(row, pipeline="vision", broker="inproc", broker_impl="queue.SimpleQueue", transit_p50_ms="9.5",
               queue_p50_ms="9.0", hop_p50_ms="0.5", queue_p99_ms="40.0", hop_p99_ms="1.25", wait_p50_ms="2.5",
               rho_measured="0.61", limited_by="none")
    old = {k: v for k, v in dict(row, pipeline="vision", broker="zeromq", broker_impl="pyzmq", transit_p50_ms="0.8",
                                 wait_p50_ms="2.5").items() if k not in compare.groups.COST_METRICS + ["limited_by"]}
    for name, r in (("new", new), ("old", old)):
        os.makedirs(base / "vision" / name)
        report.write_csv(str(base / "vision" / name / "summary.csv"), [r], list(r))
    return base


def _png_ok(path: str) -> None:
    import matplotlib.image as mpimg
    assert os.path.getsize(path) > 10_000, path
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300
    assert float(np.var(img[..., :3])) > 0.002, f"{path} looks blank"


def test_compare_table_csv_and_plots(results, tmp_path):
    out = str(tmp_path / "cmp")
    from rich.console import Console
    console = Console(record=True, width=220)
    res = compare.compare([str(results / "res"), str(results / "vision")], out, html_page=True, console=console)
    text = console.export_text()
    table = res["table"]
    # 2 brokers x 2 loads, plus the two vision groups
    assert len(table) == 6
    assert set(table["broker"]) == {"inproc", "zeromq"}
    synth = table[table["pipeline"] == "synthetic"]
    assert sorted(synth["runs"]) == [2, 2, 2, 3]
    assert sorted(set(synth["rho"].round(2))) == [0.5, 1.5]
    # the table names machine and implementation, and warns about the mixed group and the broken run
    assert "machine" in text and "broker impl" in text and "queue.SimpleQueue" in text
    assert any("mixes machines" in w and "othermachine" in w for w in res["warnings"])
    assert any("incomplete" in w and "broken-run" in w for w in res["warnings"])
    assert "warning" in text
    with open(res["csv"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6
    for col in ("broker", "broker_impl", "machine", "runs", "rho", "message_bytes", "e2e_p50_ms_median",
                "e2e_p50_ms_min", "e2e_p50_ms_max", "e2e_p99_ms_median", "throughput_out_median",
                "backlog_growth_median", "lost_max", "stable_runs", "limited_by"):
        assert col in rows[0], col
    assert set(compare.groups.COST_METRICS) <= set(columns.names())  # the names summary.csv writes
    for m in compare.groups.COST_METRICS:
        for stat in ("median", "min", "max"):
            assert f"{m}_{stat}" in rows[0], (m, stat)
    # the harness's figures: filled where the runs carry them, blank for the run that predates them
    vision = {r["broker"]: r for r in rows if r["pipeline"] == "vision"}
    assert vision["inproc"]["queue_p99_ms_median"] == "40.0" and vision["inproc"]["hop_p99_ms_median"] == "1.25"
    assert vision["inproc"]["rho_measured_median"] == "0.61" and vision["inproc"]["limited_by"] == "none"
    assert vision["zeromq"]["queue_p99_ms_median"] == "" and vision["zeromq"]["limited_by"] == ""
    head, cells = compare.cells(table)
    col = {h: i for i, (h, _) in enumerate(head)}
    for h in ("rho measured", "queue p99 ms", "hop p99 ms", "limited by"):
        assert h in col and h in text, h
    by_row = {(table.iloc[i]["broker"], table.iloc[i]["pipeline"]): row for i, row in enumerate(cells)}
    assert by_row[("inproc", "vision")][col["hop p99 ms"]][0] == "1.25"
    assert by_row[("inproc", "vision")][col["limited by"]][0] == "none"
    assert by_row[("zeromq", "vision")][col["queue p99 ms"]][0] == ""
    # the per-step table: queued for stage B and the broker hop apart, transit only for the older run
    steps = dict(compare.step_cells(table)["rows"])
    assert steps["queued for stage B"][0].startswith("9.00") and steps["broker hop"][0].startswith("0.500")
    assert steps["queued for stage B"][1] == "" and steps["broker transit (queue + hop)"][1].startswith("0.800")
    assert "queued for stage B" in text and "broker hop" in text
    mixed = [r for r in rows if r["mixed"] == "True"]
    assert len(mixed) == 1 and "othermachine" in mixed[0]["machine"]
    # medians are medians: the overloaded runs carry less than offered and grow a backlog
    over = synth[synth["rho"] > 1]
    assert (over["throughput_out_median"] < over["offered_msgs"]).all()
    assert (over["lost_median"] > 0).all() and (over["backlog_max_median"] > 0).all()
    names = {os.path.basename(p) for p in res["images"]}
    assert names == {"latency_cdf.png", "p99_vs_load.png", "throughput_vs_load.png", "backlog.png",
                     "breakdown.png"}
    for p in res["images"]:
        _png_ok(p)
    page = open(res["html"], encoding="utf-8").read()
    assert page.count("data:image/png;base64,") == 5 and "<table" in page and "http" not in page.replace(
        "http-equiv", "")
    # self-contained: no file, script or stylesheet from elsewhere; the tables are the same as the terminal's
    assert "<link" not in page and "<script" not in page and "src='" not in page
    assert page.count('src="data:image/png;base64,') == 5
    assert "queued for stage B" in page and "broker hop" in page and "hop p99 ms" in page
    assert "othermachine" in page and "warning:" in page


def test_atomic_write_leaves_the_old_file_on_error(tmp_path):
    path = tmp_path / "f.csv"
    path.write_text("old\n")
    with pytest.raises(RuntimeError):
        with report.atomic_write(str(path)) as fh:
            fh.write("half")
            raise RuntimeError("interrupted")
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["f.csv"]
    with report.atomic_write(str(path), binary=True) as fh:
        fh.write(b"new")
    assert path.read_bytes() == b"new" and os.listdir(tmp_path) == ["f.csv"]


def test_backlog_config_and_cli_errors(results, tmp_path):
    out = str(tmp_path / "b")
    res = compare.compare([str(results / "res")], out, backlog_config="rho=0.5")
    assert any(p.endswith("backlog.png") for p in res["images"])
    bad = str(tmp_path / "bad")
    p = subprocess.run([sys.executable, "-m", "testbed.compare", str(results / "res"), "--out", bad,
                        "--backlog-config", "rho=7"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "matches no configuration" in p.stderr and "Traceback" not in p.stderr
    assert not os.path.exists(bad)  # nothing written for a bad selection
    empty = tmp_path / "empty"
    empty.mkdir()
    p = subprocess.run([sys.executable, "-m", "testbed.compare", str(empty)], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2 and "no run folders" in p.stderr and p.stderr.count("\n") == 1


def test_vision_labels_leave_out_the_synthetic_stages_settings():
    """A vision run records rho from the synthetic stages' default rates: meaningless there, so a label
    of vision groups names the offered frames/s and not that rho; synthetic groups keep rho."""
    import pandas as pd
    rows = [dict(pipeline=p, offered_rate=r, rho=r * 4 / 250, consumer_rate=250.0, image_size="medium")
            for p in ("vision",) for r in (1.0, 5.0)]
    shown = compare.groups.shown_config(pd.DataFrame(rows))
    assert "offered_rate" in shown and "rho" not in shown
    synthetic = pd.DataFrame([dict(r, pipeline="synthetic") for r in rows])
    assert "rho" in compare.groups.shown_config(synthetic)
