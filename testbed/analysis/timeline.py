"""Fault runs in the comparison: one timeline plot per run and a table per broker and fault type.

    timeline-<run>.png   three panels against time: offered and out rate (messages/s), backlog, window
                         p99 of e2e (ms, log scale); every fault's window shaded and named
    faults.csv           (the comparison's) one row per broker, delivery mode and fault kind: how many
                         faults, recovery_s median and worst, backlog peak, throughput dip, redelivered
                         and lost_acked summed over those faults; lost_unacked and duplicated summed
                         over the runs (run-level figures: a run with several kinds counts in each)

Both read each run's own faults.csv and timeseries.csv (testbed/faults/recovery.py writes them); runs
without faults are left out.
"""
from __future__ import annotations

import math
import os

from testbed.analysis.report import atomic_write

TABLE_COLUMNS = ["broker", "delivery", "kind", "faults", "runs", "recovered", "recovery_s_median",
                 "recovery_s_max", "backlog_peak_max", "throughput_dip_max", "redelivered", "lost_acked",
                 "lost_unacked", "duplicated"]


def fault_runs(complete) -> list:
    """Rows (pandas Series) of runs that carry a faults.csv."""
    out = []
    for _, r in complete.iterrows():
        if os.path.exists(os.path.join(str(r["run_dir"]), "faults.csv")):
            out.append(r)
    return out


def _read_faults(run_dir: str):
    import pandas as pd
    return pd.read_csv(os.path.join(run_dir, "faults.csv"), keep_default_na=True)


def timeline_figure(row):
    """The timeline of one fault run (``row``: its summary row with ``run_dir``), or None."""
    import pandas as pd
    from testbed.analysis.plots import _finish, _log_axis, _plt
    d = str(row["run_dir"])
    p = os.path.join(d, "timeseries.csv")
    if not os.path.exists(p):
        return None
    ts = pd.read_csv(p)
    faults = _read_faults(d)
    plt = _plt()
    fig, axes = plt.subplots(3, 1, figsize=(9, 7), sharex=True, layout="constrained")
    t = ts["t_s"] + 0.5  # the middle of each second
    fan = float(row.get("fanout_mean", 1) or 1)
    axes[0].plot(t, ts["offered_frames"] * fan, color="grey", lw=1, ls="--", label="offered")
    axes[0].plot(t, ts["consumed"], color="tab:blue", lw=1.5, label="out")
    axes[0].set_ylabel("messages/s")
    axes[1].plot(t, ts["backlog"], color="tab:orange", lw=1.5, label="backlog")
    if "broker_backlog" in ts:
        axes[1].plot(t, ts["broker_backlog"], color="tab:purple", lw=1, ls=":", label="broker's backlog")
    axes[1].set_ylabel("backlog (messages)")
    p99 = ts["e2e_p99_ms"].where(ts["e2e_p99_ms"] > 0)
    axes[2].plot(t, p99, color="tab:red", lw=1.5, label="window p99")
    axes[2].set_yscale("log")
    _log_axis(axes[2], "y")
    axes[2].set_ylabel("e2e p99 in the second (ms, log)")
    axes[2].set_xlabel("time since the load started (s)")
    end_t = float(ts["t_s"].max() + 1) if len(ts) else 0.0
    for i, f in faults.iterrows():
        start = float(f["start_s"])
        end = float(f["end_s"]) if not _missing(f["end_s"]) else end_t
        for ax in axes:
            ax.axvspan(start, max(end, start + 0.1), color="tab:red", alpha=0.12, lw=0)
        axes[0].annotate(str(f["kind"]), (start, 1.0), xycoords=("data", "axes fraction"), fontsize=7,
                         rotation=90, va="top", ha="right")
    for ax in axes:
        ax.legend(loc="upper right")
    title = (f"{row['broker']}, {row.get('delivery') or 'broker default'}: {os.path.basename(d)} "
             f"(shaded: fault windows)")
    return _finish(fig, title)


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or str(v) == ""


def _true(v) -> bool:
    return v is True or str(v).strip().lower() == "true"


def fault_table(complete) -> list[dict]:
    """One row per broker, delivery mode and fault kind (see the module docstring)."""
    groups: dict[tuple, dict] = {}
    for r in fault_runs(complete):
        faults = _read_faults(str(r["run_dir"]))
        delivery = r.get("delivery") if not _missing(r.get("delivery")) else "default"
        for kind, g in faults.groupby("kind"):
            key = (r["broker"], delivery, kind)
            e = groups.setdefault(key, {"broker": key[0], "delivery": key[1], "kind": kind, "faults": 0, "runs": 0,
                                        "recovered": 0, "_rec": [], "backlog_peak_max": 0,
                                        "throughput_dip_max": 0.0, "redelivered": 0, "lost_acked": 0,
                                        "lost_unacked": 0, "duplicated": 0})
            e["faults"] += len(g)
            e["runs"] += 1
            # a recovery that did not finish is a lower bound (faults.csv recovery_lower_bound): counted
            # as not recovered and kept out of the median and worst, which are of recoveries measured
            done = [_true(ok) and not _missing(x) for ok, x in zip(g["recovered"], g["recovery_s"])]
            rec = [float(x) for x, ok in zip(g["recovery_s"], done) if ok]
            e["_rec"] += rec
            e["recovered"] += len(rec)
            e["backlog_peak_max"] = max(e["backlog_peak_max"], int(g["backlog_peak"].max()))
            dips = [float(x) for x in g["throughput_dip"] if not _missing(x)]
            e["throughput_dip_max"] = max([e["throughput_dip_max"], *dips])
            e["redelivered"] += int(g["redelivered"].sum())
            e["lost_acked"] += int(g["lost_acked"].sum())
            e["lost_unacked"] += int(r.get("lost_unacked") or 0)
            e["duplicated"] += int(r.get("duplicated") or 0)
    rows = []
    for e in groups.values():
        rec = sorted(e.pop("_rec"))
        e["recovery_s_median"] = round(rec[len(rec) // 2], 3) if rec else math.nan
        e["recovery_s_max"] = round(rec[-1], 3) if rec else math.nan
        rows.append(e)
    from testbed.analysis.groups import broker_order
    order = {b: i for i, b in enumerate(broker_order(list({r["broker"] for r in rows})))}
    return sorted(rows, key=lambda r: (order.get(r["broker"], 99), str(r["delivery"]), r["kind"]))


def markdown_table(rows: list[dict]) -> str:
    head = "| " + " | ".join(TABLE_COLUMNS) + " |\n|" + "---|" * len(TABLE_COLUMNS) + "\n"
    return head + "".join("| " + " | ".join(_cell(r.get(c)) for c in TABLE_COLUMNS) + " |\n" for r in rows)


def _cell(v) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:g}"
    return str(v)


def write(complete, out: str) -> tuple[list[str], list[dict]]:
    """The timelines (one per fault run) and the comparison's faults.csv; (paths written, table rows)."""
    from testbed.analysis.plots import save
    rows = fault_table(complete)
    if not rows:
        return [], []
    paths = []
    for r in fault_runs(complete):
        fig = timeline_figure(r)
        if fig is not None:
            paths.append(save(fig, os.path.join(out, f"timeline-{os.path.basename(str(r['run_dir']))}.png")))
    import csv
    path = os.path.join(out, "faults.csv")
    with atomic_write(path) as fh:
        w = csv.writer(fh)
        w.writerow(TABLE_COLUMNS)
        for r in rows:
            w.writerow([_cell(r.get(c)) for c in TABLE_COLUMNS])
    return paths + [path], rows
