"""One case on one broker: a finished run's folder set against its replays and the closed form
(``Outcome``, its verdicts), and the outputs: validate.csv's rows and the printed table."""
from __future__ import annotations

import csv
import math
import os
import sys
from dataclasses import dataclass, field

import numpy as np

from testbed.analysis.metrics import percentiles_ms
from testbed.config import RunConfig
from testbed.validation.cases import STATS, TARGET_STATS, TOLERANCE_PCT, Case, _lam
from testbed.validation.replays import Costs, _ok, measured_replay, nominal_replay, read_messages

# a percentile where >= 5% of the ideal latencies lie within the histogram's resolution of it
ATOM_NS, ATOM_REL, ATOM_SHARE = 1_000, 0.001, 0.05

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

