"""``python -m testbed.validate``: the testbed checked against queueing theory, on real runs.

    python -m testbed.validate                          # every case on the embedded brokers
    python -m testbed.validate --brokers all --quick    # every broker, short runs (a smoke test)
    python -m testbed.validate --cases md1-80,mm2-80 --brokers NAME --out results/validate

Each case is a queue whose answer is known, run through the real runner with the synthetic stages
(sleep mode, Poisson arrivals, 1 KB messages). For each case and broker the run's e2e p50/p90/p99 and
mean (over the messages summary.csv measures: frames due after the warm-up) are set against:

    nominal        the run's own intended arrival times replayed through the ideal system with the
                   service times the user asked for (the very draws the run's stages made, from the seed):
                   how close the testbed is to the system it claims to be
    measured-cost  the same recursion fed what each message measurably cost: its stage A time up to its
                   publish, its broker hop, stage B's decode, service, ack and bookkeeping (messages.csv):
                   whether that decomposition explains the whole latency
    theory         the closed form where there is one (M/M/1, M/D/1, M/G/1 and M^X/D/1 means by
                   Pollaczek-Khinchine, M/M/2 by Erlang C, a round-robin deal as GI/M/1, the tandem case)

With several replicas the replays deal work as the broker does (its spec's ``dispatch``): one shared
queue (the next message to the replica free first), a round-robin deal at publish, or by partition (the
replica each message went to). Targets: brokers with no server (embedded) within 5% of the nominal
replay at p50, p90 and p99; every broker within 5% of the measured-cost replay. The theory column is for
reading only: a 45 s run's p99 rests on a few dozen messages.

Writes ``--out DIR`` (default results/validate-<time>): one run folder per case and broker, and
validate.csv (one row per case, broker and statistic). Exit 0 when every case passes, 1 when one fails,
2 on bad input (one line, nothing written), 130 on Ctrl-C.
"""
from __future__ import annotations

import argparse
import csv
import datetime as _dt
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

import brokers
from testbed.analysis import queueing as q
from testbed.analysis.metrics import percentiles_ms
from testbed.config import LAUNCHERS, RunConfig, validate as validate_config
from testbed.errors import ConfigError, TestbedError
from testbed.load import schedule
from testbed.load.distributions import LOGNORMAL_SIGMA, Fanout, rng_for, service_sampler

STATS = ("p50", "p90", "p99", "mean")
TARGET_STATS = ("p50", "p90", "p99")
TOLERANCE_PCT = 5.0
# a percentile where >= 5% of the ideal latencies lie within the histogram's resolution of it
ATOM_NS, ATOM_REL, ATOM_SHARE = 1_000, 0.001, 0.05
DEFAULT_DURATION_S = 45.0
DEFAULT_WARMUP_S = 5.0
QUICK = {"duration": 8.0, "warmup": 2.0, "drain": 3.0}
COMMON = dict(pipeline="synthetic", arrival="poisson", fanout="1", producer_rate=math.inf, replicas=1,
              batch_max=1, batch_wait_ms=0.0, service_mode="sleep", message_bytes=1024, drain=5.0)


@dataclass(frozen=True)
class Case:
    name: str
    title: str
    settings: dict
    #: (cfg, dispatch) -> ({stat: seconds}, label); stats without a closed form are left out
    theory: Callable[[RunConfig, str], tuple[dict, str]] | None = None


def _lam(cfg: RunConfig) -> float:
    return cfg.rate * cfg.fanout_dist.mean


def _mm1(cfg, dispatch):
    lam, mu = _lam(cfg), cfg.consumer_rate
    return {**{s: q.mm1_quantile(lam, mu, p) for s, p in (("p50", .5), ("p90", .9), ("p99", .99))},
            "mean": q.mm1_mean(lam, mu)}, "M/M/1"


def _md1(cfg, dispatch):
    lam, d = _lam(cfg), 1.0 / cfg.consumer_rate
    return {**{s: q.md1_quantile(lam, d, p) for s, p in (("p50", .5), ("p90", .9), ("p99", .99))},
            "mean": q.md1_mean(lam, d)}, "M/D/1"


