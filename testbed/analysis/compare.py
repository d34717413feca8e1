"""``python -m testbed.compare DIR [DIR...]``: one table and a few plots from many run folders.

    python -m testbed.compare results/broker_compare
    python -m testbed.compare results/a results/b --out docs/results --html

Reads every run folder below the given folders (a folder holding summary.csv; ``run.json``,
``sweep.json``, ``timeseries.csv`` and ``messages.csv`` where present; folders whose name starts with
``_``, such as a sweep's ``_incomplete/``, are skipped). Only complete runs are compared; incomplete
ones are counted and named in a warning.

Runs are grouped by broker and configuration (every run setting except the seed); each group shows the
median over its repetitions and the spread (min-max). Machine and broker implementation are shown and
never silently mixed: a group (or the whole table) that holds runs from more than one machine or broker
implementation gets a warning.

Writes to ``--out`` (default DIR/compare): ``compare.csv`` (one row per group: median/min/max of every
metric) and PNG plots: ``latency_cdf.png`` (e2e latency CDF per broker, one panel per configuration, from
messages.csv; lost messages keep the curve below 1), ``p99_vs_load.png`` and ``throughput_vs_load.png``
(per broker against the offered rate, or against rho when the offered rate is the same everywhere),
``backlog.png`` (backlog over time for one configuration: ``--backlog-config`` or the most overloaded)
and, for vision runs, ``breakdown.png`` (stacked per-step medians plus broker transit and wait).
``--html`` also writes ``report.html``, one self-contained page with the plots embedded. ``--markdown
FILE`` writes the table and plot links into FILE between two marker comments, keeping the rest of the
file (how docs/results.md is regenerated).
"""
from __future__ import annotations

import argparse
import base64
import csv
import html
import json
import math
import os
import sys

from testbed.errors import ConfigError, TestbedError

METRICS = ["e2e_p50_ms", "e2e_p99_ms", "throughput_out", "backlog_growth", "lost"]
EXTRA_METRICS = ["throughput_in", "e2e_p90_ms", "e2e_p999_ms", "e2e_max_ms", "frame_p99_ms", "backlog_max",
                 "publish_delay_p99_ms", "transit_p50_ms", "transit_p99_ms", "wait_p50_ms", "wait_p99_ms",
                 "service_p50_ms", "received", "sent", "duplicated"]
CONFIG = ["pipeline", "arrival", "offered_rate", "fanout", "fanout_mean", "producer_rate", "consumer_rate",
          "rho", "replicas", "batch_max", "batch_wait_ms", "service_dist", "service_mode", "message_bytes",
          "duration_s", "warmup_s", "image_size", "preprocess", "detector", "classifier", "device",
          "broker_opt"]
VISION_KEYS = ("image_size", "preprocess", "detector", "classifier", "device")
SHORT = {"offered_rate": "frames/s", "fanout": "fan-out", "producer_rate": "A rate", "consumer_rate": "B rate",
         "rho": "rho", "message_bytes": "msg size", "replicas": "replicas", "arrival": "arrival",
         "image_size": "image", "preprocess": "preproc", "pipeline": "pipeline", "batch_max": "batch",
         "duration_s": "duration s", "service_mode": "service", "broker_opt": "options"}
BROKER_ORDER = ["inproc", "zeromq", "redis", "rabbitmq", "kafka"]


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
    for c in ("machine", "broker_impl", "error"):
        df[c] = df[c].astype(object).where(df[c].notna(), "").astype(str) if c in df.columns else ""
    complete = df[df["complete"] == True].copy()  # noqa: E712 - a column of booleans
    return df, complete


# -- grouping ---------------------------------------------------------------------------------------
def varying(df, cols: list[str]) -> list[str]:
    return [c for c in cols if c in df.columns and df[c].astype(str).nunique() > 1]


def _key_frame(df):
    k = df[["broker"] + CONFIG].copy()
    for c in k.columns:
        k[c] = k[c].astype(str)
    return k


