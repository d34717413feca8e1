"""The comparison's PNG plots, drawn to be read at the size the report shows them.

Every plot: its titles wrapped to fit inside the figure, a unit on every numeric axis, log axes labelled
with plain numbers (ms) thinned until no two labels touch, legends listing only what is drawn, and one
colour per broker (from the registry's order) that is the same in every plot.

    latency_cdf.png         e2e latency CDF per broker, one panel per configuration (from messages.csv;
                            lost messages keep the curve below 1)
    p99_vs_load.png         e2e p99 per broker against the offered rate (or rho at one offered rate)
    throughput_vs_load.png  throughput out per broker, same axes, with the offered rate for reference
    backlog.png             backlog over time for one configuration
    breakdown.png           vision runs: stacked per-step medians, queueing for stage B and the broker's
                            hop apart
"""
from __future__ import annotations

import math
import os
import textwrap

import brokers
from testbed.analysis.groups import (CONFIG, HOP, PER_BROKER, QUEUE, TRANSIT, WAIT, breakdown, broker_order,
                                     config_label, shown_config, varying)
from testbed.analysis.report import atomic_write
from testbed.errors import ConfigError

#: A segment of the breakdown is drawn (and listed) when it is at least this share of the widest bar.
VISIBLE_SHARE = 0.01
FONT = 10
#: Candidate mantissas of the labelled ticks on a log axis, finest first.
_LOG_SUBS = [(1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0), (1.0, 2.0, 3.0, 5.0), (1.0, 2.0, 5.0), (1.0, 3.0), (1.0,)]
_PART_COLORS = {"queue": "tab:orange", "hop": "tab:purple", "transit": "tab:pink", "wait": "tab:brown"}


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcParams.update({"font.size": FONT, "axes.grid": True, "grid.alpha": 0.3, "figure.dpi": 110,
                         "legend.fontsize": 8, "axes.titlesize": FONT})
    return plt


def broker_colors(names_: list[str]) -> dict:
    """One colour per broker: its place in the registry's order, so it is the same in every plot."""
    import matplotlib
    cmap = matplotlib.colormaps["tab10"]
    order = broker_order(list(names_))
    known = brokers.names()
    extra = [b for b in order if b not in known]
    colors = {b: cmap(i % 10) for i, b in enumerate(known)}
    colors.update({b: cmap((len(known) + i) % 10) for i, b in enumerate(extra)})
    return colors


def plain_number(v: float, _pos=None) -> str:
    """A tick value as a plain decimal number: 0.5, 3, 300, 20000 (never 3x10^2)."""
    if not math.isfinite(v):
        return ""
    v = float(f"{v:.6g}")
    if v == int(v):
        return str(int(v))
    return f"{v:f}".rstrip("0").rstrip(".")


def _wrap(text: str, width_in: float, fontsize: float = FONT) -> str:
    """Wrap ``text`` to lines that fit ``width_in`` inches at ``fontsize`` (about 0.55 em per character)."""
    chars = max(20, int(width_in * 72 / (0.58 * fontsize)))
    return "\n".join(textwrap.wrap(text, chars)) or text


def _subplots(plt, n: int, w: float = 5.2, h: float = 3.8):
    cols = min(2, max(1, n))
    rows = int(math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(w * cols, h * rows), squeeze=False, layout="constrained")
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat)[:n], w


def _log_axis(ax, which: str) -> None:
    from matplotlib import ticker
    ax.set_xscale("log") if which == "x" else ax.set_yscale("log")
    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_major_formatter(ticker.FuncFormatter(plain_number))
    axis.set_minor_locator(ticker.LogLocator(base=10, subs=tuple(range(2, 10)), numticks=100))
    axis.set_minor_formatter(ticker.NullFormatter())