def _mg1_lognormal(cfg, dispatch):
    es = 1.0 / cfg.consumer_rate
    return {"mean": q.mg1_mean(_lam(cfg), es, es * es * math.exp(LOGNORMAL_SIGMA ** 2))}, "M/G/1 mean (P-K)"


def _mm2(cfg, dispatch):
    lam, mu, c = _lam(cfg), cfg.consumer_rate, cfg.replicas
    pts = (("p50", .5), ("p90", .9), ("p99", .99))
    if dispatch == "shared":
        return {**{s: q.mmc_quantile(lam, mu, c, p) for s, p in pts}, "mean": q.mmc_mean(lam, mu, c)}, \
            f"M/M/{c} (Erlang C)"
    if dispatch == "round_robin":
        return {**{s: q.dealt_mm_quantile(lam, mu, c, p) for s, p in pts}, "mean": q.dealt_mm_mean(lam, mu, c)}, \
            f"{c} x E{c}/M/1 (round-robin)"
    return {}, ""


def _batch_arrivals(cfg, dispatch):
    fan, d = cfg.fanout_dist, 1.0 / cfg.consumer_rate
    if fan.kind != "poisson":
        return {}, ""
    m = fan.mean
    return {"mean": q.mxg1_mean(cfg.rate, m, m + m * m, d, d * d)}, "M^X/D/1 mean"


def _tandem(cfg, dispatch):
    """Stage A an M/D/1 (fixed D_A); k messages per frame, fixed D_B with k D_B <= D_A: stage B is
    free again before the next frame leaves A, so message j of a frame ends (j + 1) D_B after it."""
    fan = cfg.fanout_dist
    lam, da, db = cfg.rate, 1.0 / cfg.producer_rate, 1.0 / cfg.consumer_rate
    if fan.kind != "fixed" or fan.max * db > da or cfg.replicas != 1:
        return {}, ""
    k = fan.max

    def cdf(t):
        return sum(q.md1_sojourn_cdf(t - (j + 1) * db, lam, da) for j in range(k)) / k

    out = {s: q.quantile_of(cdf, p, da) for s, p in (("p50", .5), ("p90", .9), ("p99", .99))}
    out["mean"] = q.md1_mean(lam, da) + db * (k + 1) / 2
    return out, "M/D/1 + D"


CASES = {c.name: c for c in (
    Case("mm1-50", "M/M/1, rho 0.5", dict(service_dist="exponential", consumer_rate=100.0, rate=50.0), _mm1),
    Case("mm1-80", "M/M/1, rho 0.8", dict(service_dist="exponential", consumer_rate=100.0, rate=80.0), _mm1),
    Case("md1-50", "M/D/1, rho 0.5", dict(service_dist="fixed", consumer_rate=100.0, rate=50.0), _md1),
    Case("md1-80", "M/D/1, rho 0.8", dict(service_dist="fixed", consumer_rate=100.0, rate=80.0), _md1),
    Case("mg1-80", "M/G/1 lognormal, rho 0.8", dict(service_dist="lognormal", consumer_rate=100.0, rate=80.0),
         _mg1_lognormal),
    Case("md2-80", "2 replicas, fixed service, rho 0.8",
         dict(service_dist="fixed", consumer_rate=100.0, rate=160.0, replicas=2), None),
    Case("mm2-80", "2 replicas, exponential service, rho 0.8",
         dict(service_dist="exponential", consumer_rate=100.0, rate=160.0, replicas=2), _mm2),
    Case("fanout-80", "Poisson(4) messages per frame, rho 0.8",
         dict(service_dist="fixed", consumer_rate=100.0, rate=20.0, fanout="poisson:4"), _batch_arrivals),
    Case("tandem-a", "tandem, stage A slower (rho_a 0.8, rho_b 0.4)",
         dict(service_dist="fixed", producer_rate=50.0, consumer_rate=200.0, rate=40.0, fanout="2"), _tandem),
)}


# -- broker facts ---------------------------------------------------------------------------------

def broker_facts(name: str, impl: str = "", options: dict | None = None) -> tuple[str, bool]:
    """(dispatch with these adapter options, embedded) from the broker's spec."""
    spec = brokers.spec(name)
    return spec.dispatch_for(impl, options), not spec.caps(impl).needs_server


