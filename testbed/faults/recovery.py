"""What each fault of a run cost: recovery time, backlog peak, throughput dip, redeliveries.

Per fault (one row of faults.csv), from its actual window (``FaultHook.windows``: start = its first
action, end = the broker answers again, the replica was started again, the toxics were removed):

    recovery_s      from the fault's end until the out rate is back to the offered rate and the window
                    p99 back within 1.5x of its pre-fault level: the first 1 s window, sliding in
                    100 ms steps from the end, in which stage B finished at least 90% of the offered
                    messages/s (Poisson arrivals: a window of exactly the mean is a coin toss) and the
                    p99 of e2e over the messages it finished is at most 1.5 x the p99 of the messages
                    finished between the warm-up (or the start) and the run's first fault (the clean
                    level: a later fault's own pre-fault seconds may still carry an earlier one). When that
                    never happened before the data ended, ``recovered`` is false and ``recovery_s`` is a
                    lower bound, the time searched after the fault's end (no window starting in it
                    recovered), with ``recovery_lower_bound`` true: "did not recover in the 14 s left".
                    Empty (never measured): a fault that never ended (a kill-broker without a restart),
                    or no clean level to compare with (no message finished before the first fault). A
                    fault that never ended by itself but a later restart of its target ended (kill-broker,
                    then restart-broker) takes that restart's recovery.
    backlog_peak    most messages published and not finished at any instant from the fault's start to
                    its recovery (or the end of the data): read at the start and at every publish
    throughput_dip  1 - (lowest 1 s out rate in that span) / offered messages/s; 1.0 = nothing came out
    redelivered     finishes of an already finished message (duplicates) in that span: the broker's
                    redeliveries of messages whose ack the fault lost
    node            a cluster fault's node (``--broker-nodes``): for a leader fault, the node that led the
                    run's topic when it fired (asked of the broker); empty for the other kinds
    lost_acked      messages acknowledged and never delivered that were published after the previous
                    fault's end (or the start) and before this one's end: what this fault lost

Summary columns (summary.csv) take the worst fault: ``recovered`` only when every fault's row says
so (a fault that nothing ended did not recover), ``recovery_s`` the longest (a lower bound, with
``recovery_lower_bound`` true, when any fault's is one; empty when any fault's was never measured),
``fault_backlog_peak`` and ``throughput_dip`` the largest,
``redelivered`` the sum; ``faults`` lists the schedule. timeseries.csv gets a ``fault`` column naming
the faults active in each second.
"""
from __future__ import annotations

import math

import numpy as np

from testbed.load import closed_window

STEP_NS = 100_000_000
WINDOW_NS = 1_000_000_000
RATE_FRACTION = 0.9
P99_FACTOR = 1.5

FAULT_COLUMNS = ["fault", "kind", "target", "node", "start_s", "end_s", "recovered", "recovery_s", "recovery_lower_bound",
                 "backlog_peak", "throughput_dip", "redelivered", "lost_acked", "pre_p99_ms", "error"]


def _p99(values) -> float:
    return float(np.percentile(values, 99)) if len(values) else math.nan