def group(complete):
    """One row per (broker, configuration): median/min/max of every metric, machine and impl checks."""
    import pandas as pd
    keys = _key_frame(complete)
    complete = complete.assign(_key=keys.apply(lambda r: "|".join(r.values), axis=1))
    out, warnings = [], []
    metrics = [m for m in METRICS + EXTRA_METRICS if m in complete.columns]
    steps = [c for c in complete.columns if (c.startswith("a_") or c.startswith("b_")) and c.endswith("_ms")]
    for _, g in complete.groupby("_key", sort=False):
        first = g.iloc[0]
        row = {"broker": first["broker"]}
        for c in CONFIG:
            row[c] = first[c]
        machines = sorted(set(g["machine"]))
        impls = sorted(set(g["broker_impl"]))
        row["machine"] = " | ".join(machines)
        row["broker_impl"] = " | ".join(impls)
        row["mixed"] = len(machines) > 1 or len(impls) > 1
        if row["mixed"]:
            what = []
            if len(machines) > 1:
                what.append(f"machines {', '.join(machines)}")
            if len(impls) > 1:
                what.append(f"broker implementations {', '.join(impls)}")
            warnings.append(f"{first['broker']} ({config_label(first, varying(complete, CONFIG)) or 'one configuration'}):"
                            " the group mixes "
                            + " and ".join(what))
        row["runs"] = len(g)
        row["stable_runs"] = int((g["stable"] == True).sum())  # noqa: E712
        for m in metrics:
            v = pd.to_numeric(g[m], errors="coerce")
            row[f"{m}_median"] = float(v.median())
            row[f"{m}_min"] = float(v.min())
            row[f"{m}_max"] = float(v.max())
        for s in steps:
            row[s] = float(pd.to_numeric(g[s], errors="coerce").median())
        row["offered_msgs"] = float(first["offered_rate"]) * float(first["fanout_mean"])
        row["run_dirs"] = ";".join(g["run_dir"])
        out.append(row)
    table = pd.DataFrame(out)
    order = {b: i for i, b in enumerate(BROKER_ORDER)}
    table["_o"] = table["broker"].map(lambda b: order.get(b, len(order)))
    sort_cols = ["_o", "broker"] + [c for c in varying(table, CONFIG) if c not in ("consumer_rate", "fanout_mean")]
    table = table.sort_values(sort_cols, kind="stable").drop(columns="_o").reset_index(drop=True)
    for col, what in (("machine", "machines"), ("broker_impl", "broker implementations")):
        vals = sorted(set(complete[col]))
        if col == "machine" and len(vals) > 1:
            warnings.append(f"the runs come from {len(vals)} {what} ({', '.join(vals)}): compare rows from "
                            "different machines with care")
    per_broker = complete.groupby("broker")["broker_impl"].nunique()
    for b, n in per_broker.items():
        if n > 1:
            warnings.append(f"broker {b} ran as {n} implementations "
                            f"({', '.join(sorted(set(complete[complete['broker'] == b]['broker_impl'])))})")
    return table, warnings


def _fmt_bytes(v) -> str:
    try:
        n = float(v)
    except (TypeError, ValueError):
        return str(v)
    for unit, f in (("MB", 2**20), ("KB", 2**10)):
        if n >= f:
            return f"{n / f:g} {unit}" if (n / f) == int(n / f) else f"{n / f:.1f} {unit}"
    return f"{n:g} B"


def _fmt_cell(c: str, v) -> str:
    if c == "message_bytes":
        return _fmt_bytes(v)
    if c == "rho" and isinstance(v, (int, float)):
        return f"{v:.2f}"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def config_label(row, cols: list[str]) -> str:
    return ", ".join(f"{SHORT.get(c, c)} {_fmt_cell(c, row[c])}" for c in cols if str(row[c]) != "")


# -- the table ---------------------------------------------------------------------------------------
def _spread(row, m: str, nd: int) -> str:
    med, lo, hi = row[f"{m}_median"], row[f"{m}_min"], row[f"{m}_max"]
    if med is None or (isinstance(med, float) and math.isnan(med)):
        return "-"
    if row["runs"] < 2 or lo == hi:
        return f"{med:.{nd}f}"
    return f"{med:.{nd}f} [{lo:.{nd}f}, {hi:.{nd}f}]"