def embedded_brokers() -> list[str]:
    return [n for n in brokers.names() if broker_facts(n)[1]]


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
    hop = (received - np.maximum(pub, free_at)).clip(0)
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


# -- one case on one broker -----------------------------------------------------------------------

def stats_ms(values_ns) -> dict:
    p = percentiles_ms(values_ns)
    out = {s: p[s] for s in TARGET_STATS}
    out["mean"] = float(np.mean(values_ns)) / 1e6 if len(values_ns) else math.nan
    return out


def error_pct(got: float, ref: float) -> float:
    if ref is None or not ref > 0 or got is None or math.isnan(got):
        return math.nan
    return 100.0 * (got - ref) / ref


@dataclass
class Outcome:
    case: Case
    broker: str
    dispatch: str
    strict: bool
    cfg: RunConfig
    run_dir: str = ""
    measured: dict = field(default_factory=dict)
    nominal: dict = field(default_factory=dict)
    measured_cost: dict = field(default_factory=dict)
    theory: dict = field(default_factory=dict)
    theory_label: str = ""
    other: dict = field(default_factory=dict)  # dispatch -> {stat: ms}
    costs: Costs = field(default_factory=Costs)
    on_atom: tuple = ()  # target stats that sit on an atom of the ideal distribution: not gated
    messages: int = 0
    note: str = ""
    error: str = ""

    def row_verdict(self, stat: str) -> str:
        if self.error:
            return "FAIL"
        if stat not in TARGET_STATS:
            return ""
        if stat in self.on_atom:
            return "n/a"
        bad = abs(error_pct(self.measured[stat], self.measured_cost.get(stat, math.nan))) > TOLERANCE_PCT \
            or math.isnan(error_pct(self.measured[stat], self.measured_cost.get(stat, math.nan)))
        if self.strict:
            e = error_pct(self.measured[stat], self.nominal.get(stat, math.nan))
            bad = bad or math.isnan(e) or abs(e) > TOLERANCE_PCT
        return "FAIL" if bad else "PASS"

    @property
    def passed(self) -> bool:
        return not self.error and all(self.row_verdict(s) in ("PASS", "n/a") for s in TARGET_STATS)


def analyse(cfg: RunConfig, run_dir: str, case: Case, broker: str, dispatch: str, strict: bool) -> Outcome:
    """Read a finished run's folder and set it against its replays and the closed form."""
    out = Outcome(case, broker, dispatch, strict, cfg, run_dir)
    msgs = read_messages(os.path.join(run_dir, "messages.csv"))
    ok = _ok(msgs)
    lost = int(np.sum(msgs["status"] == "lost"))
    warm = int(cfg.warmup * 1e9)
    sel = ok["intended_ns"] >= warm
    out.messages = int(sel.sum())
    if out.messages == 0:
        out.error = "no message was measured"
        return out
    out.measured = stats_ms((ok["end_ns"] - ok["intended_ns"])[sel])
    nom = nominal_replay(cfg, ok, dispatch)
    ideal = nom.e2e[ok["seq"][sel]]
    out.nominal = stats_ms(ideal)
    # M/D/1 at rho 0.5: half the messages never wait, so the ideal p50 is the edge of an atom at D
    # and any overhead at all moves it far: such a percentile is shown, not gated
    out.on_atom = tuple(s for s in TARGET_STATS
                        if np.mean(np.abs(ideal - out.nominal[s] * 1e6) <= max(ATOM_NS, out.nominal[s] * 1e6 * ATOM_REL))
                        >= ATOM_SHARE)
    out.other = {how: stats_ms(e[ok["seq"][sel]]) for how, e in nom.other.items()}
    e2e_cost, out.costs = measured_replay(cfg, ok, dispatch, nom.streams)
    out.measured_cost = stats_ms(e2e_cost[sel])
    if case.theory is not None:
        out.theory, out.theory_label = case.theory(cfg, dispatch)
    notes = []
    if lost:
        out.error = f"{lost} messages lost"
    if not nom.draws_match:
        notes.append("service times do not follow the seeded draws")
    summary = _summary(run_dir)
    if summary and summary.get("e2e_p99_ms") not in (None, ""):
        if abs(float(summary["e2e_p99_ms"]) - out.measured["p99"]) > 1e-3:
            notes.append(f"summary.csv e2e p99 {summary['e2e_p99_ms']} ms differs")
    out.note = "; ".join(notes)
    return out


