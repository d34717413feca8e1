"""``python -m testbed.compare DIR [DIR...]``: one table and a few plots from many run folders.

    python -m testbed.compare results/broker_compare
    python -m testbed.compare results/a results/b --out docs/results --html

Reads and groups the run folders below the given folders (``groups``): only complete runs are compared;
incomplete ones are counted and named in a warning. Each group (broker and configuration: every run
setting except the seed) shows the median over its repetitions and the spread (min-max). Machine and
broker implementation are shown and never silently mixed: a group (or the whole table) that holds runs
from more than one machine or broker implementation gets a warning.

Writes to ``--out`` (default DIR/compare): ``compare.csv`` (one row per group: median/min/max of every
metric, empty where the runs predate a column) and the PNG plots of ``plots``. ``--html`` also writes
``report.html`` (``html``: one self-contained page). ``--markdown FILE`` writes the table and plot links
into FILE between two marker comments, keeping the rest of the file (how docs/results.md is regenerated).
"""
from __future__ import annotations

import json
import math
import os
import sys

from testbed.analysis import groups, html, plots
from testbed.analysis.groups import config_label, fmt_cell, shown_config
from testbed.analysis.report import atomic_write
from testbed.cli import OneLineParser
from testbed.errors import ConfigError, TestbedError

CAPTION = ("median over repetitions [min, max]; latency in ms, rates in msg/s; rho measured: offered msg/s over "
           "stage B's measured capacity; queue: waiting while stage B was busy, hop: the broker's own transfer")


# -- the table: one column list for the terminal, Markdown and HTML ------------------------------------
def _spread(row, m: str, nd: int) -> str:
    med, lo, hi = row[f"{m}_median"], row[f"{m}_min"], row[f"{m}_max"]
    if med is None or (isinstance(med, float) and math.isnan(med)):
        return ""
    if row["runs"] < 2 or lo == hi:
        return f"{med:.{nd}f}"
    return f"{med:.{nd}f} [{lo:.{nd}f}, {hi:.{nd}f}]"


#: More configuration columns than this that differ are shown as one "configuration" column.
MAX_CONFIG_COLUMNS = 4
#: Columns shown even when empty.
ALWAYS = ("broker", "broker impl", "machine", "runs", "stable")


def columns(table) -> list[tuple[str, bool, object]]:
    """(header, is text, cell function) for every column of the comparison table."""
    cols = [("broker", True, lambda r: r["broker"] + (" (!)" if r["mixed"] else "")),
            ("broker impl", True, lambda r: r["broker_impl"]),
            ("machine", True, lambda r: r["machine"])]
    shown = shown_config(table) or ["offered_rate"]
    if len(shown) > MAX_CONFIG_COLUMNS:  # one column that wraps rather than many mostly empty ones
        cols.append(("configuration", True, lambda r: config_label(r, shown)))
    else:
        for c in shown:
            cols.append((groups.SHORT.get(c, c), True, lambda r, c=c: fmt_cell(c, r[c])))
    cols += [("runs", False, lambda r: str(r["runs"])),
             ("e2e p50 ms", False, lambda r: _spread(r, "e2e_p50_ms", 2)),
             ("e2e p99 ms", False, lambda r: _spread(r, "e2e_p99_ms", 2)),
             ("out msg/s", False, lambda r: _spread(r, "throughput_out", 1)),
             ("backlog growth msg/s", False, lambda r: _spread(r, "backlog_growth", 1)),
             ("lost", False, lambda r: _spread(r, "lost", 0)),
             ("stable", False, lambda r: f"{r['stable_runs']}/{r['runs']}"),
             ("rho measured", False, lambda r: _spread(r, "rho_measured", 2)),
             ("queue p99 ms", False, lambda r: _spread(r, "queue_p99_ms", 2)),
             ("hop p99 ms", False, lambda r: _spread(r, "hop_p99_ms", 2)),
             ("limited by", True, lambda r: r.get("limited_by", ""))]
    return cols


