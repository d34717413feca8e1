"""The validation's cases: queues whose answer is known, their settings and closed forms, and the facts
of each broker the replays need (how it deals work, whether it has a server)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import brokers
from testbed.analysis import queueing as q
from testbed.config import RunConfig
from testbed.load.distributions import LOGNORMAL_SIGMA

STATS = ("p50", "p90", "p99", "mean")
TARGET_STATS = ("p50", "p90", "p99")
TOLERANCE_PCT = 5.0
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

