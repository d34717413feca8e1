"""Run folders read and grouped for a comparison: one row per (broker, configuration).

Reads every run folder below the given folders (a folder holding summary.csv; ``run.json`` and
``sweep.json`` where present; folders whose name starts with ``_``, such as a sweep's ``_incomplete/``,
are skipped). A group is every complete run with the same broker and run settings except the seed; it
holds the median, min and max of every metric over its repetitions, the per-step medians of vision runs,
and the machines and broker implementations it mixes. Columns a run predates stay empty (NaN), so old and
new results line up.
"""
from __future__ import annotations

import csv
import json
import math
import os

import brokers
from testbed.analysis import columns
from testbed.errors import ConfigError

METRICS = ["e2e_p50_ms", "e2e_p99_ms", "throughput_out", "backlog_growth", "lost"]
EXTRA_METRICS = ["throughput_in", "e2e_p90_ms", "e2e_p999_ms", "e2e_max_ms", "frame_p99_ms", "backlog_max",
                 "publish_delay_p99_ms", "transit_p50_ms", "transit_p99_ms", "wait_p50_ms", "wait_p99_ms",
                 "service_p50_ms", "received", "sent", "duplicated"]
#: The harness's own measurements: client-call costs and bookkeeping (us per message), stage B's measured
#: capacity and load, and transit split into queueing for stage B and the broker's hop.
COST_METRICS = ["publish_call_p50_us", "publish_call_p99_us", "recv_call_p50_us", "recv_call_p99_us",
                "ack_call_p50_us", "ack_call_p99_us", "a_harness_p50_us", "a_harness_p99_us",
                "b_harness_p50_us", "b_harness_p99_us", "capacity_measured", "rho_measured",
                "queue_p50_ms", "queue_p99_ms", "hop_p50_ms", "hop_p99_ms"]
#: Figures without a unit that are still numbers (ratios).
_RATIOS = ("rho", "rho_a", "rho_measured", "non_dnn_share")
#: Text columns summarised as the set of values a group holds ("a | b").
TEXT_COLUMNS = ["machine", "broker_impl", "limited_by"]
CONFIG = ["pipeline", "arrival", "offered_rate", "streams", "fanout", "fanout_mean", "producer_rate", "consumer_rate",
          "rho", "replicas", "batch_max", "batch_wait_ms", "service_dist", "service_mode", "message_bytes",
          "duration_s", "warmup_s", "image_size", "preprocess", "detector", "classifier", "device",
          "broker_opt", "broker_nodes", "delivery", "ack"]
#: Every numeric column of summary.csv that is not configuration: median, min and max per group.
ALL_METRICS = list(dict.fromkeys(
    METRICS + EXTRA_METRICS + COST_METRICS
    + [c.name for c in (*columns.SUMMARY, *columns.VISION)
       if (c.unit or c.name in _RATIOS) and c.name not in CONFIG and not c.name.startswith("a_")]))
#: Configuration columns that follow from others (never worth a column or a panel of their own).
DERIVED = ("fanout_mean", "consumer_rate")
VISION_KEYS = ("image_size", "preprocess", "detector", "classifier", "device")
SHORT = {"offered_rate": "frames/s", "fanout": "fan-out", "producer_rate": "A rate", "consumer_rate": "B rate",
         "rho": "rho", "message_bytes": "msg size", "replicas": "replicas", "arrival": "arrival", "streams": "streams",
         "image_size": "image", "preprocess": "preproc", "pipeline": "pipeline", "batch_max": "batch",
         "duration_s": "duration s", "service_mode": "service", "broker_opt": "options", "broker_nodes": "nodes",
         "delivery": "delivery", "ack": "ack"}


def broker_order(names_: list[str]) -> list[str]:
    """The registry's display order, then any broker the registry does not know, by name."""
    known = brokers.names()
    return [b for b in known if b in names_] + sorted(b for b in set(names_) if b not in known)


# -- reading ----------------------------------------------------------------------------------------
def run_folders(dirs: list[str]) -> list[str]:
    out = []
    for d in dirs:
        if not os.path.isdir(d):
            raise ConfigError(f"{d!r} is not a folder")
        for root, subdirs, files in os.walk(d):
            subdirs[:] = sorted(s for s in subdirs if not s.startswith("_"))
            if "summary.csv" in files:
                out.append(root)
    return out


def _value(text: str):
    if text is None:
        return None
    t = text.strip()
    if t.lower() in ("true", "false"):
        return t.lower() == "true"
    if t == "":
        return math.nan
    try:
        return int(t)
    except ValueError:
        pass
    try:
        return float(t)
    except ValueError:
        return t


