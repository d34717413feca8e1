"""From raw records to the figures of a run: latency histograms, accounting, rate matching.

Latencies (per message, ns, from harness timestamps only):
    e2e = end - intended          publish_delay = published - intended
    transit = received - published    wait = start - received    service = end - start
    frame latency = end of the frame's last message - intended
Percentiles come from HdrHistogram (values in ns, 3 significant digits, so microsecond resolution and
better), for messages whose frame was due after the warm-up. Accounting counts every message:
    sent (published by stage A), received (distinct messages finished by stage B), lost (sent, never
    finished by the end of the drain), duplicated (finished more than once), reordered (a consumer got
    it after a message of the same camera stream published later than it: order is per stream, each
    stream's seqs rise in its publish order, testbed/load/streams.py). Lost messages split by what stage A knew
    (``delivery``): lost_acked (the broker acknowledged it) + lost_unacked (handed over with no
    acknowledgement to wait for, its publish failed, was not attempted, or has no record) = lost; publish_errors counts messages whose publish failed or was not
    attempted (the harness never publishes a message twice).
Rate matching: per second, offered frames, produced and consumed messages, and the backlog (messages
published and not yet finished; for stage A, frames due and not yet processed). ``backlog_growth`` is
the least-squares slope of the backlog over the measured seconds; the run is ``stable`` when neither
backlog grows faster than 5% of its offered rate (at least 1/s).
Queueing split from the broker's hop (``free``: when the message's replica was ready for it):
    queue = max(0, free - published)      hop = received - max(published, free)      queue + hop = transit
Costs per message (``costs``): the broker client's calls and the harness's bookkeeping, from which
stage B's measured capacity, ``rho_measured`` and ``limited_by`` follow.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from hdrh.histogram import HdrHistogram

from testbed.config import RunConfig
from testbed.harness.records import FRAME_DTYPE, frame_of
from testbed.load import closed_window, offered_schedule, total_rate

PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9}
HIGHEST_NS = 3_600 * 10**9
STABLE_FRACTION = 0.05


def histogram(values_ns) -> HdrHistogram:
    h = HdrHistogram(1, HIGHEST_NS, 3)
    record = h.record_value
    for v in np.clip(np.asarray(values_ns, dtype=np.int64), 0, HIGHEST_NS).tolist():
        record(v)
    return h


def percentiles_ms(values_ns) -> dict:
    """p50, p90, p99, p999 and max in ms (microsecond resolution); NaN when there are no values."""
    if len(values_ns) == 0:
        return {k: math.nan for k in (*PERCENTILES, "max")}
    h = histogram(values_ns)
    out = {k: round(h.get_value_at_percentile(p) / 1e6, 6) for k, p in PERCENTILES.items()}
    out["max"] = round(h.get_max_value() / 1e6, 6)
    return out


def slope(y) -> float:
    """Least-squares slope of y against its index (per second); 0 for fewer than two points."""
    y = np.asarray(y, dtype=float)
    if len(y) < 2:
        return 0.0
    x = np.arange(len(y), dtype=float)
    return float(np.polyfit(x, y, 1)[0])


@dataclass
class RunData:
    """Everything the orchestrator collected."""

    cfg: RunConfig
    t0: int
    frames: np.ndarray
    messages: np.ndarray
    a_steps: tuple = ()
    b_steps: tuple = ()
    broker_samples: dict = field(default_factory=dict)  # second -> {column: value}
    failed_reasons: list = field(default_factory=list)
    corrupt: int = 0
    end_ns: int = 0  # when collection stopped
    publishes: np.ndarray | None = None  # stage A's publish records (seq, publish_call, status)
    publish_errors: dict = field(default_factory=dict)  # reason -> messages stage A could not publish


@dataclass
class Accounting:
    sent: int
    received: int
    lost: int
    duplicated: int
    reordered: int
    first: np.ndarray  # index into messages of each distinct message's first completion
    lost_seqs: np.ndarray
    seq_top: int = 0   # every seq sent is below this (= sent with one stream)


def sent_seqs(frames: np.ndarray, streams: int = 1) -> np.ndarray:
    """A bool array by seq: True for every seq stage A sent (stream s's k-th message has seq k * streams + s,
    k below the messages its frame records count)."""
    if not len(frames):
        return np.zeros(0, dtype=bool)
    if streams == 1:
        return np.ones(int(frames["n"].sum()), dtype=bool)
    per = np.bincount(frames["stream"].astype(np.int64), weights=frames["n"].astype(np.int64),
                      minlength=streams).astype(np.int64)[:streams]
    top = int(max(((k - 1) * streams + s + 1) for s, k in enumerate(per.tolist()) if k) if per.any() else 0)
    out = np.zeros(top, dtype=bool)
    for s, k in enumerate(per.tolist()):
        out[s:k * streams:streams] = True
    return out


def account(frames: np.ndarray, messages: np.ndarray, streams: int = 1) -> Accounting:
    expected = sent_seqs(frames, streams)
    sent = int(expected.sum())
    seqs = messages["seq"].astype(np.int64)
    uniq, first = np.unique(seqs, return_index=True)
    valid = uniq < len(expected)
    valid[valid] = expected[uniq[valid]]
    received = int(valid.sum())
    duplicated = int(len(seqs) - len(uniq))
    reordered = 0
    # per consumer and stream, in the order the consumer finished them: a seq below one it had already
    # finished came after a message of its stream published later
    key = messages["replica"].astype(np.int64) * streams + (seqs % streams if streams > 1 else 0)
    for k in np.unique(key):
        s = seqs[key == k]
        if len(s) > 1:
            run_max = np.maximum.accumulate(s)
            reordered += int((s[1:] < run_max[:-1]).sum())
    got = np.zeros(len(expected), dtype=bool)
    got[uniq[valid]] = True
    lost_seqs = np.flatnonzero(expected & ~got)
    return Accounting(sent, received, sent - received, duplicated, reordered, first[valid], lost_seqs,
                      len(expected))


def frames_rate(d: "RunData", warm: int, stop: int, window_s: float) -> float:
    """Frames/s offered by all streams: the configured total (open loop), or what stage A released over
    the measured window (closed loop, whose rate is what the system lets through)."""
    cfg = d.cfg
    if not closed_window(cfg.arrival):
        return total_rate(cfg)
    f = d.frames
    released = int(((f["intended"] >= warm) & (f["intended"] < stop)).sum()) if len(f) else 0
    return released / window_s if window_s > 0 else 0.0


def frames_in_flight(frames: np.ndarray, messages: np.ndarray, streams: int = 1) -> np.ndarray:
    """Per stream, the most frames in flight at any frame's release, from the records: frames released
    (``intended``) and not yet finished (the last of its messages' first service end; a frame without
    messages when stage A published it; never, when a message is missing). A closed-loop run keeps this
    at most K."""
    out = np.zeros(streams, dtype=np.int64)
    if not len(frames):
        return out
    key = lambda st, fid: st.astype(np.int64) << 48 | fid.astype(np.int64)  # noqa: E731 - a frame
    fkey = key(frames["stream"], frames["frame_id"])
    finish = np.where(frames["n"] > 0, np.iinfo(np.int64).max, frames["published"].astype(np.int64))
    if len(messages):
        seqs, first = np.unique(messages["seq"], return_index=True)
        m = messages[first]
        mkey = key(m["stream"], m["frame_id"])
        order = np.argsort(mkey, kind="stable")
        uk, start_idx, counts = np.unique(mkey[order], return_index=True, return_counts=True)
        last = np.maximum.reduceat(m["end"][order].astype(np.int64), start_idx)
        at = np.searchsorted(uk, fkey)
        at_c = np.clip(at, 0, max(0, len(uk) - 1))
        hit = (at < len(uk)) & (uk[at_c] == fkey) & (counts[at_c] >= frames["n"]) & (frames["n"] > 0)
        finish[hit] = last[at_c[hit]]
    for s in range(streams):
        sel = frames["stream"] == s
        if not sel.any():
            continue
        rel = np.sort(frames["intended"][sel].astype(np.int64))
        fin = np.sort(finish[sel])
        live = np.searchsorted(rel, rel, side="right") - np.searchsorted(fin, rel, side="right")
        out[s] = int(live.max())
    return out


def summarize(d: RunData) -> tuple[dict, list[dict], Accounting]:
    """(summary row, timeseries rows, accounting)."""
    cfg = d.cfg
    acc = account(d.frames, d.messages, cfg.streams)
    m = d.messages[acc.first]
    warm = d.t0 + int(cfg.warmup * 1e9)
    stop = d.t0 + int(cfg.duration * 1e9)
    window_s = cfg.duration - cfg.warmup
    measured = m[m["intended"] >= warm]
    rate = frames_rate(d, warm, stop, window_s)  # frames/s, all streams
    closed = bool(closed_window(cfg.arrival))

    e2e = measured["end"] - measured["intended"]
    published = measured["published"].astype(np.int64)
    ready = np.maximum(published, measured["free"].astype(np.int64))
    lat = {
        "e2e": e2e,
        "publish_delay": measured["published"] - measured["intended"],
        "transit": measured["received"] - measured["published"],
        "queue": ready - published,
        "hop": measured["received"].astype(np.int64) - ready,
        "wait": measured["start"] - measured["received"],
        "service": measured["end"] - measured["start"],
    }
    pct = {k: percentiles_ms(v) for k, v in lat.items()}
    frame_lat = _frame_latencies(d.frames, m, warm)

    f = d.frames
    produced_in_window = int(f["n"][(f["published"] >= warm) & (f["published"] < stop)].sum()) if len(f) else 0
    consumed_in_window = int(((m["end"] >= warm) & (m["end"] < stop)).sum())
    fanout_mean = cfg.fanout_dist.mean
    offered_msgs = rate * fanout_mean
    rho = 0.0 if math.isinf(cfg.consumer_rate) else offered_msgs / cfg.consumer_capacity
    rho_a = 0.0 if math.isinf(cfg.producer_rate) else rate / cfg.streams / cfg.producer_rate  # each stream's

    ts = timeseries(d, m)
    in_window = [r for r in ts if r["t_s"] >= cfg.warmup and r["t_s"] + 1 <= cfg.duration + 1e-9]
    growth = slope([r["backlog"] for r in in_window])
    a_growth = slope([r["stage_a_backlog"] for r in in_window])
    stable = (growth <= max(1.0, STABLE_FRACTION * offered_msgs)
              and a_growth <= max(1.0, STABLE_FRACTION * rate))

    s = {
        "streams": cfg.streams,
        "sent": acc.sent, "received": acc.received, "lost": acc.lost, **delivery(d, acc),
        "duplicated": acc.duplicated,
        "reordered": acc.reordered, "failed": int(f["failed"].sum()) if len(f) else 0, "corrupt": d.corrupt,
        "throughput_in": round(produced_in_window / window_s, 3),
        "throughput_out": round(consumed_in_window / window_s, 3),
        "rho": round(rho, 4), "rho_a": round(rho_a, 4),
        "backlog_max": max((r["backlog"] for r in ts), default=0),
        "backlog_growth": round(growth, 3),
        "stage_a_backlog_max": max((r["stage_a_backlog"] for r in ts), default=0),
        "stage_a_backlog_growth": round(a_growth, 3),
        "stable": bool(stable),
        "measured_messages": int(len(measured)),
    }
    for k in ("p50", "p90", "p99", "p999", "max"):
        s[f"e2e_{k}_ms"] = pct["e2e"][k]
    s["frame_p50_ms"] = frame_lat["p50"]
    s["frame_p99_ms"] = frame_lat["p99"]
    s["publish_delay_p50_ms"] = pct["publish_delay"]["p50"]
    s["publish_delay_p99_ms"] = pct["publish_delay"]["p99"]
    for k in ("transit", "wait", "service"):
        s[f"{k}_p50_ms"] = pct[k]["p50"]
        s[f"{k}_p99_ms"] = pct[k]["p99"]
    for k in ("queue", "hop"):
        s[f"{k}_p50_ms"] = pct[k]["p50"]
        s[f"{k}_p99_ms"] = pct[k]["p99"]
    c = costs(d.frames[d.frames["intended"] >= warm] if len(d.frames) else d.frames, measured)
    for k in COST_NAMES:
        p = percentiles_ms(c[k])
        s[f"{k}_p50_us"] = round(p["p50"] * 1e3, 3)
        s[f"{k}_p99_us"] = round(p["p99"] * 1e3, 3)
    s.update(capacity(cfg, c, offered_msgs, growth, a_growth, rate))
    if closed:  # no schedule: what was offered is what stage A released
        s["offered_rate"] = round(rate, 3)
    for prefix, names in (("a", d.a_steps), ("b", d.b_steps)):
        for step in names:
            col = f"{prefix}_{step}"
            s[f"{col}_ms"] = round(float(np.median(measured[col])) / 1e6, 6) if len(measured) else math.nan
    if d.a_steps or d.b_steps:
        s.update(_step_extras(d, measured, warm, s["e2e_p50_ms"]))
    return s, ts, acc


def publish_status(publishes: np.ndarray | None, n: int) -> np.ndarray:
    """Per seq 0..n-1, its publish status (records.ACKED, PUBLISH_FAILED, NOT_SENT; 0 = no record);
    a seq recorded twice keeps the worse one (an asynchronous failure reported after the call)."""
    status = np.zeros(n, dtype=np.uint8)
    if publishes is not None and len(publishes):
        seq = publishes["seq"].astype(np.int64)
        ok = seq < n
        np.maximum.at(status, seq[ok], publishes["status"][ok])
    return status


def delivery(d: RunData, acc: Accounting) -> dict:
    """lost_acked, lost_unacked, publish_errors (see the module docstring)."""
    from testbed.harness.records import ACKED, NOT_SENT, PUBLISH_FAILED
    status = publish_status(d.publishes, max(acc.seq_top, acc.sent))
    lost_status = status[acc.lost_seqs] if len(acc.lost_seqs) else status[:0]
    lost_acked = int((lost_status == ACKED).sum())
    return {"delivery": d.cfg.delivery, "ack": d.cfg.ack, "lost_acked": lost_acked, "lost_unacked": int(acc.lost - lost_acked),
            "publish_errors": int(((status == PUBLISH_FAILED) | (status == NOT_SENT)).sum())}


COST_NAMES = ("publish_call", "recv_call", "ack_call", "a_harness", "b_harness")
#: A stage whose service alone takes this share of its time at the offered load is limited by it.
SERVICE_BOUND = 0.95


def costs(frames: np.ndarray, m: np.ndarray) -> dict:
    """Per-message costs in ns (one value per message), and the stages' service per message/frame.

    publish_call: each message's publish call. recv_call: the receive call that returned the message,
    divided by the messages it returned, counted only for calls that found a message already waiting
    (some message of the call published before the call began): a call that blocked was idle, not
    spending. ack_call, b_harness: the batch's, divided by the batch size. a_harness: the frame's,
    divided by its message count (frames without messages are left out). Also ``b_service`` (the
    batch's service over its size) and, per frame, ``a_service``, ``a_publish`` and ``a_bookkeeping``.
    """
    out = {}
    pc = m["publish_call"].astype(np.int64)
    out["publish_call"] = pc[pc > 0]
    batch = np.maximum(m["batch"].astype(np.int64), 1)
    out["ack_call"] = m["ack_call"].astype(np.int64) / batch
    out["b_harness"] = m["b_harness"].astype(np.int64) / batch
    out["b_service"] = (m["end"].astype(np.int64) - m["start"].astype(np.int64)) / batch
    out["recv_call"] = np.zeros(0)
    if len(m):
        # one receive call = the messages of one replica stamped with the same ``received``
        order = np.lexsort((m["received"], m["replica"]))
        rep, rec = m["replica"][order], m["received"][order].astype(np.int64)
        first = np.flatnonzero(np.r_[True, (rep[1:] != rep[:-1]) | (rec[1:] != rec[:-1])])
        k = np.diff(np.r_[first, len(order)])
        call = m["recv_call"][order][first].astype(np.int64)
        earliest = np.minimum.reduceat(m["published"][order].astype(np.int64), first)
        waiting = earliest < rec[first] - call
        out["recv_call"] = np.repeat(call[waiting] / k[waiting], k[waiting])
    n = frames["n"].astype(np.int64)
    has = n > 0
    out["a_harness"] = np.repeat(frames["a_harness"][has].astype(np.int64) / n[has], n[has])
    # per frame (every frame, with messages or not): service, publish calls (its count x the mean
    # call), bookkeeping
    out["a_service"] = frames["end"].astype(np.int64) - frames["start"].astype(np.int64)
    out["a_publish"] = n * _mean(out["publish_call"])
    out["a_bookkeeping"] = frames["a_harness"].astype(np.int64)
    return out


def _mean(v) -> float:
    return float(np.mean(v)) if len(v) else 0.0


def capacity(cfg: RunConfig, c: dict, offered_msgs: float, growth: float, a_growth: float,
             rate: float | None = None) -> dict:
    """capacity_measured, rho_measured and limited_by.

    capacity_measured: the messages/s stage B's replicas together could serve given what one message
        costs them: its share of its batch's service, its receive call (calls that found it waiting;
        0 when none did), its share of the ack call and of the bookkeeping (means, so a rate).
    rho_measured: offered messages/s over capacity_measured (nominal ``rho`` is over the configured
        service alone). Stage A's counterpart (frames/s x (service + publish calls + bookkeeping) per
        frame) decides ``limited_by`` with it.
    limited_by: what bounds the run, first match:
        none      stable (neither backlog grows) and both stages below capacity (measured rho < 1);
        a stage is saturated when its backlog grows or its measured rho is at least 1 (stage A first;
        of two saturated stages, the one with the larger measured rho);
        stage_a / stage_b  the saturated stage's service alone takes at least 95% of its time;
        broker    otherwise, when the broker client's calls (stage A: publish; stage B: receive and
                  ack) cost the stage more than the harness's bookkeeping, or when stage B's backlog
                  grows while it still has room (measured rho < 1: the broker does not deliver);
        harness   otherwise: our bookkeeping takes the room the service leaves.
        Empty when no message was measured.
    ``rate``: frames/s of all streams (default the configured total); each stream's stage A carries its
    share.
    """
    per_msg = {k: _mean(c[k]) for k in ("b_service", "recv_call", "ack_call", "b_harness")}
    busy = sum(per_msg.values())
    cap = cfg.replicas * 1e9 / busy if busy > 0 else math.nan
    rho_m = offered_msgs / cap if cap > 0 else math.nan
    out = {"capacity_measured": round(cap, 3) if cap == cap else math.nan,
           "rho_measured": round(rho_m, 4) if rho_m == rho_m else math.nan, "limited_by": ""}
    if not len(c["b_service"]):
        return out
    rate = total_rate(cfg) if rate is None else rate
    a_share = {k: rate / cfg.streams * _mean(c[k]) / 1e9 for k in ("a_service", "a_publish", "a_bookkeeping")}
    rho_a_m = sum(a_share.values())
    a_sat = a_growth > max(1.0, STABLE_FRACTION * rate) or rho_a_m >= 1
    b_sat = growth > max(1.0, STABLE_FRACTION * offered_msgs) or rho_m >= 1
    if a_sat and b_sat:
        a_sat = rho_a_m >= rho_m
        b_sat = not a_sat
    if a_sat:
        service, calls, harness = a_share["a_service"], a_share["a_publish"], a_share["a_bookkeeping"]
        kind = "stage_a" if service >= SERVICE_BOUND else ("broker" if calls > harness else "harness")
    elif b_sat:
        load = offered_msgs / cfg.replicas / 1e9
        service = load * per_msg["b_service"]
        calls = load * (per_msg["recv_call"] + per_msg["ack_call"])
        harness = load * per_msg["b_harness"]
        if service >= SERVICE_BOUND:
            kind = "stage_b"
        elif rho_m < 1 or calls > harness:
            kind = "broker"
        else:
            kind = "harness"
    else:
        kind = "none"
    out["limited_by"] = kind
    return out


def _step_extras(d: RunData, measured: np.ndarray, warm: int, e2e_p50_ms: float) -> dict:
    """Columns of pipelines that time their steps (vision).

    a_publish_ms: p50 over measured frames that emitted messages of (published - end): the time stage A
        spends handing all of a frame's messages to the broker client (measured by the harness).
    non_dnn_share: the fraction of the e2e p50 that is not DNN inference,
        1 - p50(a_infer + b_infer) / e2e_p50, over measured messages. A message's path holds one
        stage A inference (its frame's) and one stage B inference (its batch's); everything else on
        it (decode, resize, normalize, copies, NMS and crops, serialisation, publish, broker transit,
        queueing, batch wait) is non-DNN. Empty when no step is called ``infer``.
    """
    out = {}
    f = d.frames
    if d.a_steps:
        sel = f[(f["intended"] >= warm) & (f["n"] > 0)] if len(f) else f
        out["a_publish_ms"] = round(float(np.median(sel["published"] - sel["end"])) / 1e6, 6) if len(sel) else math.nan
    cols = [f"{p}_infer" for p, names in (("a", d.a_steps), ("b", d.b_steps)) if "infer" in names]
    share = math.nan
    if cols and len(measured) and e2e_p50_ms > 0:
        dnn = np.zeros(len(measured), dtype=np.int64)
        for c in cols:
            dnn += measured[c].astype(np.int64)
        share = round(1.0 - float(np.median(dnn)) / 1e6 / e2e_p50_ms, 4)
    out["non_dnn_share"] = share
    return out


def _frame_latencies(frames: np.ndarray, m: np.ndarray, warm: int) -> dict:
    """p50/p99 of frame latency: the frame's last message done - intended, for complete frames only (a
    frame is (stream, frame_id))."""
    if len(m) == 0:
        return {"p50": math.nan, "p99": math.nan}
    key = m["stream"].astype(np.int64) << 48 | m["frame_id"].astype(np.int64)
    order = np.argsort(key, kind="stable")
    fid = key[order]
    ends = m["end"][order]
    uniq, start_idx, counts = np.unique(fid, return_index=True, return_counts=True)
    last_end = np.maximum.reduceat(ends, start_idx)
    intended = m["intended"][order][start_idx]
    expected = m["count"][order][start_idx]
    complete = (counts == expected) & (intended >= warm)
    p = percentiles_ms(last_end[complete] - intended[complete])
    return {"p50": p["p50"], "p99": p["p99"]}


def _unsent_times(d: RunData) -> np.ndarray:
    """Frame publish times (ns) of the messages whose publish failed or was not attempted."""
    from testbed.harness.records import NOT_SENT, PUBLISH_FAILED
    f = d.frames
    if d.publishes is None or not len(d.publishes) or not len(f):
        return np.zeros(0, dtype=np.int64)
    bad = d.publishes["seq"][np.isin(d.publishes["status"], (PUBLISH_FAILED, NOT_SENT))].astype(np.int64)
    if not len(bad):
        return np.zeros(0, dtype=np.int64)
    at = frame_of(f, np.unique(bad), d.cfg.streams)
    return f["published"][at[at >= 0]].astype(np.int64)


def timeseries(d: RunData, m: np.ndarray) -> list[dict]:
    """One row per second since the start: rates, backlogs, window p99 and the broker's own figures."""
    cfg = d.cfg
    end = max(d.end_ns, d.t0 + int(cfg.duration * 1e9))
    n_sec = max(1, int(math.ceil((end - d.t0) / 1e9)))
    edges = d.t0 + np.arange(n_sec + 1, dtype=np.int64) * 1_000_000_000
    f = d.frames
    # offered frames: the schedule's (open loop), or when stage A released them (closed loop)
    offsets = f["intended"].astype(np.int64) if closed_window(cfg.arrival) else offered_schedule(cfg) + d.t0
    offered = np.histogram(offsets, bins=edges)[0]
    produced = np.histogram(f["published"], bins=edges, weights=f["n"])[0] if len(f) else np.zeros(n_sec)
    unsent = _unsent_times(d)  # fault runs: messages stage A could not publish are not in the backlog
    if len(unsent):
        produced = produced - np.histogram(unsent, bins=edges)[0]
    processed_frames = np.histogram(f["end"], bins=edges)[0] if len(f) else np.zeros(n_sec)
    consumed = np.histogram(m["end"], bins=edges)[0]
    cum_pub = np.cumsum(produced)
    cum_con = np.cumsum(consumed)
    cum_off = np.cumsum(offered)
    cum_a = np.cumsum(processed_frames)
    which = np.searchsorted(edges, m["end"], side="right") - 1
    e2e = m["end"] - m["intended"]
    rows = []
    for k in range(n_sec):
        sel = e2e[which == k]
        p99 = round(histogram(sel).get_value_at_percentile(99) / 1e6, 6) if len(sel) else math.nan
        row = {
            "t_s": k,
            "offered_frames": int(offered[k]),
            "produced": int(produced[k]),
            "consumed": int(consumed[k]),
            "backlog": int(cum_pub[k] - cum_con[k]),
            "stage_a_backlog": int(cum_off[k] - cum_a[k]),
            "e2e_p99_ms": p99,
        }
        row.update(d.broker_samples.get(k, {}))
        rows.append(row)
    return rows
