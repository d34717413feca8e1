"""The run's own data replayed: messages.csv read back, the run's schedule through the ideal system with
the service times its stages drew (nominal), and the same recursion fed each message's measured costs."""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field

import numpy as np

from testbed.analysis import queueing as q
from testbed.config import RunConfig
from testbed.errors import TestbedError
from testbed.load import schedule
from testbed.load.distributions import Fanout, rng_for, service_sampler

# -- the run's own data -----------------------------------------------------------------------------

INT_COLUMNS = ("seq", "frame_id", "index", "count", "replica", "batch", "intended_ns", "published_ns",
               "received_ns", "start_ns", "end_ns", "free_ns", "recv_call_ns", "ack_call_ns", "b_harness_ns",
               "publish_call_ns", "a_harness_ns")


def read_messages(path: str) -> dict:
    """messages.csv as arrays (ints; -1 where a cell is empty), rows in file order, plus ``status``."""
    with open(path, newline="", encoding="utf-8") as fh:
        rd = csv.reader(fh)
        head = next(rd)
        rows = list(rd)
    out = {}
    for j, col in enumerate(head):
        cells = [r[j] for r in rows]
        if col in INT_COLUMNS:
            out[col] = np.array([int(c) if c != "" else -1 for c in cells], dtype=np.int64)
        elif col == "status":
            out[col] = np.array(cells, dtype=object)
    return out


def _ok(msgs: dict) -> dict:
    keep = msgs["status"] == "ok"
    ok = {k: v[keep] for k, v in msgs.items()}
    order = np.argsort(ok["seq"], kind="stable")
    return {k: v[order] for k, v in ok.items()}


@dataclass
class Nominal:
    e2e: np.ndarray        # per seq (ns)
    frames: int
    messages: int
    draws_match: bool      # the run's measured service times follow the replayed draws
    other: dict = field(default_factory=dict)  # dispatch -> e2e per seq, for multi-replica cases
    streams: list = field(default_factory=list)  # stage B's draws, per replica


def nominal_replay(cfg: RunConfig, ok: dict | None, dispatch: str) -> Nominal:
    """The run's schedule through the ideal system, with the service times the stages drew from the seed.

    ``ok``: the run's finished messages (``read_messages``, sorted by seq), checked to be the same
    schedule; None replays the seed's schedule alone (no run)."""
    if ok is None:
        ok = {k: np.zeros(0, dtype=np.int64) for k in ("seq", "frame_id", "intended_ns", "count", "replica",
                                                        "start_ns", "end_ns")}
    offsets = schedule(cfg.arrival, cfg.rate, cfg.duration, cfg.seed)
    nf = len(offsets)
    fan = Fanout.parse(cfg.fanout).sampler(rng_for(cfg.seed, "fanout"))
    counts = np.array([fan() for _ in range(nf)], dtype=np.int64)
    draw_a = service_sampler(cfg.service_dist, cfg.producer_rate, rng_for(cfg.seed, "service-a"))
    a_service = np.array([draw_a() for _ in range(nf)], dtype=np.int64)
    n = int(counts.sum())
    seq, fid = ok["seq"], ok["frame_id"]
    if len(seq) and (seq.max() >= n or fid.max() >= nf or np.any(ok["intended_ns"] != offsets[fid])
                     or np.any(ok["count"] != counts[fid])):
        raise TestbedError("the run's messages do not follow the schedule and fan-out its seed gives: "
                           "the replay would not be the same run")
    c = cfg.replicas
    streams = []
    for r in range(c):
        draw = service_sampler(cfg.service_dist, cfg.consumer_rate, rng_for(cfg.seed, f"service-b-{r}"))
        streams.append(np.array([draw() for _ in range(n)], dtype=np.int64))
    intended = np.repeat(offsets, counts)

    def replay(how: str) -> np.ndarray:
        def stage_b(arr):
            if how == "shared" or c == 1:
                return q.shared(arr, q.PerServer(streams), c)
            if how == "round_robin":
                first = ok["replica"][0] - ok["seq"][0] % c if len(seq) else 0
                return q.dealt(arr, q.PerServer(streams), c, assign=(np.arange(n) + first) % c)
            who = np.arange(n) % c
            who[seq] = ok["replica"]
            return q.dealt(arr, q.PerServer(streams), c, assign=who)
        _, _, served = q.tandem(offsets, a_service, counts, stage_b)
        return served.departure - intended

    e2e = replay(dispatch)
    other = {how: replay(how) for how in ("shared", "round_robin") if c > 1}
    # the run's service times should be the draws, each plus at most a little overshoot
    match = True
    if len(seq):
        drift = []
        for r in range(c):
            mine = np.flatnonzero(ok["replica"] == r)
            mine = mine[np.argsort(ok["start_ns"][mine], kind="stable")]
            took = ok["end_ns"][mine] - ok["start_ns"][mine]
            drift.append(took - streams[r][:len(mine)])
        drift = np.concatenate(drift)
        match = bool(np.median(np.abs(drift)) < 1_000_000)
    return Nominal(e2e, nf, n, match, other, streams)


