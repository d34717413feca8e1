"""What a replicated broker's availability looked like in a run: the summary's cluster columns.

    broker_nodes     the broker's nodes (--broker-nodes; 1 = a single node)
    replication      what replication means for this broker here (the cluster recipe says it: "replication
                     factor 3, min.insync.replicas 2", "quorum queue, 3 members", "stream R3",
                     "asynchronous: 1 primary + 2 replicas ..."); "none" on a single node
    leader_changes   changes of the node leading the run's topic, sampled once a second from the
                     orchestrator (timeseries.csv ``broker_leader``; a second without an answer is skipped,
                     so A, none, B counts one change); empty on a single node
    unavailable_s    the longest stretch of the load (from its start to its end) in which no publish was
                     acknowledged: stage A's publish records, each acknowledged publish at the moment its
                     call returned (its frame's end + the publish calls of the frame up to it). A client
                     whose calls return before the broker acknowledges (a producer that queues) notes
                     instead when the acknowledgements arrived, in 10 ms bins (stage A's done record
                     ``ack_bins``, from the adapter's ``take_ack_bins``): those are used where present. Includes ordinary gaps between arrivals (a Poisson schedule at 50
                     frames/s has gaps of 0.1-0.2 s). Empty when nothing acknowledges a publish (fire
                     and forget: every publish record says sent)
"""
from __future__ import annotations

import math

import numpy as np


def ack_times(d) -> np.ndarray:
    """Sorted moments (monotonic ns) at which stage A's publishes that the broker acknowledged returned."""
    from testbed.harness.records import ACKED, frame_of
    pub, f = d.publishes, d.frames
    if pub is None or not len(pub) or not len(f):
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(pub["seq"], kind="stable")
    seq = pub["seq"][order].astype(np.int64)
    uniq, first = np.unique(seq, return_index=True)
    status = np.maximum.reduceat(pub["status"][order], first)      # a seq recorded twice: the worse
    calls = np.add.reduceat(pub["publish_call"][order].astype(np.int64), first)
    fi = frame_of(f, uniq, getattr(d.cfg, "streams", 1))
    ok = fi >= 0
    uniq, status, calls, fi = uniq[ok], status[ok], calls[ok], fi[ok]
    if not len(uniq):
        return np.zeros(0, dtype=np.int64)
    by = np.lexsort((uniq, fi))                                     # each frame's messages in publish order
    fi, status, calls = fi[by], status[by], calls[by]
    total = np.cumsum(calls)
    starts = np.flatnonzero(np.r_[True, fi[1:] != fi[:-1]])
    before = np.repeat(total[starts] - calls[starts], np.diff(np.r_[starts, len(fi)]))
    returned = f["end"][fi].astype(np.int64) + (total - before)
    return np.sort(returned[status == ACKED])


#: the width of stage A's ``ack_bins`` (an adapter's ``take_ack_bins``)
ACK_BIN_NS = 10_000_000


def unavailable_s(d, ack_bins=None) -> float:
    """The longest stretch of the load without an acknowledged publish (seconds); NaN without a load or
    where nothing acknowledges a publish."""
    from testbed.harness.records import ACKED, SENT
    if not d.t0:
        return math.nan
    start, end = int(d.t0), int(d.t0 + d.cfg.duration * 1e9)
    if ack_bins is not None:
        t = np.asarray(ack_bins, dtype=np.int64) * ACK_BIN_NS
    else:
        st = d.publishes["status"] if d.publishes is not None else np.zeros(0, np.uint8)
        if (st == SENT).any() and not (st == ACKED).any():
            return math.nan
        t = ack_times(d)
    t = t[(t > start) & (t < end)]
    edges = np.concatenate(([start], t, [end])).astype(np.int64)
    return round(float(np.diff(edges).max()) / 1e9, 3)


def leader_changes(samples: dict) -> int:
    """Changes of the sampled leader (``broker_leader`` per second), seconds without an answer skipped."""
    seen = [v.get("broker_leader") for _, v in sorted(samples.items()) if isinstance(v, dict)]
    known = [x for x in seen if x is not None and x != ""]
    return int(sum(1 for a, b in zip(known, known[1:]) if a != b))


def _recipe_says(cfg, nodes: int) -> str:
    """What the broker's cluster recipe says replication is (an external cluster: the options it set)."""
    try:
        import brokers
        recipe = brokers.spec(cfg.broker).impl(cfg.broker_impl).cluster
        return recipe.replication(nodes, cfg) if recipe is not None else ""
    except Exception:  # noqa: BLE001 - no recipe to ask: leave it empty
        return ""


def cluster_columns(d, extra: dict | None, done: dict | None = None) -> dict:
    """broker_nodes, replication, leader_changes, unavailable_s (see the module docstring); ``extra`` is
    the endpoint's launch facts, ``done`` stage A's done record."""
    nodes = int(getattr(d.cfg, "broker_nodes", 1) or 1)
    extra = extra or {}
    return {
        "broker_nodes": nodes,
        "replication": extra.get("replication") or ("none" if nodes == 1 else _recipe_says(d.cfg, nodes)),
        "leader_changes": leader_changes(d.broker_samples) if nodes > 1 else math.nan,
        "unavailable_s": unavailable_s(d, (done or {}).get("ack_bins")),
    }
