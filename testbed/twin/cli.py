"""What the twin's three commands share: the run flags (those of ``testbed.run``) resolved into a
RunConfig, tables, and JSON keyed like summary.csv."""
from __future__ import annotations

import argparse
import math
import sys

from testbed.errors import ConfigError
from testbed.twin.predict import Prediction

#: figures shown in the tables, in order (summary.csv column names)
SHOWN = ("e2e_p50_ms", "e2e_p90_ms", "e2e_p99_ms", "frame_p99_ms", "queue_p99_ms", "hop_p50_ms",
         "throughput_out", "backlog_growth", "stable")



def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 1")
    return v


def positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"{text!r} must be a number > 0")
    return v


def resolve_run(ns: argparse.Namespace, own: tuple[str, ...]):
    """The RunConfig of the run flags in ``ns`` (twin flags ``own`` left out); which flags were given."""
    from testbed.config import resolve
    run_ns = argparse.Namespace(**{k: v for k, v in vars(ns).items() if k not in own})
    given = set(vars(run_ns))
    return resolve(run_ns), given


def console():
    from rich.console import Console
    c = Console()
    return c if c.is_terminal else Console(width=160)


def fmt(v, nd: int = 2) -> str:
    if isinstance(v, bool):
        return "yes" if v else "NO"
    try:
        x = float(v)
    except (TypeError, ValueError):
        return "-" if v in (None, "") else str(v)
    return "-" if math.isnan(x) else f"{x:.{nd}f}"


def band(pred: Prediction, key: str) -> str:
    lo, hi = pred.lo.get(key), pred.hi.get(key)
    if key == "stable":
        return "" if lo == hi else "mixed"
    return f"{fmt(lo)} - {fmt(hi)}"


def prediction_table(pred: Prediction, title: str, measured: dict | None = None, error: dict | None = None):
    from rich.table import Table
    t = Table(title=title)
    t.add_column("figure")
    t.add_column("predicted", justify="right")
    t.add_column(f"band ({len(pred.reps)} sims)", justify="right")
    if measured is not None:
        t.add_column("measured", justify="right")
        t.add_column("error %", justify="right")
    for k in SHOWN:
        row = [k, fmt(pred.point.get(k)), band(pred, k)]
        if measured is not None:
            row += [fmt(measured.get(k)), fmt((error or {}).get(k), 1)]
        t.add_row(*row)
    return t


def as_json(pred: Prediction) -> dict:
    """Figures keyed like summary.csv columns, then their bands."""
    out = {k: _clean(v) for k, v in pred.point.items()}
    out["band"] = {k: [_clean(pred.lo[k]), _clean(pred.hi[k])] for k in pred.point}
    out["replications"] = len(pred.reps)
    out["dispatch"] = pred.dispatch
    out["costs_from"] = pred.costs_from
    out["notes"] = pred.notes
    return out


def _clean(v):
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def config_json(cfg) -> dict:
    keys = ("broker", "broker_impl", "pipeline", "rate", "arrival", "producer_rate", "consumer_rate", "fanout",
            "replicas", "batch_max", "batch_wait_ms", "service_dist", "service_mode", "message_bytes", "duration",
            "warmup", "drain", "seed")
    return {k: getattr(cfg, k) for k in keys}


def write_json(path: str, obj) -> None:
    from testbed.analysis.report import write_json as w
    w(path, obj)


def fail(prog: str, exc: Exception) -> int:
    print(f"{prog}: error: {exc}", file=sys.stderr)
    return getattr(exc, "exit_code", 1)


__all__ = ["ConfigError"]
