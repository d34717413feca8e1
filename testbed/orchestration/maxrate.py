"""The highest sustainable offered rate under a latency bound (``testbed.run --find-max-rate``).

Like MLPerf LoadGen's peak-performance search: a rate *passes* when its run completes, is ``stable``
(neither backlog grows, see testbed/analysis/metrics.py) and its e2e p99 is at most ``--slo-p99-ms``. The search

1. probes ``--min-rate``; if it fails, there is no answer in range (said so, exit 1);
2. brackets: doubles the rate (capped at ``--max-rate``) until a probe fails; if ``--max-rate`` passes,
   the answer is at least that (said so, exit 1);
3. bisects between the highest pass and the lowest fail until they are within ``--rate-tolerance``
   (relative) or ``--max-probes`` runs are spent.

The answer is the highest rate that passed. Every probe is a full run (warm-up, duration, drain) with its
own folder under the search folder; ``maxrate.csv`` lists them with each probe's ``limited_by`` (which
part was the bottleneck: stage A, stage B, the broker or the harness itself), so the harness's own ceiling
is never read as the broker's. The broker is started once for the whole search (a campaign,
testbed/orchestration/campaign.py). A probe that fails with an error (not a verdict) stops the search: a
broken broker must not be read as "too slow".
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import os
import secrets
from dataclasses import dataclass, field

from testbed.analysis import report
from testbed.config import RunConfig
from testbed.errors import ConfigError, TestbedError
from testbed.load import closed_window
from testbed.orchestration.campaign import Campaign

DEFAULT_SLO_MS = 50.0
DEFAULT_MIN_RATE = 1.0
DEFAULT_MAX_RATE = 1000.0
DEFAULT_MAX_PROBES = 12
DEFAULT_TOLERANCE = 0.05
COLUMNS = ["probe", "rate", "offered_msgs", "passed", "reason", "stable", "e2e_p99_ms", "throughput_out",
           "backlog_growth", "lost", "limited_by", "run_dir"]
BROKER_LOGS = "_broker"


@dataclass
class Search:
    slo_p99_ms: float = DEFAULT_SLO_MS
    min_rate: float = DEFAULT_MIN_RATE
    max_rate: float = DEFAULT_MAX_RATE
    max_probes: int = DEFAULT_MAX_PROBES
    tolerance: float = DEFAULT_TOLERANCE

    def check(self) -> None:
        if not (self.slo_p99_ms > 0 and math.isfinite(self.slo_p99_ms)):
            raise ConfigError(f"--slo-p99-ms {self.slo_p99_ms:g} is not allowed: a latency bound > 0 (ms)")
        if not (self.min_rate > 0 and math.isfinite(self.min_rate)):
            raise ConfigError(f"--min-rate {self.min_rate:g} is not allowed: a rate > 0 (frames/s)")
        if not (self.max_rate > self.min_rate and math.isfinite(self.max_rate)):
            raise ConfigError(f"--max-rate {self.max_rate:g} is not allowed: it must be above --min-rate "
                              f"{self.min_rate:g}")
        if self.max_probes < 2:
            raise ConfigError(f"--max-probes {self.max_probes} is not allowed: at least 2")
        if not (0 < self.tolerance < 1):
            raise ConfigError(f"--rate-tolerance {self.tolerance:g} is not allowed: a fraction between 0 and 1")


@dataclass
class Outcome:
    rate: float | None            # highest passing rate (frames/s); None when even --min-rate failed
    bracketed: bool               # a pass and a fail were found, the answer lies between them
    message: str
    probes: list = field(default_factory=list)
    out: str = ""
    limited_by: str = ""          # the summary's limited_by at the rate found ("" if not known)
    twin_guess: float | None = None  # the twin's predicted answer, when the search was bracketed from it


def check_open_loop(cfg: RunConfig) -> None:
    """The search varies the offered rate: a closed-loop run has none (one line, exit 2)."""
    if closed_window(cfg.arrival):
        raise ConfigError(f"--find-max-rate with --arrival {cfg.arrival} is not allowed: the search varies the "
                          "offered --rate and a closed-loop run has none (a frame starts when one finishes); "
                          "use an open-loop --arrival, or compare closed-loop runs with K frames in flight")


def verdict(summary: dict, slo_ms: float) -> tuple[bool, str]:
    p99 = summary.get("e2e_p99_ms")
    if not summary.get("complete"):
        return False, f"incomplete: {summary.get('error') or 'run did not complete'}"
    if not summary.get("stable"):
        return False, f"not stable (backlog grows {summary.get('backlog_growth', 0):+.1f} msg/s)"
    if p99 is None or (isinstance(p99, float) and math.isnan(p99)):
        return False, "no latency measured"
    if p99 > slo_ms:
        return False, f"p99 {p99:.2f} ms > {slo_ms:g} ms"
    return True, f"p99 {p99:.2f} ms <= {slo_ms:g} ms, stable"


def find(cfg: RunConfig, search: Search, out: str, live=None, twin_guess: float | None = None) -> Outcome:
    """Run the search; every probe writes a run folder under ``out``; maxrate.csv lists them. With
    ``twin_guess`` (the twin's predicted answer, ``twin_max_rate``) the first probes bracket it."""
    search.check()
    check_open_loop(cfg)
    os.makedirs(out, exist_ok=True)
    probes: list[dict] = []
    with Campaign(os.path.join(out, BROKER_LOGS), "maxrate") as camp:

        def probe(rate: float) -> bool:
            n = len(probes) + 1
            # the rate searched is the total over the camera streams (split over them, as --rate is)
            pcfg = dataclasses.replace(cfg, rate=round(rate, 3), rate_per_stream=0.0, broker_opt=dict(cfg.broker_opt))
            pcfg.out = os.path.join(out, f"probe-{n:02d}-rate{pcfg.rate:g}")
            if live:
                live.start_run(f"probe {n}: {pcfg.rate:g} frames/s", pcfg.duration + pcfg.drain)
            try:
                res = camp.run(pcfg, run_id=f"maxrate-{n:02d}-{secrets.token_hex(2)}",
                               progress=live.tick if live else None)
            finally:
                if live:
                    live.end_run()
            s = res.summary
            ok, why = verdict(s, search.slo_p99_ms)
            probes.append({"probe": n, "rate": pcfg.rate, "offered_msgs": round(pcfg.offered_message_rate, 3),
                           "passed": ok, "reason": why, "stable": s.get("stable"),
                           "e2e_p99_ms": s.get("e2e_p99_ms"), "throughput_out": s.get("throughput_out"),
                           "backlog_growth": s.get("backlog_growth"), "lost": s.get("lost"),
                           "limited_by": s.get("limited_by") or "", "run_dir": res.run_dir})
            report.write_csv(os.path.join(out, "maxrate.csv"), probes, COLUMNS)
            if live:
                limit = f"; limited by {probes[-1]['limited_by']}" if probes[-1]["limited_by"] else ""
                live.log(f"probe {n}: {pcfg.rate:g} frames/s -> {'pass' if ok else 'FAIL'} ({why}{limit})")
            return ok

        if twin_guess:
            outcome = _search_from_guess(probe, search, probes, out, twin_guess)
            outcome.twin_guess = twin_guess
        else:
            outcome = _search(probe, search, probes, out)
    outcome.limited_by = next((p.get("limited_by") or "" for p in probes if p["passed"] and p["rate"] == outcome.rate),
                              "")
    return outcome


def _search(probe, search: Search, probes: list, out: str) -> Outcome:
    lo, hi = search.min_rate, None
    if not probe(lo):
        return Outcome(None, False, f"cannot bracket the answer: even --min-rate {lo:g} frames/s fails "
                                    f"({probes[-1]['reason']}); lower --min-rate", probes, out)
    while hi is None:
        if len(probes) >= search.max_probes:
            return Outcome(lo, False, f"cannot bracket the answer within --max-probes {search.max_probes}: "
                                      f"{lo:g} frames/s passes, no failing rate found yet; raise --max-probes "
                                      "or --min-rate", probes, out)
        r = min(lo * 2, search.max_rate)
        if probe(r):
            lo = r
            if r >= search.max_rate:
                return Outcome(lo, False, f"cannot bracket the answer: --max-rate {r:g} frames/s still passes; "
                                          "the highest sustainable rate is at least that (raise --max-rate)",
                               probes, out)
        else:
            hi = r
    while hi / lo > 1 + search.tolerance and len(probes) < search.max_probes:
        mid = (lo + hi) / 2
        if probe(mid):
            lo = mid
        else:
            hi = mid
    close = hi / lo <= 1 + search.tolerance
    note = "" if close else f" (stopped by --max-probes {search.max_probes}: the answer is below {hi:g})"
    return Outcome(lo, True, f"highest sustainable rate: {lo:g} frames/s (passes; {hi:g} fails){note}",
                   probes, out)


def _search_from_guess(probe, search: Search, probes: list, out: str, guess: float) -> Outcome:
    """Bracket the answer around the twin's guess: probe just below it (stepping down until a pass) and
    just above it (stepping up until a fail), then bisect as ``_search`` does."""
    step = max(search.tolerance, 0.05)
    lo = min(max(search.min_rate, guess * (1 - step)), search.max_rate)
    hi = None
    while not probe(lo):
        hi = lo
        if lo <= search.min_rate:
            return Outcome(None, False, f"cannot bracket the answer: even --min-rate {lo:g} frames/s fails "
                                        f"({probes[-1]['reason']}); lower --min-rate", probes, out)
        if len(probes) >= search.max_probes:
            return Outcome(None, False, f"no passing rate within --max-probes {search.max_probes} below the "
                                        f"twin's guess {guess:g} frames/s", probes, out)
        lo = max(search.min_rate, lo * (1 - 3 * step))
    if hi is None:
        hi = min(search.max_rate, max(lo * (1 + search.tolerance) * 1.0001, guess * (1 + step)))
        while probe(hi):
            lo = hi
            if hi >= search.max_rate:
                return Outcome(lo, False, f"cannot bracket the answer: --max-rate {hi:g} frames/s still passes; "
                                          "the highest sustainable rate is at least that (raise --max-rate)",
                               probes, out)
            if len(probes) >= search.max_probes:
                return Outcome(lo, False, f"cannot bracket the answer within --max-probes {search.max_probes}: "
                                          f"{lo:g} frames/s passes", probes, out)
            hi = min(search.max_rate, hi * (1 + 3 * step))
    while hi / lo > 1 + search.tolerance and len(probes) < search.max_probes:
        mid = (lo + hi) / 2
        if probe(mid):
            lo = mid
        else:
            hi = mid
    close = hi / lo <= 1 + search.tolerance
    note = "" if close else f" (stopped by --max-probes {search.max_probes}: the answer is below {hi:g})"
    return Outcome(lo, True, f"highest sustainable rate: {lo:g} frames/s (passes; {hi:g} fails; bracketed "
                             f"from the twin's {guess:g}){note}", probes, out)


def twin_max_rate(cfg: RunConfig, search: Search, profile_path: str) -> float | None:
    """The twin's answer to the search (same duration and seed as the real probes), or None."""
    from testbed.twin.advise import max_rate
    from testbed.twin.profile import load
    rate, _ = max_rate(load(profile_path, "--use-twin"), cfg, search.slo_p99_ms, search.min_rate, search.max_rate,
                       tolerance=search.tolerance / 2, reps=3, same_seed=True, keep_duration=True)
    return rate


def default_out(cfg: RunConfig) -> str:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return cfg.out or os.path.join("results", f"maxrate-{cfg.broker}-{stamp}")


def table(outcome: Outcome, cfg: RunConfig, slo_ms: float):
    """A rich table of the probes, in the order they ran."""
    from rich.table import Table
    t = Table(title=f"max-rate search: {cfg.broker}, e2e p99 <= {slo_ms:g} ms, stable "
                    f"(fan-out mean {cfg.fanout_dist.mean:g} msgs/frame)")
    for c, j in (("probe", "right"), ("rate frames/s", "right"), ("offered msg/s", "right"),
                 ("result", "left"), ("p99 ms", "right"), ("out msg/s", "right"), ("backlog growth msg/s", "right"),
                 ("limited by", "left"), ("why", "left")):
        t.add_column(c, justify=j)
    for p in outcome.probes:
        t.add_row(str(p["probe"]), f"{p['rate']:g}", f"{p['offered_msgs']:g}", "pass" if p["passed"] else "FAIL",
                  _f(p["e2e_p99_ms"]), _f(p["throughput_out"], 1), _f(p["backlog_growth"], 1),
                  p.get("limited_by") or "-", p["reason"])
    return t


def _f(v, nd: int = 2) -> str:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return "-"
    return "-" if math.isnan(x) else f"{x:.{nd}f}"


def main_branch(cfg: RunConfig, search: Search, quiet: bool, use_twin: str = "") -> int:
    """The ``--find-max-rate`` branch of testbed.run: search, print the table and the answer. With
    ``use_twin`` (a profile), the twin's predicted answer brackets the first probes."""
    from rich.console import Console

    from testbed.orchestration.live import LiveRuns
    search.check()
    check_open_loop(cfg)
    guess = twin_max_rate(cfg, search, use_twin) if use_twin else None
    out = default_out(cfg)
    if os.path.exists(os.path.join(out, "maxrate.csv")):
        raise ConfigError(f"--out {out!r} already holds a max-rate search (maxrate.csv); choose another folder")
    cfg.out = ""
    with LiveRuns(search.max_probes, f"max-rate {cfg.broker}", quiet=quiet) as live:
        outcome = find(cfg, search, out, live, guess)
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    console.print(table(outcome, cfg, search.slo_p99_ms))
    if outcome.rate is not None:
        limit = f"; limited by {outcome.limited_by}" if outcome.limited_by else ""
        console.print(f"{outcome.message}; {outcome.rate * cfg.fanout_dist.mean:g} msg/s offered to the broker"
                      f"{limit}", highlight=False)
    else:
        console.print(outcome.message, highlight=False)
    if use_twin:
        console.print(f"twin's predicted answer: {guess:g} frames/s" if guess else
                      "the twin predicts no passing rate in range: searched without it", highlight=False)
    console.print(f"{len(outcome.probes)} runs; results in {out} (maxrate.csv)", highlight=False)
    return 0 if outcome.bracketed else 1


__all__ = ["Search", "Outcome", "find", "verdict", "main_branch", "TestbedError"]