def _overlap(labels, renderer, pad_px: float = 3.0) -> bool:
    boxes = sorted((t.get_window_extent(renderer) for t in labels if t.get_visible() and t.get_text()),
                   key=lambda b: (b.x0, b.y0))
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            if a.x0 < b.x1 + pad_px and b.x0 < a.x1 + pad_px and a.y0 < b.y1 + pad_px and b.y0 < a.y1 + pad_px:
                return True
    return False


def _thin_log_ticks(fig) -> None:
    """On every log axis, the finest set of labelled ticks whose labels do not touch."""
    from matplotlib import ticker
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
            if scale != "log":
                continue
            candidates = [ticker.LogLocator(base=10, subs=s, numticks=100) for s in _LOG_SUBS]
            candidates.append(ticker.LogLocator(base=10, subs=(1.0,), numticks=4))
            for loc in candidates:
                axis.set_major_locator(loc)
                fig.canvas.draw()
                if not _overlap(axis.get_majorticklabels(), fig.canvas.get_renderer()):
                    break


def _finish(fig, title: str):
    fig.suptitle(_wrap(title, fig.get_figwidth(), FONT + 1), fontsize=FONT + 1)
    _thin_log_ticks(fig)
    return fig


def save(fig, path: str) -> str:
    """Write ``fig`` as a PNG (whole or not at all) and release it."""
    import matplotlib.pyplot as plt
    try:
        with atomic_write(path, binary=True) as fh:
            fig.savefig(fh, format="png")
    finally:
        plt.close(fig)
    return path


def _panel_title(ax, text: str, width_in: float) -> None:
    ax.set_title(_wrap(text, width_in * 0.95), fontsize=FONT)


# -- against the load -----------------------------------------------------------------------------------
def x_axis(table) -> tuple[str, str, list[str]]:
    """(x column, x label, panel columns): offered msg/s when it varies, else rho."""
    load_cols = ("offered_rate", "fanout_mean", "consumer_rate", "rho", "producer_rate")
    panel_cols = [c for c in varying(table, CONFIG) if c not in load_cols]
    if table["offered_msgs"].nunique() > 1:
        # several offered rates on x; where rho also varies at one rate (consumer set relative to the
        # rate), one panel per rho
        if table.groupby("offered_msgs")["rho"].nunique().max() > 1:
            panel_cols.append("rho")
        return "offered_msgs", "offered rate (messages/s to the broker)", panel_cols
    return "rho", "offered load rho (offered msg/s / stage B capacity; no unit)", panel_cols


def panel_groups(table, panel_cols):
    if not panel_cols:
        return [("all runs", table)]
    out = []
    for _, g in table.groupby([table[c].astype(str) for c in panel_cols], sort=False):
        out.append((config_label(g.iloc[0], panel_cols), g))
    return out


#: points of two brokers at one load closer than this share of the panel's y range (log range on a log
#: axis) coincide: they are set side by side, this share of the x range apart
COINCIDE_SHARE = 0.01
DODGE_SHARE = 0.025  # about a marker's width on a panel of the report's size


def _dodged(series: dict, logy: bool) -> tuple[dict, bool]:
    """{broker: (x, y)} -> the same with the x of coinciding points spread sideways; (that, any moved)."""
    import numpy as np
    xs = np.array(sorted({float(x) for x, _ in series.values() for x in x}))
    ys = [float(v) for _, y in series.values() for v in y if np.isfinite(v) and (v > 0 or not logy)]
    if len(xs) < 2 or len(ys) < 2:
        return series, False
    f = np.log10 if logy else (lambda v: v)
    y_span = max(float(f(max(ys)) - f(min(ys))), 1e-12)
    step = DODGE_SHARE * float(xs[-1] - xs[0])
    out = {b: (np.array(x, dtype=float), np.array(y, dtype=float)) for b, (x, y) in series.items()}
    moved = False
    for x0 in xs:
        at = [(b, i) for b, (x, _) in out.items() for i in np.flatnonzero(x == x0)]
        at = [(b, i) for b, i in at if np.isfinite(out[b][1][i]) and (out[b][1][i] > 0 or not logy)]
        at.sort(key=lambda bi: out[bi[0]][1][bi[1]])
        clusters, cur = [], []
        for b, i in at:  # runs of points each within the tolerance of the one before
            if cur and abs(f(out[b][1][i]) - f(out[cur[-1][0]][1][cur[-1][1]])) > COINCIDE_SHARE * y_span:
                clusters.append(cur)
                cur = []
            cur.append((b, i))
        clusters.append(cur)
        for c in clusters:
            if len(c) < 2:
                continue
            order = sorted(c, key=lambda bi: list(series).index(bi[0]))  # the legend's order, left to right
            for j, (b, i) in enumerate(order):
                out[b][0][i] = x0 + (j - (len(order) - 1) / 2) * step
            moved = True
    return out, moved


