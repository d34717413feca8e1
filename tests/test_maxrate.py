"""The highest sustainable rate: the search logic on a known pass/fail line, and a real search on the
in-process broker with synthetic stages whose capacity is exact."""
from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest

from testbed.orchestration import maxrate
from testbed.config import RunConfig
from testbed.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fake(capacity: float):
    """A probe that passes below ``capacity`` and records what it was asked."""
    probes: list[dict] = []

    def probe(rate: float) -> bool:
        ok = rate <= capacity
        probes.append({"rate": rate, "passed": ok, "reason": "ok" if ok else "too slow"})
        return ok
    return probe, probes


@pytest.mark.parametrize("capacity", [3.3, 123.0, 777.0])
def test_bracket_then_bisect_converges_within_tolerance(capacity):
    probe, probes = fake(capacity)
    s = maxrate.Search(min_rate=1, max_rate=1000, max_probes=30, tolerance=0.02)
    out = maxrate._search(probe, s, probes, "")
    assert out.bracketed and out.rate <= capacity
    assert out.rate >= capacity / 1.02 - 1e-9
    assert len(probes) < 30
    rates = [p["rate"] for p in probes]
    # bracketing doubles from the minimum before it bisects
    assert rates[:3] == [1, 2, 4]


def test_says_when_it_cannot_bracket():
    probe, probes = fake(0.5)
    out = maxrate._search(probe, maxrate.Search(min_rate=1, max_rate=100), probes, "")
    assert out.rate is None and not out.bracketed and "even --min-rate 1" in out.message
    probe, probes = fake(1e9)
    out = maxrate._search(probe, maxrate.Search(min_rate=10, max_rate=100, max_probes=12), probes, "")
    assert out.rate == 100 and not out.bracketed and "--max-rate 100" in out.message and "at least" in out.message
    probe, probes = fake(1e9)
    out = maxrate._search(probe, maxrate.Search(min_rate=1, max_rate=1e6, max_probes=4), probes, "")
    assert not out.bracketed and len(probes) == 4 and "--max-probes 4" in out.message


def test_probe_budget_stops_bisection_and_says_so():
    probe, probes = fake(500)
    out = maxrate._search(probe, maxrate.Search(min_rate=100, max_rate=1000, max_probes=5, tolerance=0.001),
                          probes, "")
    assert out.bracketed and len(probes) == 5 and "stopped by --max-probes 5" in out.message


def test_verdict():
    base = {"complete": True, "stable": True, "e2e_p99_ms": 10.0, "backlog_growth": 0.0}
    assert maxrate.verdict(base, 50)[0]
    assert not maxrate.verdict({**base, "e2e_p99_ms": 60.0}, 50)[0]
    assert "not stable" in maxrate.verdict({**base, "stable": False, "backlog_growth": 9.0}, 50)[1]
    assert "incomplete" in maxrate.verdict({**base, "complete": False}, 50)[1]


@pytest.mark.parametrize("kw, word", [({"min_rate": 0}, "--min-rate"), ({"max_rate": 0.5}, "--max-rate"),
                                      ({"max_probes": 1}, "--max-probes"), ({"slo_p99_ms": -1}, "--slo-p99-ms"),
                                      ({"tolerance": 2}, "--rate-tolerance")])
def test_bad_search_bounds(kw, word):
    with pytest.raises(ConfigError, match=word):
        maxrate.Search(**kw).check()


def test_cli_bad_bounds_one_line_exit_2(tmp_path):
    p = subprocess.run([sys.executable, "-m", "testbed.run", "--find-max-rate", "--min-rate", "50",
                        "--max-rate", "10", "--out", str(tmp_path / "x")], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 2 and "--max-rate 10" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "x").exists()


def test_search_finds_the_known_capacity_on_the_inproc_broker(tmp_path):
    """Stage B sleeps exactly 5 ms per message: 200 msg/s. One message per frame, constant arrivals and
    an instant stage A: below 200 frames/s latency stays near 5 ms; above it the queue grows without
    bound (5% over: ~200 ms after 4 s). The bound (100 ms) sits far from both, so a scheduler hiccup on
    a busy machine cannot fail a rate below capacity, and the answer lands within 10% of 200."""
    capacity = 200.0
    cfg = RunConfig(broker="inproc", rate=1, arrival="constant", fanout="1", producer_rate=float("inf"),
                    consumer_rate=capacity, service_dist="fixed", service_mode="sleep", message_bytes=1024,
                    duration=4.0, warmup=1.0, drain=0.5, no_trace=True)
    out = str(tmp_path / "search")
    s = maxrate.Search(slo_p99_ms=100, min_rate=100, max_rate=400, max_probes=10, tolerance=0.04)
    res = maxrate.find(cfg, s, out)
    assert res.bracketed, res.message
    assert 0.9 * capacity <= res.rate <= 1.1 * capacity, [(p["rate"], p["reason"]) for p in res.probes]
    with open(os.path.join(out, "maxrate.csv"), newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(res.probes) <= 10
    assert float(rows[0]["rate"]) == 100 and rows[0]["passed"] == "true"
    assert any(r["passed"] == "false" for r in rows)
    for r in rows:
        assert os.path.exists(os.path.join(r["run_dir"], "summary.csv"))


def test_limited_by_is_shown_for_every_probe_and_for_the_answer(tmp_path, monkeypatch):
    """Each probe's limited_by (from its summary) goes to maxrate.csv and the table, and the answer
    carries the one of the rate found: the harness's ceiling is never read as the broker's."""
    from testbed.orchestration import campaign
    from testbed.orchestration.execute import RunResult

    def run(self, cfg, run_id=None, progress=None, hooks=()):
        ok = cfg.rate <= 40
        summary = {"complete": True, "stable": ok, "e2e_p99_ms": 1.0, "backlog_growth": 0.0 if ok else 5.0,
                   "throughput_out": cfg.rate, "lost": 0, "limited_by": "harness" if cfg.rate > 30 else "none"}
        return RunResult(run_id, cfg.out, summary, True)
    monkeypatch.setattr(campaign.Campaign, "run", run)
    cfg = RunConfig(broker="inproc", rate=1, fanout="1")
    out = str(tmp_path / "s")
    res = maxrate.find(cfg, maxrate.Search(min_rate=10, max_rate=100, max_probes=8, tolerance=0.1), out)
    assert res.bracketed and 36 <= res.rate <= 40 and res.limited_by == "harness"
    with open(os.path.join(out, "maxrate.csv"), newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["limited_by"] for r in rows[:3]] == ["none", "none", "harness"]
    from rich.console import Console
    console = Console(width=200, record=True)
    console.print(maxrate.table(res, cfg, 50))
    text = console.export_text()
    assert "limited by" in text and "harness" in text