def _summary(run_dir: str) -> dict:
    try:
        with open(os.path.join(run_dir, "summary.csv"), newline="", encoding="utf-8") as fh:
            return next(csv.DictReader(fh), {})
    except OSError:
        return {}


# -- output ------------------------------------------------------------------------------------------

CSV_COLUMNS = ["case", "title", "broker", "dispatch", "stat", "measured_ms", "replay_nominal_ms",
               "nominal_error_pct", "replay_measured_ms", "measured_error_pct", "theory_ms", "theory_error_pct",
               "theory", "replay_shared_ms", "replay_round_robin_ms", "nominal_target", "verdict", "messages",
               "rho", "rho_effective", "service_over_p50_us", "service_over_p99_us", "b_overhead_p50_us",
               "b_overhead_p99_us",
               "duration_s", "run_dir", "note"]


def _r(v, nd=3):
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else round(float(v), nd)


def csv_rows(outcomes: list[Outcome]) -> list[dict]:
    rows = []
    for o in outcomes:
        for s in STATS:
            m = o.measured.get(s, math.nan)
            th = o.theory.get(s)
            rows.append({
                "case": o.case.name, "title": o.case.title, "broker": o.broker, "dispatch": o.dispatch,
                "stat": s, "measured_ms": _r(m), "replay_nominal_ms": _r(o.nominal.get(s)),
                "nominal_error_pct": _r(error_pct(m, o.nominal.get(s)), 2),
                "replay_measured_ms": _r(o.measured_cost.get(s)),
                "measured_error_pct": _r(error_pct(m, o.measured_cost.get(s)), 2),
                "theory_ms": _r(None if th is None else th * 1e3), "theory_error_pct":
                    _r(error_pct(m, None if th is None else th * 1e3), 2),
                "theory": o.theory_label if th is not None else "",
                "replay_shared_ms": _r(o.other.get("shared", {}).get(s)),
                "replay_round_robin_ms": _r(o.other.get("round_robin", {}).get(s)),
                "nominal_target": o.strict, "verdict": o.row_verdict(s), "messages": o.messages,
                "rho": round(_lam(o.cfg) / o.cfg.consumer_capacity, 4), "rho_effective": _r(o.costs.rho_effective, 4),
                "service_over_p50_us": _r(o.costs.over_p50_us, 1), "service_over_p99_us": _r(o.costs.over_p99_us, 1),
                "b_overhead_p50_us": _r(o.costs.overhead_p50_us, 1),
                "b_overhead_p99_us": _r(o.costs.overhead_p99_us, 1),
                "duration_s": o.cfg.duration, "run_dir": o.run_dir, "note": o.error or o.note,
            })
    return rows