def _one_level_panel(ax, g, xcol: str, xlabel: str, metric: str, ylabel: str, colors: dict, reference: bool):
    """One load level in the panel: a bar per broker on an axis from zero, the median written on it."""
    names = broker_order(list(g["broker"].unique()))
    for i, b in enumerate(names):
        gb = g[g["broker"] == b]
        y = float(gb[f"{metric}_median"].astype(float).iloc[0])
        lo = max(0.0, y - float(gb[f"{metric}_min"].astype(float).iloc[0]))
        hi = max(0.0, float(gb[f"{metric}_max"].astype(float).iloc[0]) - y)
        bars = ax.bar(i, y, yerr=[[lo], [hi]], capsize=3, color=colors[b], label=b, width=0.7)
        ax.bar_label(bars, labels=[plain_number(float(f"{y:.4g}"))], padding=2, fontsize=8)
    if reference:
        offered = float(g["offered_msgs"].iloc[0])
        ax.axhline(offered, color="k", ls="--", lw=1, label="offered")
        x0 = float(g[xcol].iloc[0])
        if xcol == "rho" and x0 > 0:
            ax.axhline(offered / x0, color="k", ls=":", lw=1, label="stage B capacity")
    ax.set_ylim(bottom=0)
    ax.margins(y=0.12)
    ax.set_xticks(range(len(names)), names)
    ax.grid(axis="x", visible=False)
    level = plain_number(float(f"{float(g[xcol].iloc[0]):.4g}"))
    ax.set_xlabel(f"broker, at one load level: {xlabel.split(' (')[0]} {level}")
    ax.set_ylabel(ylabel.replace(", log scale", ""))


def vs_load_figure(table, metric: str, ylabel: str, title: str, logy: bool, reference: bool):
    """The metric per broker against the load; a panel with one load level draws bars from zero instead
    (a y axis fitted to a few points would make a 2% difference fill it), and points of several brokers
    that coincide are set side by side."""
    plt = _plt()
    xcol, xlabel, panel_cols = x_axis(table)
    groups = panel_groups(table, panel_cols)
    fig, axes, w = _subplots(plt, len(groups))
    colors = broker_colors(list(table["broker"].unique()))
    notes = set()
    for ax, (label, g) in zip(axes, groups):
        _panel_title(ax, label, w)
        if g[xcol].astype(float).nunique() == 1:
            _one_level_panel(ax, g, xcol, xlabel, metric, ylabel, colors, reference)
            notes.add("one load level: bars from zero")
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)  # clear of the bars
            continue
        series, spans = {}, {}
        for b in broker_order(list(g["broker"].unique())):
            gb = g[g["broker"] == b].sort_values(xcol)
            y = gb[f"{metric}_median"].astype(float)
            series[b] = (gb[xcol].astype(float).to_numpy(), y.to_numpy())
            spans[b] = ((y - gb[f"{metric}_min"].astype(float)).clip(lower=0).to_numpy(),
                        (gb[f"{metric}_max"].astype(float) - y).clip(lower=0).to_numpy())
        series, moved = _dodged(series, logy)
        if moved:
            notes.add("points that coincide set side by side")
        for b, (x, y) in series.items():
            ax.errorbar(x, y, yerr=list(spans[b]), marker="o", capsize=3, label=b, color=colors[b])
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
            _log_axis(ax, "y")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.legend()
    extra = "".join(f"; {n}" for n in sorted(notes))
    return _finish(fig, title + f" (median; error bars: min-max over repetitions{extra})")