def cells(table) -> tuple[list[tuple[str, bool]], list[list[tuple[str, bool]]]]:
    """(header, rows) of the comparison table; a column no group fills (runs older than it) is left out."""
    cols = columns(table)
    rows = [[str(fn(r)) for _, _, fn in cols] for _, r in table.iterrows()]
    keep = [i for i, (h, _, _) in enumerate(cols) if h in ALWAYS or any(row[i] for row in rows)]
    head = [(cols[i][0], cols[i][1]) for i in keep]
    return head, [[(row[i], cols[i][1]) for i in keep] for row in rows]


def rich_table(table, title: str, width: int = 240):
    """The comparison table for a terminal ``width`` columns wide."""
    from rich.markup import escape
    from rich.table import Table
    t = Table(title=escape(title), caption=escape(CAPTION), show_lines=False)
    head, rows = cells(table)
    # a figure's [min, max] goes under its median, so the columns stay narrow
    rows = [[(c if text else c.replace(" [", "\n["), text) for c, text in row] for row in rows]
    widths = []
    for j, (h, text) in enumerate(head):
        if text:  # text wraps between words, never inside one
            words = [w for row in rows for w in row[j][0].split()]
            widths.append(min(24, max([len(w) for w in words] + [len(h)])))
        else:  # a figure stays on one line
            lines = [ln for row in rows for ln in row[j][0].split("\n")]
            widths.append(max([len(ln) for ln in lines] + [len(h)]))
    fits = sum(widths) + 3 * len(widths) + 1 <= width
    for (h, text), w in zip(head, widths):
        t.add_column(escape(h), overflow="fold", justify="left" if text else "right",
                     min_width=w if fits else None, no_wrap=fits and not text)
    for row in rows:
        t.add_row(*[escape(c) for c, _ in row])
    return t


def step_cells(table) -> dict | None:
    """The per-step medians of the vision groups (queue and hop apart), as a table: a column per group."""
    vis = table[table["pipeline"].astype(str) == "vision"]
    if vis.empty:
        return None
    parts = groups.breakdown(vis)
    if not parts:
        return None
    label_cols = shown_config(vis)
    header = [r["broker"] + (f" ({config_label(r, label_cols)})" if label_cols else "") for _, r in vis.iterrows()]
    e2e = vis["e2e_p50_ms_median"].astype(float).tolist()

    def ms(v, total):
        if v is None or math.isnan(v):
            return ""
        pct = f" ({100 * v / total:.0f}%)" if total and total > 0 and not math.isnan(total) else ""
        return (f"{v:.1f}" if v >= 10 else f"{v:.2f}" if v >= 1 else f"{v:.3f}") + pct

    rows = [(label, [ms(v, t) for v, t in zip(vals, e2e)]) for label, _, vals in parts]
    rows.append(("e2e p50 (measured)", [ms(t, math.nan) for t in e2e]))
    return {"header": header, "rows": rows,
            "caption": "median over repetitions of each step's p50, ms (% of the e2e p50); stage A steps per "
                       "frame, stage B steps per batch; queued for stage B: waiting while stage B was busy; "
                       "broker hop: the broker's own transfer. Medians of parts do not add up exactly to "
                       "the median of the whole."}


def rich_steps(steps: dict):
    from rich.markup import escape
    from rich.table import Table
    t = Table(title="Where a message's time goes (vision runs, per-step p50)", caption=escape(steps["caption"]),
              caption_justify="left")
    t.add_column("step", justify="left", no_wrap=True)
    for h in steps["header"]:
        t.add_column(escape(h), justify="right", overflow="fold")
    for label, row in steps["rows"]:
        t.add_row(escape(label), *[escape(c) for c in row])
    return t