def print_table(outcomes: list[Outcome], file=None) -> None:
    from rich.console import Console
    from rich.table import Table

    def num(v):
        return "-" if v in ("", None) else f"{v:.3f}"

    def pct(v):
        return "-" if v in ("", None) else f"{v:+.1f}%"

    t = Table(title="e2e latency (ms): measured vs replays of the same run and theory",
              caption=f"PASS: within {TOLERANCE_PCT:g}% of the measured-cost replay, and of the nominal one "
                      "where nominal target = yes (brokers with no server)")
    for col, just in (("case", "left"), ("broker", "left"), ("stat", "left"), ("measured", "right"),
                      ("nominal", "right"), ("err", "right"), ("meas.-cost", "right"), ("err", "right"),
                      ("theory", "right"), ("err", "right"), ("", "left")):
        t.add_column(col, justify=just)
    rows = csv_rows(outcomes)
    for i, r in enumerate(rows):
        new = i % len(STATS) == 0
        t.add_row(r["case"] if new else "", f"{r['broker']} ({r['dispatch']})" if new else "", r["stat"],
                  num(r["measured_ms"]), num(r["replay_nominal_ms"]), pct(r["nominal_error_pct"]),
                  num(r["replay_measured_ms"]), pct(r["measured_error_pct"]), num(r["theory_ms"]),
                  pct(r["theory_error_pct"]), r["verdict"] or "",
                  end_section=(i % len(STATS) == len(STATS) - 1))
    console = Console(file=file or sys.stdout, width=130)
    console.print(t)
    for o in outcomes:
        extra = []
        if o.other:
            sh, rr = o.other.get("shared", {}), o.other.get("round_robin", {})
            extra.append(f"same arrivals, nominal: shared queue p99 {sh.get('p99', math.nan):.3f} ms, "
                         f"round-robin deal p99 {rr.get('p99', math.nan):.3f} ms")
        if o.measured and not o.passed:
            c = o.costs
            extra.append(f"stage B service overshoot p50 {c.over_p50_us:.0f} us / p99 {c.over_p99_us:.0f} us, "
                         f"overhead per waiting message p50 {c.overhead_p50_us:.0f} us / p99 "
                         f"{c.overhead_p99_us:.0f} us: rho {c.rho_effective:.3f}, not "
                         f"{_lam(o.cfg) / o.cfg.consumer_capacity:.3f}")
        if o.on_atom:
            extra.append(f"{', '.join(o.on_atom)} not gated: on an atom of the ideal distribution "
                         "(messages that never wait), where any overhead moves a percentile far")
        if o.error or o.note:
            extra.append(o.error or o.note)
        for e in extra:
            console.print(f"  {o.case.name} on {o.broker}: {e}", highlight=False, soft_wrap=True)


def write_csv(path: str, outcomes: list[Outcome]) -> None:
    from testbed.analysis.report import write_csv as write
    write(path, csv_rows(outcomes), CSV_COLUMNS)


# -- command line -----------------------------------------------------------------------------------

class OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m testbed.validate",
                      description="Run queues with known answers on real brokers and compare each run's e2e "
                                  "percentiles with exact replays of the same run and with queueing theory.",
                      epilog=f"Cases: {', '.join(f'{c.name} ({c.title})' for c in CASES.values())}. "
                             "Exit codes: 0 every case passes; 1 a case fails; 2 bad input; 130 interrupted.")
    p.add_argument("--brokers", default="", metavar="LIST",
                   help="comma-separated brokers, or 'all' (default: those with no server to start)")
    p.add_argument("--cases", default="all", metavar="LIST", help="comma-separated cases, or 'all' (default)")
    p.add_argument("--duration", type=float, default=None, metavar="S",
                   help=f"seconds of load per case, warm-up included (default {DEFAULT_DURATION_S:g}; "
                        f"--quick {QUICK['duration']:g})")
    p.add_argument("--warmup", type=float, default=None, metavar="S",
                   help=f"seconds excluded from statistics (default {DEFAULT_WARMUP_S:g}; --quick {QUICK['warmup']:g})")
    p.add_argument("--seed", type=int, default=1, metavar="N", help="seed of every run (default 1)")
    p.add_argument("--launcher", default="auto", choices=LAUNCHERS, help="how brokers with a server are started")
    p.add_argument("--out", default="", metavar="DIR", help="folder to write (default results/validate-<time>)")
    p.add_argument("--quick", action="store_true", help="short runs: a smoke test, not a measurement")
    return p


def _pick(text: str, allowed: list[str], what: str, default: list[str]) -> list[str]:
    if not text:
        return default
    if text.strip().lower() == "all":
        return list(allowed)
    out = []
    for name in (t.strip() for t in text.split(",")):
        if name not in allowed:
            raise ConfigError(f"--{what} {name!r} is not allowed: use 'all' or any of {', '.join(allowed)}")
        if name not in out:
            out.append(name)
    if not out:
        raise ConfigError(f"--{what} {text!r} names nothing: use 'all' or any of {', '.join(allowed)}")
    return out