# -- latency CDF ----------------------------------------------------------------------------------------
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


def cdf_figure(table, max_panels: int = 8):
    import numpy as np
    plt = _plt()
    groups = panel_groups(table, shown_config(table))[:max_panels]
    fig, axes, w = _subplots(plt, len(groups))
    colors = broker_colors(list(table["broker"].unique()))
    drawn = 0
    for ax, (label, g) in zip(axes, groups):
        in_panel = 0
        for b in broker_order(list(g["broker"].unique())):
            for _, r in g[g["broker"] == b].iterrows():
                lat, lost = [], 0
                for d in r["run_dirs"].split(";"):
                    v, n_lost = _e2e_ms(d, float(r["warmup_s"]))
                    if v is not None:
                        lat.append(v)
                        lost += n_lost
                v = np.sort(np.concatenate(lat)) if lat else np.array([])
                if len(v) == 0:
                    continue
                y = np.arange(1, len(v) + 1) / (len(v) + lost)
                ax.plot(np.maximum(v, 1e-3), y, label=b + (f" ({lost} lost)" if lost else ""), color=colors[b],
                        lw=1.5)
                drawn += 1
                in_panel += 1
        _panel_title(ax, label, w)
        if not in_panel:
            ax.text(0.5, 0.5, "no messages.csv in these runs", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        _log_axis(ax, "x")
        ax.set_ylim(0, 1.01)
        ax.axhline(0.99, color="grey", ls=":", lw=1)
        ax.set_xlabel("end-to-end latency (ms, log scale)")
        ax.set_ylabel("fraction of messages (0 to 1)")
        ax.legend(loc="lower right")
    if not drawn:
        plt.close(fig)
        return None
    return _finish(fig, "End-to-end latency CDF per broker (all repetitions pooled; dotted line: p99)")


# -- backlog --------------------------------------------------------------------------------------------
def choose_backlog_config(table, spec: str | None):
    """The rows (one per broker) of the configuration whose backlog to plot."""
    cfg_cols = [c for c in CONFIG if c not in PER_BROKER]
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


def backlog_figure(table, spec: str | None = None):
    import pandas as pd
    plt = _plt()
    rows = choose_backlog_config(table, spec)
    colors = broker_colors(list(table["broker"].unique()))
    fig, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
    drawn = 0
    for b in broker_order(list(rows["broker"].unique())):
        r = rows[rows["broker"] == b].iloc[0]
        d = sorted(r["run_dirs"].split(";"))[0]
        p = os.path.join(d, "timeseries.csv")
        if not os.path.exists(p):
            continue
        ts = pd.read_csv(p)
        ax.plot(ts["t_s"] + 1, ts["backlog"], label=b, color=colors[b], lw=1.5)
        drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    first = rows.iloc[0]
    ax.axvline(float(first["duration_s"]), color="k", ls="--", lw=1, label="load stops")
    ax.axvspan(0, float(first["warmup_s"]), color="grey", alpha=0.15, label="warm-up")
    label = config_label(first, shown_config(table) or ["offered_rate", "rho"])
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("backlog (messages published, not yet finished)")
    ax.legend()
    return _finish(fig, f"Backlog over time: {label} (first repetition)")


# -- where the time goes ----------------------------------------------------------------------------------
def _part_color(kind: str, i_in_kind: int, n_in_kind: int):
    import matplotlib
    if kind in _PART_COLORS:
        return _PART_COLORS[kind]
    cmap = matplotlib.colormaps["Blues" if kind == "A" else "Greens"]
    return cmap(0.35 + 0.55 * (i_in_kind / max(1, n_in_kind - 1)))


def breakdown_figure(table):
    """Stacked per-step medians for vision runs: stage A steps, queued for stage B, broker hop, batch
    wait, stage B steps; the measured e2e p50 marked beside each bar.

    Segments under VISIBLE_SHARE of the widest bar are summed into one "other steps" segment (drawn and
    listed only if that is visible), so the legend lists exactly the segments one can see.
    """
    import numpy as np
    plt = _plt()
    vis = table[table["pipeline"].astype(str) == "vision"].reset_index(drop=True)
    if vis.empty:
        return None
    parts = breakdown(vis)
    labels_cols = shown_config(vis)
    names = [r["broker"] + (f"\n{config_label(r, labels_cols)}" if labels_cols else "") for _, r in vis.iterrows()]
    values = np.nan_to_num(np.array([v for _, _, v in parts], dtype=float).reshape(len(parts), len(vis)))
    widest = float(values.sum(axis=0).max()) if len(parts) else 0.0
    if widest <= 0:
        return None
    visible = values.max(axis=1) >= VISIBLE_SHARE * widest
    other = values[~visible].sum(axis=0)
    height = max(3.5, 1.6 + (0.55 + 0.2 * len(labels_cols)) * len(vis))
    fig, ax = plt.subplots(figsize=(10, height), layout="constrained")
    left = np.zeros(len(vis))
    kinds = [k for _, k, _ in parts]
    for i, (label, kind, _) in enumerate(parts):
        if not visible[i]:
            continue
        same = [j for j, k in enumerate(kinds) if k == kind]
        ax.barh(names, values[i], left=left, label=label, color=_part_color(kind, same.index(i), len(same)))
        left += values[i]
    if other.max() >= VISIBLE_SHARE * widest:
        ax.barh(names, other, left=left, label=f"other steps (each < {VISIBLE_SHARE:.0%})", color="lightgrey")
        left += other
    e2e = vis["e2e_p50_ms_median"].astype(float).to_numpy() if "e2e_p50_ms_median" in vis.columns else None
    if e2e is not None and np.isfinite(e2e).any():
        ax.plot(e2e, names, linestyle="none", marker="|", markersize=18, markeredgewidth=2, color="black",
                label="e2e p50 (measured)")
    ax.set_xlabel("median time (ms)")
    ax.set_ylabel("broker" + (" and configuration" if labels_cols else ""))
    ax.grid(axis="y", visible=False)
    ax.invert_yaxis()
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: labels[i] == "e2e p50 (measured)")  # path order, e2e last
    ax.legend([handles[i] for i in order], [labels[i] for i in order], loc="upper left",
              bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    return _finish(fig, "Where a message's time goes (vision pipeline; per-step medians): stage A steps "
                              f"per frame; '{QUEUE}', '{HOP}' and '{WAIT}' per message; stage B steps per "
                              f"batch" + (f"; '{TRANSIT}' where a run predates the split"
                                          if any(k == "transit" for k in kinds) else ""))


def figures(table, backlog_config: str | None = None) -> dict:
    """Every plot the table allows: {file name: matplotlib Figure}."""
    made = {"latency_cdf.png": cdf_figure(table),
            "p99_vs_load.png": vs_load_figure(table, "e2e_p99_ms", "end-to-end p99 latency (ms, log scale)",
                                              "Tail latency per broker", True, False),
            "throughput_vs_load.png": vs_load_figure(table, "throughput_out", "throughput out (messages/s)",
                                                     "Throughput out per broker", False, True),
            "backlog.png": backlog_figure(table, backlog_config),
            "breakdown.png": breakdown_figure(table)}
    return {k: f for k, f in made.items() if f is not None}


def all_plots(table, out: str, backlog_config: str | None = None) -> list[str]:
    """Every plot the table allows, written to ``out``; the paths written."""
    return [save(fig, os.path.join(out, name)) for name, fig in figures(table, backlog_config).items()]
