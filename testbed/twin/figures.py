"""The figures of a simulated run, computed as testbed/analysis/metrics.py computes a real run's and keyed
like summary.csv's columns.

Messages whose frame was due after the warm-up are measured; a message not finished by the end of the
drain is lost (as in a real run, whose stage B stops then). Percentiles are the value at the percentile
(the smallest value with at least that share of the sample at or below it), as HdrHistogram gives.
"""
from __future__ import annotations

import math

import numpy as np

from testbed.analysis.metrics import STABLE_FRACTION, slope
from testbed.load.distributions import Fanout
from testbed.twin.simulate import Sim

#: the figures a prediction gives (summary.csv column names)
KEYS = ("e2e_p50_ms", "e2e_p90_ms", "e2e_p99_ms", "e2e_p999_ms", "e2e_max_ms", "frame_p50_ms", "frame_p99_ms",
        "publish_delay_p50_ms", "publish_delay_p99_ms", "queue_p50_ms", "queue_p99_ms", "hop_p50_ms",
        "hop_p99_ms", "throughput_in", "throughput_out", "backlog_max", "backlog_growth", "stage_a_backlog_growth",
        "stable", "sent", "lost", "measured_messages", "rho")


def pct_ms(values, ps=(50, 90, 99, 99.9)) -> list[float]:
    v = np.asarray(values)
    if not len(v):
        return [math.nan] * len(ps)
    return [round(float(x) / 1e6, 6) for x in np.percentile(v, ps, method="inverted_cdf")]


def figures(sim: Sim, cfg) -> dict:
    warm = int(cfg.warmup * 1e9)
    stop = int(cfg.duration * 1e9)
    limit = int((cfg.duration + cfg.drain) * 1e9)
    done = sim.end <= limit
    sel = done & (sim.intended >= warm)
    e2e = (sim.end - sim.intended)[sel]
    out = {}
    p50, p90, p99, p999 = pct_ms(e2e)
    out.update({"e2e_p50_ms": p50, "e2e_p90_ms": p90, "e2e_p99_ms": p99, "e2e_p999_ms": p999,
                "e2e_max_ms": round(float(e2e.max()) / 1e6, 6) if len(e2e) else math.nan})
    # frames: the last message done - intended, complete frames only
    nf = len(sim.offsets)
    frame_of = np.repeat(np.arange(nf), sim.counts)
    last_end = np.full(nf, -1, dtype=np.int64)
    np.maximum.at(last_end, frame_of[done], sim.end[done])
    n_done = np.bincount(frame_of[done], minlength=nf)
    complete = (n_done == sim.counts) & (sim.counts > 0) & (sim.offsets >= warm)
    out["frame_p50_ms"], out["frame_p99_ms"] = pct_ms((last_end - sim.offsets)[complete], (50, 99))
    pub = sim.published[sel]
    ready = np.maximum(pub, sim.free[sel])
    out["publish_delay_p50_ms"], out["publish_delay_p99_ms"] = pct_ms(pub - sim.intended[sel], (50, 99))
    out["queue_p50_ms"], out["queue_p99_ms"] = pct_ms(ready - pub, (50, 99))
    out["hop_p50_ms"], out["hop_p99_ms"] = pct_ms(sim.received[sel] - ready, (50, 99))
    window = cfg.duration - cfg.warmup
    in_w = (sim.a_done >= warm) & (sim.a_done < stop)
    out["throughput_in"] = round(float(sim.counts[in_w].sum()) / window, 3)
    out["throughput_out"] = round(float(((sim.end >= warm) & (sim.end < stop) & done).sum()) / window, 3)
    # backlogs per second, as metrics.timeseries counts them
    end_t = max(limit, stop)
    n_sec = max(1, int(math.ceil(end_t / 1e9)))
    edges = np.arange(n_sec + 1, dtype=np.int64) * 1_000_000_000
    produced = np.histogram(sim.a_done, bins=edges, weights=sim.counts)[0]
    consumed = np.histogram(sim.end[done], bins=edges)[0]
    offered = np.histogram(sim.offsets, bins=edges)[0]
    processed = np.histogram(sim.a_end, bins=edges)[0]
    backlog = np.cumsum(produced) - np.cumsum(consumed)
    a_backlog = np.cumsum(offered) - np.cumsum(processed)
    ks = [k for k in range(n_sec) if k >= cfg.warmup and k + 1 <= cfg.duration + 1e-9]
    growth = slope(backlog[ks]) if ks else 0.0
    a_growth = slope(a_backlog[ks]) if ks else 0.0
    offered_msgs = cfg.rate * Fanout.parse(cfg.fanout).mean
    out["backlog_max"] = int(backlog.max()) if len(backlog) else 0
    out["backlog_growth"] = round(growth, 3)
    out["stage_a_backlog_growth"] = round(a_growth, 3)
    out["stable"] = bool(growth <= max(1.0, STABLE_FRACTION * offered_msgs)
                         and a_growth <= max(1.0, STABLE_FRACTION * cfg.rate))
    out["sent"] = int(len(sim.end))
    out["lost"] = int((~done).sum())
    out["measured_messages"] = int(sel.sum())
    cap = cfg.consumer_rate * cfg.replicas
    out["rho"] = round(offered_msgs / cap, 4) if cap and not math.isinf(cap) else 0.0
    return out