def plan(args) -> tuple[list[tuple[Case, str, RunConfig]], str]:
    """Every (case, broker, config) to run, checked before anything starts; and the output folder."""
    names = brokers.names()
    chosen = _pick(args.brokers, names, "brokers", embedded_brokers())
    cases = _pick(args.cases, list(CASES), "cases", list(CASES))
    duration = args.duration if args.duration is not None else (QUICK["duration"] if args.quick else DEFAULT_DURATION_S)
    warmup = args.warmup if args.warmup is not None else (QUICK["warmup"] if args.quick else DEFAULT_WARMUP_S)
    drain = QUICK["drain"] if args.quick else COMMON["drain"]
    if not math.isfinite(duration) or duration <= 0:
        raise ConfigError(f"--duration {duration:g} is not allowed: a positive number of seconds")
    out = args.out or os.path.join("results", "validate-" + _dt.datetime.now().strftime("%Y%m%d-%H%M%S"))
    if os.path.exists(os.path.join(out, "validate.csv")):
        raise ConfigError(f"--out {out!r} already holds a validation (validate.csv); choose another folder")
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"--out {out!r} is not a folder")
    todo = []
    for cname in cases:
        case = CASES[cname]
        for b in chosen:
            cfg = RunConfig(**{**RunConfig().to_dict(), **COMMON, **case.settings, "broker": b,
                               "duration": duration, "warmup": warmup, "drain": drain, "seed": args.seed,
                               "launcher": args.launcher, "out": os.path.join(out, f"{cname}-{b}")})
            validate_config(cfg)
            if os.path.exists(os.path.join(cfg.out, "summary.csv")):
                raise ConfigError(f"--out {out!r} already holds run {cname}-{b}; choose another folder")
            todo.append((case, b, cfg))
    return todo, out


def run_one(case: Case, broker: str, cfg: RunConfig) -> Outcome:
    from testbed.orchestration.execute import execute
    dispatch, strict = broker_facts(broker, cfg.broker_impl, cfg.broker_opt)
    try:
        res = execute(cfg)
    except ConfigError:
        raise
    except TestbedError as exc:
        if exc.exit_code == 130:  # interrupted: stop the whole validation
            raise KeyboardInterrupt from None
        o = Outcome(case, broker, dispatch, strict, cfg, cfg.out, error=str(exc).splitlines()[0])
        if os.path.exists(os.path.join(cfg.out, "messages.csv")):
            try:
                got = analyse(cfg, cfg.out, case, broker, dispatch, strict)
                got.error = o.error
                return got
            except (TestbedError, OSError, ValueError):
                pass
        return o
    try:
        return analyse(cfg, res.run_dir, case, broker, dispatch, strict)
    except (TestbedError, OSError, ValueError) as exc:
        return Outcome(case, broker, dispatch, strict, cfg, res.run_dir, error=f"analysis: {exc}")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    outcomes: list[Outcome] = []
    out = ""
    try:
        todo, out = plan(args)
        os.makedirs(out, exist_ok=True)
        for i, (case, b, cfg) in enumerate(todo, 1):
            print(f"validate [{i}/{len(todo)}] {case.name} on {b}: {case.title}, {cfg.duration:g} s ...",
                  file=sys.stderr, flush=True)
            o = run_one(case, b, cfg)
            outcomes.append(o)
            if o.measured:
                print(f"  p99 measured {o.measured['p99']:.3f} ms, nominal replay {o.nominal['p99']:.3f} ms "
                      f"({error_pct(o.measured['p99'], o.nominal['p99']):+.1f}%), measured-cost replay "
                      f"{o.measured_cost['p99']:.3f} ms ({error_pct(o.measured['p99'], o.measured_cost['p99']):+.1f}%)"
                      f": {'PASS' if o.passed else 'FAIL'}" + (f" ({o.error})" if o.error else ""),
                      file=sys.stderr, flush=True)
            else:
                print(f"  FAIL: {o.error}", file=sys.stderr, flush=True)
        write_csv(os.path.join(out, "validate.csv"), outcomes)
        print_table(outcomes)
        failed = [f"{o.case.name} on {o.broker}" for o in outcomes if not o.passed]
        print(f"{len(outcomes) - len(failed)} of {len(outcomes)} passed"
              + (f"; failed: {', '.join(failed)}" if failed else "") + f"; validate.csv in {out}")
        return 1 if failed else 0
    except ConfigError as exc:
        print(f"testbed.validate: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if outcomes and out:
            write_csv(os.path.join(out, "validate.csv"), outcomes)
        print("testbed.validate: interrupted", file=sys.stderr)
        return 130
    except TestbedError as exc:
        print(f"testbed.validate: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