def fault_figures(d, ts: list[dict], windows: list[dict], acc) -> tuple[list[dict], dict]:
    """(faults.csv rows, summary columns); marks ``ts`` rows with the active faults."""
    cfg = d.cfg
    m = d.messages
    t0 = d.t0
    offered = cfg.offered_message_rate  # messages/s, all streams (closed loop: what came out before the fault)
    order = np.argsort(m["end"], kind="stable") if len(m) else np.zeros(0, dtype=np.int64)
    ends = m["end"][order].astype(np.int64) if len(m) else np.zeros(0, dtype=np.int64)
    e2e = (m["end"].astype(np.int64) - m["intended"].astype(np.int64))[order] if len(m) else ends
    dup = np.ones(len(m), dtype=bool)
    dup[acc.first] = False
    dup_ends = np.sort(m["end"][dup].astype(np.int64)) if len(m) else ends
    pub_t = _published_times(d, acc)
    first_ends = np.sort(m["end"][acc.first].astype(np.int64)) if len(m) else ends
    data_end = max(d.end_ns, int(ends[-1]) if len(ends) else 0)
    warm = t0 + int(cfg.warmup * 1e9)
    rows = []
    first = t0 + int(min((w["start_s"] for w in windows), default=0) * 1e9)
    pre_from = warm if warm < first else t0
    pre_p99 = _p99(e2e[(ends >= pre_from) & (ends < first)])  # before any fault: the clean level
    if closed_window(cfg.arrival) and first > pre_from:  # no set rate: the clean level's out rate
        offered = float(((first_ends >= pre_from) & (first_ends < first)).sum()) / ((first - pre_from) / 1e9)
    prev_end = t0
    for w in windows:
        start = t0 + int(w["start_s"] * 1e9)
        end = t0 + int(w["end_s"] * 1e9) if w["end_s"] is not None else None
        rec_end = None
        recovery_s, bound = math.nan, False
        if end is not None and not math.isnan(pre_p99):
            t = end
            while t + WINDOW_NS <= data_end:
                lo, hi = np.searchsorted(ends, [t, t + WINDOW_NS])
                if hi - lo >= RATE_FRACTION * offered and _p99(e2e[lo:hi]) <= P99_FACTOR * pre_p99:
                    rec_end = t
                    break
                t += STEP_NS
            if rec_end is not None:
                recovery_s = round((rec_end - end) / 1e9, 3)
            else:  # no window starting before t recovered: the recovery takes at least that long
                recovery_s, bound = math.floor((t - end) / 1e6) / 1e3, True
        span_end = rec_end + WINDOW_NS if rec_end is not None else data_end
        # the backlog only grows at a publish: reading it at the span's start and at each publish in the span
        # gives its exact peak (a 100 ms grid can keep missing a light load's few messages in flight)
        at = np.concatenate(([start], pub_t[np.searchsorted(pub_t, start):np.searchsorted(pub_t, span_end)]))
        backlog = np.searchsorted(pub_t, at, side="right") - np.searchsorted(first_ends, at, side="right")
        lows = []
        for t in range(start, max(start + 1, span_end - WINDOW_NS + 1), STEP_NS):
            lo, hi = np.searchsorted(ends, [t, t + WINDOW_NS])
            lows.append(hi - lo)
        dip = 1.0 - min(lows) / offered if lows and offered > 0 else math.nan
        redelivered = int(np.searchsorted(dup_ends, span_end) - np.searchsorted(dup_ends, start))
        lost_acked = _lost_acked_between(d, acc, prev_end, end if end is not None else data_end)
        prev_end = max(prev_end, end if end is not None else start)
        rows.append({
            "fault": w["fault"], "kind": w["kind"], "target": w["target"], "node": w.get("node", ""),
            "start_s": w["start_s"],
            "end_s": w["end_s"] if w["end_s"] is not None else "", "recovered": rec_end is not None,
            "recovery_s": recovery_s, "recovery_lower_bound": bound,
            "backlog_peak": int(max(0, backlog.max())) if len(backlog) else 0,
            "throughput_dip": round(max(0.0, dip), 4) if dip == dip else math.nan,
            "redelivered": redelivered, "lost_acked": lost_acked,
            "pre_p99_ms": round(pre_p99 / 1e6, 3) if pre_p99 == pre_p99 else math.nan, "error": w["error"],
        })
    for i, r in enumerate(rows):  # a kill ended by a later restart of its target recovers with that restart
        if r["end_s"] == "":
            later = next((x for x in rows[i + 1:] if x["target"] == r["target"] and x["kind"].startswith("restart")
                          and x["end_s"] != ""), None)
            if later is not None:
                r.update(recovered=later["recovered"], recovery_s=later["recovery_s"],
                         recovery_lower_bound=later["recovery_lower_bound"])
    _mark(ts, windows)
    rec = [r["recovery_s"] for r in rows]
    summary = {
        "faults": "; ".join(cfg.faults),
        "recovered": bool(rows) and all(r["recovered"] for r in rows),
        "recovery_s": max(rec) if rec and not any(math.isnan(x) for x in rec) else math.nan,
        "recovery_lower_bound": bool(rec) and not any(math.isnan(x) for x in rec)
                                and any(r["recovery_lower_bound"] for r in rows),
        "fault_backlog_peak": max((r["backlog_peak"] for r in rows), default=0),
        "throughput_dip": max((r["throughput_dip"] for r in rows if r["throughput_dip"] == r["throughput_dip"]),
                              default=math.nan),
        "redelivered": sum(r["redelivered"] for r in rows),
    }
    return rows, summary


def _published_times(d, acc) -> np.ndarray:
    """Sorted publish times (ns) of the messages stage A did publish (not those it failed to)."""
    from testbed.analysis.metrics import publish_status, sent_seqs
    from testbed.harness.records import NOT_SENT, PUBLISH_FAILED, frame_of
    f = d.frames
    if not len(f):
        return np.zeros(0, dtype=np.int64)
    seqs = np.flatnonzero(sent_seqs(f, d.cfg.streams))  # camera streams: seqs interleave (testbed/load/streams.py)
    t = f["published"][frame_of(f, seqs, d.cfg.streams)].astype(np.int64)
    status = publish_status(d.publishes, max(acc.seq_top, acc.sent))[seqs]
    keep = (status != PUBLISH_FAILED) & (status != NOT_SENT)
    return np.sort(t[keep])


def _lost_acked_between(d, acc, start: int, end: int) -> int:
    """Lost messages the broker acknowledged whose frame was published in [start, end)."""
    from testbed.analysis.metrics import publish_status
    from testbed.harness.records import ACKED, frame_of
    f = d.frames
    if not len(acc.lost_seqs) or not len(f):
        return 0
    status = publish_status(d.publishes, max(acc.seq_top, acc.sent))
    lost = acc.lost_seqs[status[acc.lost_seqs] == ACKED]
    if not len(lost):
        return 0
    at = frame_of(f, lost, d.cfg.streams)
    published = f["published"][at[at >= 0]].astype(np.int64)
    return int(((published >= start) & (published < end)).sum())


def _mark(ts: list[dict], windows: list[dict]) -> None:
    for row in ts:
        k = row["t_s"]
        active = [w["fault"] for w in windows
                  if w["start_s"] < k + 1 and (w["end_s"] is None or w["end_s"] > k)]
        row["fault"] = "; ".join(active)