def read_run(run_dir: str) -> dict | None:
    with open(os.path.join(run_dir, "summary.csv"), newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return None
    row = {k: _value(v) for k, v in rows[0].items()}
    row["run_dir"] = run_dir
    cfg = {}
    try:
        with open(os.path.join(run_dir, "run.json"), encoding="utf-8") as fh:
            cfg = json.load(fh).get("config", {})
    except (OSError, ValueError):
        pass
    vision = row.get("pipeline") == "vision"
    for k in VISION_KEYS:
        row[k] = str(cfg.get(k, "")) if vision else ""
    opts = cfg.get("broker_opt") or {}
    row["broker_opt"] = ",".join(f"{k}={v}" for k, v in sorted(opts.items()))
    try:
        with open(os.path.join(run_dir, "sweep.json"), encoding="utf-8") as fh:
            sw = json.load(fh)
        row["sweep"] = sw.get("sweep", "")
        row["repetition"] = sw.get("repetition", math.nan)
    except (OSError, ValueError):
        row["sweep"] = ""
        row["repetition"] = math.nan
    return row


def load(dirs: list[str]):
    """(all runs, complete runs) as DataFrames."""
    import pandas as pd
    folders = run_folders(dirs)
    rows = [r for r in (read_run(f) for f in folders) if r is not None]
    if not rows:
        raise ConfigError(f"no run folders (with summary.csv) below {', '.join(dirs)}")
    df = pd.DataFrame(rows)
    for c in CONFIG:
        if c not in df.columns:
            df[c] = ""
    df["streams"] = pd.to_numeric(df["streams"], errors="coerce").fillna(1)  # a run from before camera streams had one
    df["broker_nodes"] = pd.to_numeric(df["broker_nodes"], errors="coerce").fillna(1)  # before clusters: one node
    for c in TEXT_COLUMNS + ["error"]:
        df[c] = df[c].astype(object).where(df[c].notna(), "").astype(str) if c in df.columns else ""
    complete = df[df["complete"] == True].copy()  # noqa: E712 - a column of booleans
    return df, complete


# -- grouping ---------------------------------------------------------------------------------------
#: Configuration that follows the broker (its options, its default delivery and ack mode): different
#: between brokers by nature, so it only "varies" where one broker has several values.
PER_BROKER = ("broker_opt", "delivery", "ack")


def varying(df, cols: list[str]) -> list[str]:
    def differs(c):
        v = df[c].astype(str)
        if c in PER_BROKER and "broker" in df.columns:
            return bool((v.groupby(df["broker"]).nunique() > 1).any())
        return v.nunique() > 1
    return [c for c in cols if c in df.columns and differs(c)]


#: Settings of the synthetic stages only: a vision run records their defaults, which mean nothing there
#: (its stages' own times are measured; its load is the measured ``rho_measured``).
SYNTHETIC_ONLY = ("rho", "producer_rate", "consumer_rate", "service_dist", "service_mode")


def shown_config(df) -> list[str]:
    """The configuration columns worth showing: those that differ between groups (for vision runs alone,
    not the synthetic stages' settings)."""
    cols = [c for c in varying(df, CONFIG) if c not in DERIVED]
    if "pipeline" in df.columns and len(df) and (df["pipeline"].astype(str) == "vision").all():
        cols = [c for c in cols if c not in SYNTHETIC_ONLY]
    return cols


def step_columns(df) -> list[str]:
    """Per-step columns of vision runs: ``a_<step>_ms`` (stage A, per frame), ``b_<step>_ms`` (stage B)."""
    return [c for c in df.columns if c[:2] in ("a_", "b_") and c.endswith("_ms")]


def _key_frame(df):
    k = df[["broker"] + CONFIG].copy()
    for c in k.columns:  # a missing value (a run from before a column existed) is "": pandas 3 keeps NaN in astype(str)
        k[c] = k[c].astype(object).where(k[c].notna(), "").astype(str)
    return k


def group(complete):
    """One row per (broker, configuration): median/min/max of every metric, machine and impl checks."""
    import pandas as pd
    keys = _key_frame(complete)
    complete = complete.assign(_key=keys.apply(lambda r: "|".join(r.values), axis=1))
    out, warnings = [], []
    steps = step_columns(complete)
    for _, g in complete.groupby("_key", sort=False):
        first = g.iloc[0]
        row = {"broker": first["broker"]}
        for c in CONFIG:
            row[c] = first[c]
        for c in TEXT_COLUMNS:
            row[c] = " | ".join(sorted(v for v in set(g[c]) if v))
        machines = sorted(set(g["machine"]))
        impls = sorted(set(g["broker_impl"]))
        row["mixed"] = len(machines) > 1 or len(impls) > 1
        if row["mixed"]:
            what = []
            if len(machines) > 1:
                what.append(f"machines {', '.join(machines)}")
            if len(impls) > 1:
                what.append(f"broker implementations {', '.join(impls)}")
            warnings.append(f"{first['broker']} ({config_label(first, varying(complete, CONFIG)) or 'one configuration'}):"
                            " the group mixes " + " and ".join(what))
        row["runs"] = len(g)
        row["stable_runs"] = int((g["stable"] == True).sum())  # noqa: E712
        for m in ALL_METRICS:
            v = pd.to_numeric(g[m], errors="coerce") if m in g.columns else pd.Series([math.nan])
            row[f"{m}_median"] = float(v.median())
            row[f"{m}_min"] = float(v.min())
            row[f"{m}_max"] = float(v.max())
        for s in steps:
            row[s] = float(pd.to_numeric(g[s], errors="coerce").median())
        row["offered_msgs"] = float(first["offered_rate"]) * float(first["fanout_mean"])
        row["run_dirs"] = ";".join(g["run_dir"])
        out.append(row)
    table = pd.DataFrame(out)
    order = {b: i for i, b in enumerate(broker_order(list(table["broker"])))}
    table["_o"] = table["broker"].map(order)
    sort_cols = ["_o", "broker"] + shown_config(table)
    table = table.sort_values(sort_cols, kind="stable").drop(columns="_o").reset_index(drop=True)
    machines = sorted(set(complete["machine"]))
    if len(machines) > 1:
        warnings.append(f"the runs come from {len(machines)} machines ({', '.join(machines)}): compare rows from "
                        "different machines with care")
    per_broker = complete.groupby("broker")["broker_impl"].nunique()
    for b, n in per_broker.items():
        if n > 1:
            warnings.append(f"broker {b} ran as {n} implementations "
                            f"({', '.join(sorted(set(complete[complete['broker'] == b]['broker_impl'])))})")
    return table, warnings


# -- labels -----------------------------------------------------------------------------------------
def _fmt_bytes(v) -> str:
    try:
        n = float(v)
    except (TypeError, ValueError):
        return str(v)
    for unit, f in (("MB", 2**20), ("KB", 2**10)):
        if n >= f:
            return f"{n / f:g} {unit}" if (n / f) == int(n / f) else f"{n / f:.1f} {unit}"
    return f"{n:g} B"


def fmt_cell(c: str, v) -> str:
    if c == "message_bytes":
        return _fmt_bytes(v)
    if c == "rho" and isinstance(v, (int, float)):
        return f"{v:.2f}"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def config_label(row, cols: list[str]) -> str:
    return ", ".join(f"{SHORT.get(c, c)} {fmt_cell(c, row[c])}" for c in cols if str(row[c]) != "")


# -- where a message's time goes ----------------------------------------------------------------------
QUEUE = "queued for stage B"
HOP = "broker hop"
TRANSIT = "broker transit (queue + hop)"
WAIT = "batch wait in stage B"


def breakdown(table) -> list[tuple[str, str, list[float]]]:
    """The per-step medians of vision groups, in path order: (label, kind, one value in ms per row).

    kind is ``A`` or ``B`` for a stage's steps (stage A per frame, stage B per batch), ``queue``,
    ``hop`` and ``wait`` for the harness's per-message figures. Queueing for stage B and the broker's
    hop are apart; a run without them (older results) shows its whole transit as ``transit``.
    """
    import numpy as np

    def col(name):
        return table[name].astype(float).to_numpy() if name in table.columns else np.full(len(table), np.nan)

    steps = [c for c in step_columns(table) if table[c].notna().any()]
    queue, hop, transit = col("queue_p50_ms_median"), col("hop_p50_ms_median"), col("transit_p50_ms_median")
    split = ~(np.isnan(queue) & np.isnan(hop))
    parts = [(f"A {c[2:-3]}", "A", col(c)) for c in steps if c.startswith("a_")]
    parts += [(QUEUE, "queue", np.where(split, queue, np.nan)), (HOP, "hop", np.where(split, hop, np.nan)),
              (TRANSIT, "transit", np.where(split, np.nan, transit)), (WAIT, "wait", col("wait_p50_ms_median"))]
    parts += [(f"B {c[2:-3]}", "B", col(c)) for c in steps if c.startswith("b_")]
    return [(label, kind, [float(x) for x in v]) for label, kind, v in parts if not np.isnan(v).all()]
