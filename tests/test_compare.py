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

from testbed.analysis import compare
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
    # a vision run (per-step columns), as stages/vision writes them
    vis = base / "vision" / "run1"
    os.makedirs(vis)
    with open(out / src / "summary.csv", newline="") as fh:
        row = next(csv.DictReader(fh))
    row.update(pipeline="vision", broker="zeromq", broker_impl="pyzmq", transit_p50_ms="0.8",
               wait_p50_ms="2.5")
    for i, s in enumerate(STEPS_A):
        row[f"a_{s}_ms"] = str(1.0 + i)
    for i, s in enumerate(STEPS_B):
        row[f"b_{s}_ms"] = str(3.0 + i)
    report.write_csv(str(vis / "summary.csv"), [row], list(row))
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
    # 2 brokers x 2 loads, plus the vision group
    assert len(table) == 5
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
    assert len(rows) == 5
    for col in ("broker", "broker_impl", "machine", "runs", "rho", "message_bytes", "e2e_p50_ms_median",
                "e2e_p50_ms_min", "e2e_p50_ms_max", "e2e_p99_ms_median", "throughput_out_median",
                "backlog_growth_median", "lost_max", "stable_runs"):
        assert col in rows[0], col
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


def test_backlog_config_and_cli_errors(results, tmp_path):
    out = str(tmp_path / "b")
    res = compare.compare([str(results / "res")], out, backlog_config="rho=0.5")
    assert any(p.endswith("backlog.png") for p in res["images"])
    p = subprocess.run([sys.executable, "-m", "testbed.compare", str(results / "res"), "--out", out,
                        "--backlog-config", "rho=7"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "matches no configuration" in p.stderr and "Traceback" not in p.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    p = subprocess.run([sys.executable, "-m", "testbed.compare", str(empty)], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2 and "no run folders" in p.stderr and p.stderr.count("\n") == 1
