"""Recovery figures of a fault (testbed/faults/recovery.py) on made-up records with a known answer."""
import math

import numpy as np

from testbed.analysis.metrics import RunData, account, summarize
from testbed.config import RunConfig
from testbed.faults.recovery import fault_figures
from testbed.harness import records

S = 1_000_000_000


def made_up(outage=(3.0, 4.0), backlog_drain_s=0.5, lost_acked=(), unsent=()):
    """10 frames/s of one message for 10 s; each finishes 10 ms after it was due, except those due in
    the outage, which all finish in the ``backlog_drain_s`` after it with their waiting on them."""
    cfg = RunConfig(broker="redis", arrival="constant", rate=10.0, fanout="1", duration=10.0, warmup=1.0)
    t0 = 10 * S
    n = 100
    intended = t0 + (np.arange(n) * S // 10)
    frames = np.zeros(n, records.FRAME_DTYPE)
    frames["frame_id"] = frames["first_seq"] = np.arange(n)
    frames["n"] = 1
    frames["intended"] = frames["start"] = frames["end"] = frames["published"] = intended
    end = intended + 10_000_000
    a, b = t0 + int(outage[0] * S), t0 + int(outage[1] * S)
    held = (intended >= a) & (intended < b)
    end[held] = b + np.linspace(0, backlog_drain_s * S, held.sum()).astype(np.int64)
    keep = np.ones(n, dtype=bool)
    keep[list(lost_acked) + list(unsent)] = False
    m = np.zeros(keep.sum(), records.message_dtype((), ()))
    m["seq"] = np.arange(n)[keep]
    m["frame_id"] = m["seq"]
    m["count"] = 1
    m["intended"] = m["published"] = intended[keep]
    m["received"] = m["start"] = m["free"] = end[keep] - 1000
    m["end"] = end[keep]
    pub = np.zeros(n, records.PUBLISH_DTYPE)
    pub["seq"] = np.arange(n)
    pub["status"] = records.ACKED
    pub["status"][list(unsent)] = records.NOT_SENT
    d = RunData(cfg, t0, frames, m, publishes=pub, end_ns=t0 + 13 * S)
    return d


def test_recovery_backlog_and_dip_of_an_outage():
    d = made_up()
    summary, ts, acc = summarize(d)
    rows, s = fault_figures(d, ts, [{"fault": "bounce-broker@3s:1s", "kind": "bounce-broker", "target": "broker",
                                     "start_s": 3.0, "end_s": 4.0, "error": ""}], acc)
    (r,) = rows
    # the held messages finish with up to 1 s of waiting until 4.5 s; the first clean 1 s window that
    # also has 90% of the offered rate starts once those are out of it
    assert r["recovered"] and 0.3 <= r["recovery_s"] <= 0.6, r
    assert r["backlog_peak"] == 10  # the outage's 10 messages
    assert r["throughput_dip"] == 1.0  # a whole second with nothing out
    assert s["recovery_s"] == r["recovery_s"] and s["fault_backlog_peak"] == 10
    assert not r["recovery_lower_bound"] and not s["recovery_lower_bound"] and s["recovered"]
    assert r["lost_acked"] == 0 and summary["lost_acked"] == 0
    assert [t["fault"] for t in ts][2:5] == ["", "bounce-broker@3s:1s", ""]  # timeseries marks its second


def test_backlog_peak_counts_a_message_in_flight_between_grid_steps():
    """No outage: each message is in flight for 10 ms of every 100 ms. A fault starting 50 ms after a
    publish would read 0 on a 100 ms grid at every step; the peak is read at each publish: 1."""
    d = made_up(outage=(20.0, 20.0))
    summary, ts, acc = summarize(d)
    (r,), s = fault_figures(d, ts, [dict(BOUNCE, fault="bounce-broker@3.05s:1s", start_s=3.05, end_s=4.05)], acc)
    assert r["backlog_peak"] == 1 and s["fault_backlog_peak"] == 1
    assert r["throughput_dip"] == 0.0 and r["recovered"]


def test_lost_acked_and_unacked_split_and_never_recovered():
    d = made_up(outage=(8.0, 9.5), backlog_drain_s=3.0, lost_acked=(40, 41), unsent=(50,))
    summary, ts, acc = summarize(d)
    assert summary["lost"] == 3 and summary["lost_acked"] == 2 and summary["lost_unacked"] == 1
    assert summary["publish_errors"] == 1
    rows, s = fault_figures(d, ts, [{"fault": "pause-broker@8s:1.5s", "kind": "pause-broker", "target": "broker",
                                     "start_s": 8.0, "end_s": 9.5, "error": ""}], acc)
    (r,) = rows
    assert r["lost_acked"] == 2  # published before the fault's end, after the start of the run
    # no 1 s window from the end (9.5 s) to the data's end (13 s) recovered: the recovery takes at least
    # the 2.6 s searched (window starts 9.5 .. 12.0 s), a lower bound, said so
    assert not r["recovered"] and r["recovery_lower_bound"] and r["recovery_s"] == 2.6, r
    assert not s["recovered"] and s["recovery_lower_bound"] and s["recovery_s"] == 2.6
    # the unsent message is not in the backlog
    assert account(d.frames, d.messages).lost == 3


KILL = {"fault": "kill-broker@5s", "kind": "kill-broker", "target": "broker", "start_s": 5.0, "end_s": None,
        "error": ""}
BOUNCE = {"fault": "bounce-broker@3s:1s", "kind": "bounce-broker", "target": "broker", "start_s": 3.0,
          "end_s": 4.0, "error": ""}


def test_a_fault_that_never_ended_is_not_recovered_in_the_summary_either():
    """A kill-broker with no restart: faults.csv says not recovered, never measured; so does summary.csv."""
    d = made_up()
    summary, ts, acc = summarize(d)
    rows, s = fault_figures(d, ts, [KILL], acc)
    (r,) = rows
    assert not r["recovered"] and math.isnan(r["recovery_s"]) and not r["recovery_lower_bound"]
    assert not s["recovered"] and math.isnan(s["recovery_s"]) and not s["recovery_lower_bound"]
    rows, s = fault_figures(d, ts, [BOUNCE, KILL], acc)
    assert [r["recovered"] for r in rows] == [True, False]
    assert s["recovered"] is False, "one fault never ended: the run did not recover"


def test_a_kill_ended_by_a_restart_recovers_with_it():
    d = made_up()
    summary, ts, acc = summarize(d)
    kill = dict(KILL, fault="kill-broker@3s", start_s=3.0)
    restart = {"fault": "restart-broker@3.5s", "kind": "restart-broker", "target": "broker", "start_s": 3.5,
               "end_s": 4.0, "error": ""}
    rows, s = fault_figures(d, ts, [kill, restart], acc)
    assert rows[0]["end_s"] == "" and rows[1]["recovered"]
    assert [r["recovered"] for r in rows] == [True, True] and rows[0]["recovery_s"] == rows[1]["recovery_s"]
    assert s["recovered"] is True


def test_no_clean_level_is_never_measured_not_a_bound():
    """A fault before any message finished has no pre-fault p99 to come back to: empty, not a bound."""
    d = made_up()
    summary, ts, acc = summarize(d)
    early = dict(BOUNCE, fault="bounce-broker@0s:1s", start_s=0.0, end_s=1.0)
    (r,), s = fault_figures(d, ts, [early], acc)
    assert not r["recovered"] and math.isnan(r["recovery_s"]) and not r["recovery_lower_bound"]


def test_the_comparison_counts_a_bound_as_not_recovered(tmp_path):
    import pandas as pd

    from testbed.analysis import timeline
    from testbed.analysis.report import write_csv
    from testbed.faults.recovery import FAULT_COLUMNS
    run = tmp_path / "run"
    run.mkdir()
    write_csv(str(run / "faults.csv"), [
        dict(fault="bounce-broker@3s:1s", kind="bounce-broker", target="broker", start_s=3, end_s=4, recovered=True,
             recovery_s=0.5, recovery_lower_bound=False, backlog_peak=10, throughput_dip=1.0, redelivered=0,
             lost_acked=0, pre_p99_ms=10.0, error=""),
        dict(fault="bounce-broker@8s:1s", kind="bounce-broker", target="broker", start_s=8, end_s=9, recovered=False,
             recovery_s=14.0, recovery_lower_bound=True, backlog_peak=10, throughput_dip=1.0, redelivered=0,
             lost_acked=0, pre_p99_ms=10.0, error="")], FAULT_COLUMNS)
    complete = pd.DataFrame([{"run_dir": str(run), "broker": "redis", "delivery": "at-least-once",
                              "lost_unacked": 0, "duplicated": 0}])
    (row,) = timeline.fault_table(complete)
    assert row["faults"] == 2 and row["recovered"] == 1
    assert row["recovery_s_max"] == 0.5, "a lower bound is not a measured recovery"