def wide_console():
    """A rich console; when output is not a terminal (a file, a pipe), wide enough for the table."""
    from rich.console import Console
    c = Console()
    return c if c.is_terminal else Console(width=240)


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
    head, rows = cells(table)
    lines = [MD_START, "", f"Generated by `{command}`.", "", "Machines:", ""]
    lines += [f"- {m}" for m in _environment(complete)] + [""]
    brokers_ = list(dict.fromkeys(table["broker"]))
    lines += [f"Brokers in these results: {', '.join(brokers_)} "
              f"({len(complete)} complete runs in {len(table)} groups).", ""]
    lines += ["| " + " | ".join(h for h, _ in head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        lines.append("| " + " | ".join(c.replace("|", "/") for c, _ in row) + " |")
    lines += ["", CAPTION[0].upper() + CAPTION[1:] + ".", ""]
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
    with atomic_write(md_path) as fh:
        fh.write(text)


# -- the comparison --------------------------------------------------------------------------------------
def compare(dirs: list[str], out: str, html_page: bool = False, backlog_config: str | None = None,
            console=None, markdown: str | None = None, command: str = "") -> dict:
    """Everything the command does; returns what it wrote (for tests and callers)."""
    console = console or wide_console()
    df, complete = groups.load(dirs)
    incomplete = df[df["complete"] != True]  # noqa: E712
    warnings = []
    if len(incomplete):
        names = ", ".join(os.path.basename(str(d)) for d in incomplete["run_dir"][:5])
        more = "" if len(incomplete) <= 5 else f" and {len(incomplete) - 5} more"
        warnings.append(f"{len(incomplete)} incomplete run(s) left out: {names}{more}")
    if complete.empty:
        raise ConfigError(f"no complete runs below {', '.join(dirs)} ({len(df)} incomplete)")
    table, w = groups.group(complete)
    warnings.extend(w)
    if backlog_config:
        plots.choose_backlog_config(table, backlog_config)  # a bad selection fails before anything is written
    os.makedirs(out, exist_ok=True)
    csv_path = os.path.join(out, "compare.csv")
    with atomic_write(csv_path) as fh:
        table.to_csv(fh, index=False)
    images = plots.all_plots(table, out, backlog_config)
    from testbed.analysis import timeline  # fault runs: a timeline each, a table per broker and fault type
    fault_files, fault_rows = timeline.write(complete, out)
    images += [p for p in fault_files if p.endswith(".png")]
    title = f"testbed comparison: {', '.join(dirs)}"
    console.print(rich_table(table, title, console.width))
    steps = step_cells(table)
    if steps:
        console.print(rich_steps(steps))
    if fault_rows:
        console.print("faults per broker and fault type (faults.csv):\n" + timeline.markdown_table(fault_rows),
                      highlight=False, markup=False)
    for w_ in warnings:
        console.print(f"[bold yellow]warning:[/] {w_}", highlight=False)
    machines = sorted(set(complete["machine"]))
    notes = [f"{len(complete)} complete runs in {len(table)} groups; machine(s): {', '.join(machines)}"]
    html_path = None
    if html_page:
        head, rows = cells(table)
        html_path = html.write_html(os.path.join(out, "report.html"), title=title, notes=notes, warnings=warnings,
                                    header=head, rows=rows, caption=CAPTION, images=images, steps=steps)
    if markdown:
        write_markdown(markdown, markdown_section(table, complete, warnings, images, markdown,
                                                  command or "python -m testbed.compare " + " ".join(dirs)))
        console.print(f"updated the generated section of {markdown}", highlight=False)
    console.print(f"wrote {csv_path}" + "".join(f", {os.path.basename(i)}" for i in images)
                  + (f", {os.path.basename(html_path)}" if html_path else "") + f" in {out}", highlight=False)
    return {"table": table, "csv": csv_path, "images": images, "html": html_path, "warnings": warnings,
            "faults": fault_rows}



def main(argv=None) -> int:
    p = OneLineParser(prog="python -m testbed.compare",
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