def rich_table(table, title: str):
    from rich.table import Table
    shown = [c for c in varying(table, CONFIG) if c not in ("fanout_mean", "consumer_rate")] or ["offered_rate"]
    t = Table(title=title, caption="median over repetitions [min, max]; latency in ms, rates in msg/s",
              show_lines=False)
    for c in ["broker", "broker impl", "machine"] + [SHORT.get(c, c) for c in shown]:
        t.add_column(c, overflow="fold")
    for c in ("runs", "e2e p50 ms", "e2e p99 ms", "out msg/s", "backlog growth msg/s", "lost", "stable"):
        t.add_column(c, justify="right")
    for _, r in table.iterrows():
        flag = " (!)" if r["mixed"] else ""
        t.add_row(r["broker"] + flag, r["broker_impl"], r["machine"], *[_fmt_cell(c, r[c]) for c in shown],
                  str(r["runs"]), _spread(r, "e2e_p50_ms", 2), _spread(r, "e2e_p99_ms", 2),
                  _spread(r, "throughput_out", 1), _spread(r, "backlog_growth", 1), _spread(r, "lost", 0),
                  f"{r['stable_runs']}/{r['runs']}")
    return t


def wide_console():
    """A rich console; when output is not a terminal (a file, a pipe), wide enough for the table."""
    from rich.console import Console
    c = Console()
    return c if c.is_terminal else Console(width=200)


# -- plots ------------------------------------------------------------------------------------------
def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcParams.update({"font.size": 10, "axes.grid": True, "grid.alpha": 0.3, "figure.dpi": 110})
    return plt


def _colors(brokers_: list[str]) -> dict:
    import matplotlib
    cmap = matplotlib.colormaps["tab10"]
    known = {b: cmap(i) for i, b in enumerate(BROKER_ORDER)}
    extra = [b for b in brokers_ if b not in known]
    for i, b in enumerate(extra):
        known[b] = cmap((len(BROKER_ORDER) + i) % 10)
    return known


def _panels(n: int):
    cols = min(3, max(1, n))
    rows = int(math.ceil(n / cols))
    return rows, cols


def _x_axis(table) -> tuple[str, str, list[str]]:
    """(x column, x label, panel columns): offered msg/s when it varies, else rho."""
    load_cols = ("offered_rate", "fanout_mean", "consumer_rate", "rho", "producer_rate")
    panel_cols = [c for c in varying(table, CONFIG) if c not in load_cols]
    if table["offered_msgs"].nunique() > 1:
        # several offered rates on x; where rho also varies at one rate (consumer set relative to the
        # rate), one panel per rho
        if table.groupby("offered_msgs")["rho"].nunique().max() > 1:
            panel_cols.append("rho")
        return "offered_msgs", "offered rate (messages/s to the broker)", panel_cols
    return "rho", "offered load rho = offered msg/s / stage B capacity", panel_cols


def _panel_groups(table, panel_cols):
    if not panel_cols:
        return [("all runs", table)]
    out = []
    for _, g in table.groupby([table[c].astype(str) for c in panel_cols], sort=False):
        out.append((config_label(g.iloc[0], panel_cols), g))
    return out


