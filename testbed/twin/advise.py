"""Searching configurations with the twin: the highest rate a configuration sustains under a latency
bound, and the cheapest configurations that meet it at a given rate.

A configuration *meets* the bound when its prediction is stable and its predicted e2e p99 is at most
the bound. ``max_rate`` bisects the offered rate (frames/s) between a rate that meets it and one that
does not. ``search`` walks broker x batch_max x batch_wait and, for each, the fewest stage B replicas
that meet the bound (from a lower bound on what the offered load needs upwards); the answers are
ordered cheapest first: fewest replicas, then the most headroom (the highest rate the configuration
sustains under the bound), then the lowest predicted p99.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from testbed.errors import ConfigError
from testbed.twin.predict import Prediction, build_model, run_reps
from testbed.twin.profile import Profile

DEFAULT_BATCHES = (1, 2, 4, 8)
DEFAULT_WAITS_MS = (0.0, 5.0, 10.0)
SEARCH_MESSAGES = 20_000  # a searched configuration is simulated for about this many messages
HEADROOM_TOLERANCE = 0.03


def meets(pred: Prediction, slo_ms: float) -> bool:
    p99 = pred.point.get("e2e_p99_ms")
    return bool(pred.point.get("stable")) and p99 is not None and p99 == p99 and p99 <= slo_ms


def horizon(cfg, messages: int = SEARCH_MESSAGES):
    """``cfg`` with a duration that offers about ``messages`` (at least 20 s, at most 600 s)."""
    rate = cfg.rate * cfg.fanout_dist.mean
    duration = min(600.0, max(20.0, messages / max(rate, 1e-9)))
    return dataclasses.replace(cfg, duration=round(duration, 3), warmup=min(cfg.warmup, duration / 4))


def max_rate(prof: Profile, cfg, slo_ms: float, lo: float, hi: float, tolerance: float = HEADROOM_TOLERANCE,
             reps: int = 3, same_seed: bool = False, stage_a: str = "", stage_b: str = "",
             keep_duration: bool = False) -> tuple[float | None, int]:
    """(the highest rate in [lo, hi] the twin says meets the bound, or None if lo does not; simulations)."""
    sims = 0

    def ok(rate: float) -> bool:
        nonlocal sims
        c = dataclasses.replace(cfg, rate=rate)
        if not keep_duration:
            c = horizon(c)
        sims += 1
        return meets(run_reps(build_model(prof, c, stage_a, stage_b), reps, same_seed), slo_ms)
    if not ok(lo):
        return None, sims
    a = lo
    b = None
    while b is None:
        r = min(a * 2, hi)
        if ok(r):
            a = r
            if r >= hi:
                return a, sims
        else:
            b = r
    while b / a > 1 + tolerance:
        mid = (a + b) / 2
        if ok(mid):
            a = mid
        else:
            b = mid
    return a, sims


@dataclass
class Pick:
    broker: str
    replicas: int
    batch_max: int
    batch_wait_ms: float
    prediction: Prediction
    headroom: float | None = None  # frames/s

    @property
    def p99(self) -> float:
        return self.prediction.point.get("e2e_p99_ms", math.nan)

    def key(self):
        return (self.replicas, -(self.headroom or 0.0), self.p99)


@dataclass
class Advice:
    picks: list = field(default_factory=list)
    tried: int = 0
    failed: list = field(default_factory=list)   # (broker, batch, wait, why) that never met the bound
    skipped: list = field(default_factory=list)  # (broker, why): not in the profile


def _lower_replicas(cfg) -> int:
    if math.isinf(cfg.consumer_rate) or cfg.pipeline != "synthetic":
        return 1
    need = cfg.rate * cfg.fanout_dist.mean / cfg.consumer_rate
    return max(1, int(math.floor(need)))


def search(prof: Profile, cfg, slo_ms: float, brokers_: list[str], max_replicas: int,
           batches=DEFAULT_BATCHES, waits=DEFAULT_WAITS_MS, reps: int = 3, headroom_for: int = 12,
           stage_a: str = "", stage_b: str = "", log=None) -> Advice:
    adv = Advice()
    base = horizon(cfg)
    for b in brokers_:
        if b not in prof.brokers:
            adv.skipped.append((b, "not in the profile"))
            continue
        for k in batches:
            for w in (waits if k > 1 else (0.0,)):
                c0 = dataclasses.replace(base, broker=b, batch_max=k, batch_wait_ms=w)
                found = None
                r = min(_lower_replicas(c0), max_replicas)
                last = None
                try:
                    while r <= max_replicas:
                        c = dataclasses.replace(c0, replicas=r)
                        pred = run_reps(build_model(prof, c, stage_a, stage_b), reps)
                        adv.tried += 1
                        last = pred
                        if meets(pred, slo_ms):
                            found = Pick(b, r, k, w, pred)
                            break
                        r += 1
                except ConfigError as exc:
                    adv.failed.append((b, k, w, str(exc)))
                    continue
                if found:
                    adv.picks.append(found)
                    if log:
                        log(f"{b} batch {k} wait {w:g} ms: {found.replicas} replica(s), p99 {found.p99:.1f} ms")
                else:
                    why = "not stable" if last is not None and not last.point.get("stable") else \
                        f"p99 {last.point.get('e2e_p99_ms', math.nan):.1f} ms" if last is not None else "no prediction"
                    adv.failed.append((b, k, w, f"no replica count up to {max_replicas} meets it ({why})"))
    if adv.picks:
        fewest = min(p.replicas for p in adv.picks)
        near = sorted((p for p in adv.picks if p.replicas <= fewest + 1), key=lambda p: (p.replicas, p.p99))
        for p in near[:headroom_for]:
            c = dataclasses.replace(cfg, broker=p.broker, replicas=p.replicas, batch_max=p.batch_max,
                                    batch_wait_ms=p.batch_wait_ms)
            p.headroom, _ = max_rate(prof, c, slo_ms, cfg.rate, cfg.rate * 16, reps=max(1, reps - 1),
                                     stage_a=stage_a, stage_b=stage_b)
    adv.picks.sort(key=Pick.key)
    return adv
