"""A live view of many runs (sweeps, max-rate searches) with ``rich``: runs done, the current run's
elapsed and remaining time, and its live rate in/out and backlog.

The orchestrator reports one line a second ("[   3s load] in    200 msg/s  out    198 msg/s  backlog 2");
``parse_tick`` reads it back into numbers, so the orchestrator needs no second progress interface.
"""
from __future__ import annotations

import re

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

TICK = re.compile(r"\[\s*(\d+)s\s+(\w+)\]\s+in\s+(-?\d+)\s+msg/s\s+out\s+(-?\d+)\s+msg/s\s+backlog\s+(-?\d+)")


def parse_tick(line: str) -> dict | None:
    """{"t_s", "phase", "in", "out", "backlog"} from an orchestrator progress line; None if it is not one."""
    m = TICK.search(line)
    if not m:
        return None
    return {"t_s": int(m.group(1)), "phase": m.group(2), "in": int(m.group(3)), "out": int(m.group(4)),
            "backlog": int(m.group(5))}


class LiveRuns:
    """Two bars: all runs, and the current run (its seconds of load + drain)."""

    def __init__(self, total: int, title: str, quiet: bool = False, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.quiet = quiet
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(bar_width=30), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
            console=self.console, disable=quiet, transient=False)
        self.overall: TaskID = self.progress.add_task(title, total=total, info="")
        self.current: TaskID | None = None

    def __enter__(self) -> "LiveRuns":
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def start_run(self, name: str, seconds: float) -> None:
        if self.current is not None:
            self.progress.remove_task(self.current)
        self.current = self.progress.add_task(f"  {name}", total=max(1, int(round(seconds))), info="starting")

    def tick(self, line: str) -> None:
        t = parse_tick(line)
        if self.current is None:
            return
        if t is None:
            self.progress.update(self.current, info=line.strip()[:60])
            return
        self.progress.update(self.current, completed=t["t_s"],
                             info=f"{t['phase']:<5} in {t['in']:>6} out {t['out']:>6} msg/s  backlog {t['backlog']}")

    def end_run(self, advance: int = 1) -> None:
        if self.current is not None:
            self.progress.remove_task(self.current)
            self.current = None
        self.progress.advance(self.overall, advance)

    def log(self, text: str) -> None:
        if self.quiet:
            return
        self.progress.console.print(text, highlight=False, markup=False)