def plot_vs_load(table, path: str, metric: str, ylabel: str, title: str, logy: bool, reference: bool) -> str:
    plt = _plt()
    xcol, xlabel, panel_cols = _x_axis(table)
    groups = _panel_groups(table, panel_cols)
    rows, cols = _panels(len(groups))
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.8 * rows), squeeze=False)
    colors = _colors(list(table["broker"].unique()))
    for ax, (label, g) in zip(axes.flat, groups):
        for b, gb in g.groupby("broker", sort=False):
            gb = gb.sort_values(xcol)
            x = gb[xcol].astype(float)
            y = gb[f"{metric}_median"].astype(float)
            lo = (y - gb[f"{metric}_min"].astype(float)).clip(lower=0)
            hi = (gb[f"{metric}_max"].astype(float) - y).clip(lower=0)
            ax.errorbar(x, y, yerr=[lo, hi], marker="o", capsize=3, label=b, color=colors[b])
        if reference:
            xs = sorted(set(g[xcol].astype(float)))
            if xcol == "offered_msgs":
                ax.plot(xs, xs, "k--", lw=1, label="offered")
            else:
                offered = float(g["offered_msgs"].iloc[0])
                ax.axhline(offered, color="k", ls="--", lw=1, label="offered")
                caps = [offered / x for x in xs if x > 0]
                if caps:
                    ax.plot([x for x in xs if x > 0], caps, "k:", lw=1, label="stage B capacity")
        if logy:
            ax.set_yscale("log")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(groups):]:
        ax.set_visible(False)
    fig.suptitle(title + " (median, bars: min-max over repetitions)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _e2e_ms(run_dir: str, warmup_s: float):
    """(latencies in ms of messages due after the warm-up, number lost among them) from messages.csv."""
    import numpy as np
    import pandas as pd
    p = os.path.join(run_dir, "messages.csv")
    if not os.path.exists(p):
        return None, 0
    m = pd.read_csv(p, usecols=["intended_ns", "e2e_us", "status"])
    m = m[m["intended_ns"] >= warmup_s * 1e9]
    ok = m[m["status"] == "ok"]["e2e_us"].to_numpy(dtype=float) / 1e3
    return ok[np.isfinite(ok)], int((m["status"] == "lost").sum())


def plot_cdf(table, path: str, max_panels: int = 9) -> str | None:
    import numpy as np
    plt = _plt()
    panel_cols = [c for c in varying(table, CONFIG) if c not in ("fanout_mean", "consumer_rate")]
    groups = _panel_groups(table, panel_cols)[:max_panels]
    rows, cols = _panels(len(groups))
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.8 * rows), squeeze=False)
    colors = _colors(list(table["broker"].unique()))
    drawn = 0
    for ax, (label, g) in zip(axes.flat, groups):
        in_panel = 0
        for _, r in g.iterrows():
            lat, lost = [], 0
            for d in r["run_dirs"].split(";"):
                v, n_lost = _e2e_ms(d, float(r["warmup_s"]))
                if v is not None:
                    lat.append(v)
                    lost += n_lost
            if not lat:
                continue
            v = np.sort(np.concatenate(lat))
            if len(v) == 0:
                continue
            total = len(v) + lost
            y = np.arange(1, len(v) + 1) / total
            ax.plot(np.maximum(v, 1e-3), y, label=f"{r['broker']}" + (f" ({lost} lost)" if lost else ""),
                    color=colors[r["broker"]], lw=1.5)
            drawn += 1
            in_panel += 1
        if not in_panel:
            ax.text(0.5, 0.5, "no messages.csv in these runs", ha="center", va="center", transform=ax.transAxes)
            ax.set_title(label, fontsize=10)
            continue
        ax.set_xscale("log")
        ax.set_ylim(0, 1.01)
        ax.axhline(0.99, color="grey", ls=":", lw=1)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("end-to-end latency (ms, log scale)")
        ax.set_ylabel("fraction of messages")
        ax.legend(fontsize=8, loc="lower right")
    for ax in list(axes.flat)[len(groups):]:
        ax.set_visible(False)
    if not drawn:
        plt.close(fig)
        return None
    fig.suptitle("End-to-end latency CDF per broker (all repetitions pooled; dotted line: p99)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def choose_backlog_config(table, spec: str | None):
    """The rows (one per broker) of the configuration whose backlog to plot."""
    cfg_cols = [c for c in CONFIG if c != "broker_opt"]
    if spec:
        sel = table
        for part in spec.split(","):
            if "=" not in part:
                raise ConfigError(f"--backlog-config {spec!r}: expected KEY=VALUE[,KEY=VALUE]")
            k, v = (x.strip() for x in part.split("=", 1))
            if k not in table.columns:
                raise ConfigError(f"--backlog-config: unknown key {k!r}; use one of {', '.join(cfg_cols)}")
            col = table[k]
            try:
                sel = sel[(col.astype(float) - float(v)).abs() < 1e-9 * max(1.0, abs(float(v)))]
            except ValueError:
                sel = sel[col.astype(str) == v]
        if sel.empty:
            raise ConfigError(f"--backlog-config {spec!r} matches no configuration")
        key = sel.iloc[0]
    else:
        key = table.sort_values(["rho", "message_bytes", "offered_msgs"], ascending=False, kind="stable").iloc[0]
    same = table
    for c in cfg_cols:
        same = same[same[c].astype(str) == str(key[c])]
    return same


def plot_backlog(table, path: str, spec: str | None) -> str | None:
    import pandas as pd
    plt = _plt()
    rows = choose_backlog_config(table, spec)
    colors = _colors(list(table["broker"].unique()))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    drawn = 0
    for _, r in rows.iterrows():
        d = sorted(r["run_dirs"].split(";"))[0]
        p = os.path.join(d, "timeseries.csv")
        if not os.path.exists(p):
            continue
        ts = pd.read_csv(p)
        ax.plot(ts["t_s"] + 1, ts["backlog"], label=r["broker"], color=colors[r["broker"]], lw=1.5)
        drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    first = rows.iloc[0]
    ax.axvline(float(first["duration_s"]), color="k", ls="--", lw=1, label="load stops")
    ax.axvspan(0, float(first["warmup_s"]), color="grey", alpha=0.15, label="warm-up")
    label = config_label(first, [c for c in varying(table, CONFIG) if c not in ("fanout_mean", "consumer_rate")]
                         or ["offered_rate", "rho"])
    ax.set_title(f"Backlog over time: {label} (first repetition)", fontsize=10)
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("backlog (messages published, not yet finished)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_breakdown(table, path: str) -> str | None:
    """Stacked per-step medians for vision runs: stage A steps, broker transit, wait, stage B steps."""
    import numpy as np
    plt = _plt()
    vis = table[table["pipeline"].astype(str) == "vision"]
    if vis.empty:
        return None
    a = [c for c in vis.columns if c.startswith("a_") and c.endswith("_ms") and vis[c].notna().any()]
    b = [c for c in vis.columns if c.startswith("b_") and c.endswith("_ms") and vis[c].notna().any()]
    parts = [(c, f"A {c[2:-3]}") for c in a] + [("transit_p50_ms_median", "broker transit"),
                                                ("wait_p50_ms_median", "wait in stage B")] + \
            [(c, f"B {c[2:-3]}") for c in b]
    labels_cols = [c for c in varying(vis, CONFIG) if c not in ("fanout_mean", "consumer_rate")]
    names = [f"{r['broker']}" + (f"\n{config_label(r, labels_cols)}" if labels_cols else "")
             for _, r in vis.iterrows()]
    fig, ax = plt.subplots(figsize=(10, max(3.5, 1.2 + (0.6 + 0.2 * len(labels_cols)) * len(vis))))
    left = np.zeros(len(vis))
    cmap = plt.get_cmap("tab20")
    for i, (col, label) in enumerate(parts):
        vals = vis[col].astype(float).fillna(0).to_numpy() if col in vis.columns else np.zeros(len(vis))
        ax.barh(names, vals, left=left, label=label, color=cmap(i % 20))
        left += vals
    ax.set_xlabel("median time (ms): stage A steps per frame, broker and wait per message, stage B steps per batch")
    ax.set_title("Where the time goes: per-step medians (vision pipeline)")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# -- HTML -----------------------------------------------------------------------------------------------
def write_html(path: str, title: str, table_df, warnings: list[str], images: list[str], notes: list[str]) -> None:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;"
             "font-size:12px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
             ".warn{color:#a40}img{max-width:100%;margin:1em 0;border:1px solid #eee}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    for n in notes:
        parts.append(f"<p>{html.escape(n)}</p>")
    for w in warnings:
        parts.append(f"<p class='warn'>warning: {html.escape(w)}</p>")
    parts.append(table_df.to_html(index=False, float_format=lambda v: f"{v:.3g}", na_rep="-"))
    for img in images:
        with open(img, "rb") as fh:
            data = base64.b64encode(fh.read()).decode()
        parts.append(f"<h2>{html.escape(os.path.basename(img))}</h2><img alt='{html.escape(os.path.basename(img))}' "
                     f"src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write("\n".join(parts))
    os.replace(tmp, path)


# -- Markdown (docs/results.md) ----------------------------------------------------------------------
MD_START = "<!-- compare:generated:start -->"
MD_END = "<!-- compare:generated:end -->"


def _environment(complete) -> list[str]:
    """One line per machine, from the runs' run.json."""
    seen, lines = set(), []
    for d in complete["run_dir"]:
        try:
            with open(os.path.join(d, "run.json"), encoding="utf-8") as fh:
                env = json.load(fh).get("environment", {})
        except (OSError, ValueError):
            continue
        key = (env.get("machine"), env.get("platform"), env.get("cpu_count"))
        if key in seen:
            continue
        seen.add(key)
        lines.append(f"`{env.get('machine', '?')}`: {env.get('cpu_count', '?')} CPUs, {env.get('platform', '?')}, "
                     f"Python {env.get('python', '?')}")
    return lines


def markdown_section(table, complete, warnings: list[str], images: list[str], md_path: str,
                     command: str) -> str:
    """The generated part of a results page: machines, brokers, the table, warnings, the plots."""
    shown = [c for c in varying(table, CONFIG) if c not in ("fanout_mean", "consumer_rate")] or ["offered_rate"]
    head = ["broker", "broker impl", "machine"] + [SHORT.get(c, c) for c in shown] + \
           ["runs", "e2e p50 ms", "e2e p99 ms", "out msg/s", "backlog growth msg/s", "lost", "stable"]
    lines = [MD_START, "", f"Generated by `{command}`.", "", "Machines:", ""]
    lines += [f"- {m}" for m in _environment(complete)] + [""]
    brokers_ = list(dict.fromkeys(table["broker"]))
    lines += [f"Brokers in these results: {', '.join(brokers_)} "
              f"({len(complete)} complete runs in {len(table)} groups).", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in table.iterrows():
        cells = [r["broker"] + (" (!)" if r["mixed"] else ""), r["broker_impl"], r["machine"]] + \
                [_fmt_cell(c, r[c]) for c in shown] + \
                [str(r["runs"]), _spread(r, "e2e_p50_ms", 2), _spread(r, "e2e_p99_ms", 2),
                 _spread(r, "throughput_out", 1), _spread(r, "backlog_growth", 1), _spread(r, "lost", 0),
                 f"{r['stable_runs']}/{r['runs']}"]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    lines += ["", "Median over repetitions, [min, max] where they differ; latency in ms, rates in messages/s.", ""]
    for w in warnings:
        lines.append(f"> warning: {w}")
    if warnings:
        lines.append("")
    base = os.path.dirname(os.path.abspath(md_path))
    for img in images:
        rel = os.path.relpath(os.path.abspath(img), base)
        name = os.path.splitext(os.path.basename(img))[0].replace("_", " ")
        lines += [f"![{name}]({rel})", ""]
    lines.append(MD_END)
    return "\n".join(lines)


def write_markdown(md_path: str, section: str) -> None:
    """Replace the generated section of ``md_path`` (text outside the markers is kept), or create it."""
    try:
        with open(md_path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        text = ""
    if MD_START in text and MD_END in text:
        before, rest = text.split(MD_START, 1)
        after = rest.split(MD_END, 1)[1]
        text = before + section + after
    else:
        text = (text.rstrip() + "\n\n" if text.strip() else "# Results\n\n") + section + "\n"
    os.makedirs(os.path.dirname(os.path.abspath(md_path)), exist_ok=True)
    tmp = md_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, md_path)


# -- command line ----------------------------------------------------------------------------------------
def compare(dirs: list[str], out: str, html_page: bool = False, backlog_config: str | None = None,
            console=None, markdown: str | None = None, command: str = "") -> dict:
    """Everything the command does; returns what it wrote (for tests and callers)."""
    console = console or wide_console()
    df, complete = load(dirs)
    incomplete = df[df["complete"] != True]  # noqa: E712
    warnings = []
    if len(incomplete):
        names = ", ".join(os.path.basename(str(d)) for d in incomplete["run_dir"][:5])
        more = "" if len(incomplete) <= 5 else f" and {len(incomplete) - 5} more"
        warnings.append(f"{len(incomplete)} incomplete run(s) left out: {names}{more}")
    if complete.empty:
        raise ConfigError(f"no complete runs below {', '.join(dirs)} ({len(df)} incomplete)")
    table, w = group(complete)
    warnings.extend(w)
    os.makedirs(out, exist_ok=True)
    csv_path = os.path.join(out, "compare.csv")
    table.to_csv(csv_path + ".tmp", index=False)
    os.replace(csv_path + ".tmp", csv_path)
    images = []
    for fn in (lambda: plot_cdf(table, os.path.join(out, "latency_cdf.png")),
               lambda: plot_vs_load(table, os.path.join(out, "p99_vs_load.png"), "e2e_p99_ms",
                                    "end-to-end p99 latency (ms, log scale)", "Tail latency per broker", True, False),
               lambda: plot_vs_load(table, os.path.join(out, "throughput_vs_load.png"), "throughput_out",
                                    "throughput out (messages/s)", "Throughput out per broker", False, True),
               lambda: plot_backlog(table, os.path.join(out, "backlog.png"), backlog_config),
               lambda: plot_breakdown(table, os.path.join(out, "breakdown.png"))):
        p = fn()
        if p:
            images.append(p)
    title = f"testbed comparison: {', '.join(dirs)}"
    console.print(rich_table(table, title))
    for w_ in warnings:
        console.print(f"[bold yellow]warning:[/] {w_}", highlight=False)
    machines = sorted(set(complete["machine"]))
    notes = [f"{len(complete)} complete runs in {len(table)} groups; machine(s): {', '.join(machines)}"]
    html_path = None
    if html_page:
        html_path = os.path.join(out, "report.html")
        shown = ["broker", "broker_impl", "machine"] + varying(table, CONFIG) + ["runs", "stable_runs"] + \
                [f"{m}_{s}" for m in METRICS for s in ("median", "min", "max")]
        write_html(html_path, title, table[[c for c in shown if c in table.columns]], warnings, images, notes)
    if markdown:
        write_markdown(markdown, markdown_section(table, complete, warnings, images, markdown,
                                                  command or "python -m testbed.compare " + " ".join(dirs)))
        console.print(f"updated the generated section of {markdown}", highlight=False)
    console.print(f"wrote {csv_path}" + "".join(f", {os.path.basename(i)}" for i in images)
                  + (f", {os.path.basename(html_path)}" if html_path else "") + f" in {out}", highlight=False)
    return {"table": table, "csv": csv_path, "images": images, "html": html_path, "warnings": warnings}


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv=None) -> int:
    p = _Parser(prog="python -m testbed.compare",
                description="Compare run folders: one table (median and min-max over repetitions), "
                            "compare.csv and PNG plots.")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="folders holding run folders (searched recursively)")
    p.add_argument("--out", metavar="DIR", help="where to write compare.csv and the plots (default DIR/compare)")
    p.add_argument("--html", action="store_true", help="also write report.html (self-contained, plots embedded)")
    p.add_argument("--backlog-config", metavar="KEY=VALUE[,...]",
                   help="configuration of the backlog plot, e.g. message_bytes=1024,rho=1.25 "
                        "(default: the most overloaded)")
    p.add_argument("--markdown", metavar="FILE",
                   help="also write the table and the plots into FILE (e.g. docs/results.md), between its "
                        "generated-section markers; the rest of FILE is kept")
    args = p.parse_args(argv)
    out = args.out or os.path.join(args.dirs[0], "compare")
    command = "python -m testbed.compare " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        compare(args.dirs, out, args.html, args.backlog_config, markdown=args.markdown, command=command)
        return 0
    except TestbedError as exc:
        print(f"testbed.compare: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
