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
    assert r["lost_acked"] == 0 and summary["lost_acked"] == 0
    assert [t["fault"] for t in ts][2:5] == ["", "bounce-broker@3s:1s", ""]  # timeseries marks its second


def test_lost_acked_and_unacked_split_and_never_recovered():
    d = made_up(outage=(8.0, 9.5), backlog_drain_s=3.0, lost_acked=(40, 41), unsent=(50,))
    summary, ts, acc = summarize(d)
    assert summary["lost"] == 3 and summary["lost_acked"] == 2 and summary["lost_unacked"] == 1
    assert summary["publish_errors"] == 1
    rows, s = fault_figures(d, ts, [{"fault": "pause-broker@8s:1.5s", "kind": "pause-broker", "target": "broker",
                                     "start_s": 8.0, "end_s": 9.5, "error": ""}], acc)
    (r,) = rows
    assert r["lost_acked"] == 2  # published before the fault's end, after the start of the run
    assert not r["recovered"] and math.isnan(r["recovery_s"]) and math.isnan(s["recovery_s"])
    assert not s["recovered"]
    # the unsent message is not in the backlog
    assert account(d.frames, d.messages).lost == 3