@dataclass
class Costs:
    """Where a run departs from its nominal system: per message, stage B's service overshoot (measured
    service - the draw) and its overhead when a message was waiting (hop + decode + ack and bookkeeping),
    and the utilisation those give (offered rate x mean occupation / replicas)."""

    over_p50_us: float = math.nan
    over_p99_us: float = math.nan
    overhead_p50_us: float = math.nan
    overhead_p99_us: float = math.nan
    rho_effective: float = math.nan


def measured_replay(cfg: RunConfig, ok: dict, dispatch: str, draws=None) -> tuple[np.ndarray, Costs]:
    """The same recursion fed each message's measured costs: (e2e per row of ``ok``, sorted by seq; Costs).

    Stage A: a frame's occupation is from when it could start (its intended time or the previous
    frame's last publish call returning) to its last publish call returning, every message keeping
    its offset from there. Stage B, per message: the broker crossing (received - published where the
    consumer was waiting, else the median of those), the receive call where the message was waiting,
    decode (start - received), service (end - start), then the ack call and the rest of the batch's
    bookkeeping (``recv_call``, ``ack_call``, ``b_harness``; without those fields, the timeline up to
    the replica's next ``free``). The replay re-derives every queue from these.
    """
    n = len(ok["seq"])
    if n == 0:
        return np.zeros(0, dtype=np.int64), Costs()
    if cfg.batch_max > 1:
        raise TestbedError("the measured-cost replay covers batch_max 1 only")
    intended, pub = ok["intended_ns"], ok["published_ns"]
    call = ok["publish_call_ns"].clip(0) if "publish_call_ns" in ok else np.zeros(n, dtype=np.int64)
    fid = ok["frame_id"]
    first = np.r_[0, np.flatnonzero(np.diff(fid)) + 1]
    last = np.r_[first[1:] - 1, n - 1]
    done = pub[last] + call[last]
    f_int = intended[first]
    f_start = np.maximum(f_int, np.r_[np.iinfo(np.int64).min, done[:-1]])
    done_r = q.fifo(f_int, (done - f_start).clip(0))
    frame_of = np.repeat(np.arange(len(first)), last - first + 1)
    pub_r = done_r[frame_of] - (done[frame_of] - pub)

    received, start, end, replica = ok["received_ns"], ok["start_ns"], ok["end_ns"], ok["replica"]
    free = ok["free_ns"] if "free_ns" in ok else None
    fields = all(k in ok for k in ("recv_call_ns", "ack_call_ns", "b_harness_ns"))
    post = np.zeros(n, dtype=np.int64)
    free_at = np.zeros(n, dtype=np.int64)
    for r in np.unique(replica):
        mine = np.flatnonzero(replica == r)
        mine = mine[np.argsort(start[mine], kind="stable")]
        f = free[mine] if free is not None else np.r_[received[mine[0]], end[mine[:-1]]]
        free_at[mine] = f
        post[mine] = np.r_[f[1:], end[mine[-1]]] - end[mine]
    pre = start - received
    queued = free_at > pub
    if fields:
        # the cost fields themselves: a waiting message costs its receive call; after the service, the
        # ack call and the rest of the batch's bookkeeping (what of it was not before the service)
        recv = np.where(queued, ok["recv_call_ns"], 0).clip(0)
        post = (ok["ack_call_ns"] + (ok["b_harness_ns"] - pre).clip(0)).clip(0)
    else:
        recv = np.where(queued, received - free_at, 0).clip(0)
        post = post.clip(0)
    # crossing the broker: measured where the consumer was waiting for the message; for one that was
    # waiting for the consumer, the median crossing of the others
    crossing = received - pub
    idle = ~queued
    typical = int(np.median(crossing[idle])) if idle.any() else 0
    crossing = np.where(idle, crossing, typical).clip(0)
    occupation = recv + pre + (end - start) + post
    arrival = pub_r + crossing - recv  # taken at max(arrival, free) + recv = max(crossing done, free + recv)
    c = cfg.replicas
    if dispatch == "shared" or c == 1:
        served = q.shared(arrival, occupation, c)
    else:
        served = q.dealt(arrival, occupation, c, assign=replica)
    end_r = served.start + occupation - post
    overhead = recv + pre + post
    costs = Costs(rho_effective=round(cfg.rate * cfg.fanout_dist.mean * float(np.mean(overhead + end - start))
                                      / 1e9 / c, 4))
    if queued.any():
        costs.overhead_p50_us, costs.overhead_p99_us = (np.percentile(overhead[queued], [50, 99]) / 1e3).tolist()
    if draws is not None:
        over = []
        for r in range(c):
            mine = np.flatnonzero(replica == r)
            mine = mine[np.argsort(start[mine], kind="stable")]
            over.append((end - start)[mine] - draws[r][:len(mine)])
        over = np.concatenate(over)
        costs.over_p50_us, costs.over_p99_us = (np.percentile(over, [50, 99]) / 1e3).tolist()
    return end_r - intended, costs

