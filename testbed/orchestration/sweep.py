"""``python -m testbed.sweep FILE.yaml --out DIR``: run every point of an experiment grid, unattended.

    python -m testbed.sweep experiments/broker_compare.yaml --out results/broker_compare
    python -m testbed.sweep experiments/smoke.yaml --out /tmp/smoke --brokers NAME,NAME --set duration=3
    python -m testbed.sweep experiments/broker_compare.yaml --out results/x --dry-run

The file is checked in full before anything starts (testbed/orchestration/grid.py). Runs that share a broker form a
block (consecutive runs); the sweep's campaign (testbed/orchestration/campaign.py) starts the broker once
for the block, every run of the block uses it, and it is stopped when the next block needs another one,
at the end, on an error and on Ctrl-C. A run that fails is recorded and the broker is restarted for the
rest of its block (a failure may have been the broker's).

Resumable: each run writes ``DIR/<name>/`` where the name is made of the point's grid values, the
repetition and a hash of its full configuration (so an edited file never reuses old results). Run the
same command again and folders whose summary.csv says ``complete=true`` are skipped; an incomplete or
failed folder is moved aside to ``DIR/_incomplete/<name>.<n>`` (never deleted) and run again.

Written beside the runs: ``sweep.yaml`` (the file as run), ``sweep.csv`` (one row per run: status,
seconds, error), ``_brokers/`` (logs of the brokers started), and in each run folder ``sweep.json`` (its
grid values and repetition, which testbed.compare reads).

Exit codes: 0 every run complete; 1 some run failed (the others ran); 2 bad input (nothing ran);
130 interrupted (the broker is stopped, finished runs are kept; run again to resume).
"""
from __future__ import annotations

import argparse
import csv
import datetime as _dt
import os
import secrets
import shutil
import signal
import sys
import time

from testbed.orchestration import grid
from testbed.orchestration.campaign import Campaign
from testbed.analysis import report
from testbed.cli import OneLineParser
from testbed.errors import ConfigError, TestbedError

ASIDE = "_incomplete"
BROKER_LOGS = "_brokers"


class Interrupted(TestbedError):
    exit_code = 130


def run_complete(run_dir: str) -> bool:
    """True when the folder holds a summary.csv that says complete=true."""
    try:
        with open(os.path.join(run_dir, "summary.csv"), newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError:
        return False
    return bool(rows) and rows[0].get("complete", "").strip().lower() == "true"


def move_aside(out: str, name: str) -> str:
    """Move an incomplete run folder to DIR/_incomplete/<name>.<n>; returns the new place."""
    src = os.path.join(out, name)
    os.makedirs(os.path.join(out, ASIDE), exist_ok=True)
    n = 1
    while os.path.exists(os.path.join(out, ASIDE, f"{name}.{n}")):
        n += 1
    dst = os.path.join(out, ASIDE, f"{name}.{n}")
    shutil.move(src, dst)
    return dst


class SweepRunner:
    def __init__(self, sweep: grid.Sweep, out: str, quiet: bool = False):
        self.sweep, self.out, self.quiet = sweep, out, quiet
        self.rows: list[dict] = []
        self.failed = 0

    # -- bookkeeping --------------------------------------------------------------------------------
    def _index(self) -> None:
        report.write_csv(os.path.join(self.out, "sweep.csv"), self.rows,
                         ["name", "status", "broker", "repetition", "seconds", "run_dir", "error"])

    def _record(self, p: grid.Point, status: str, seconds: float, error: str = "") -> None:
        self.rows.append({"name": p.name, "status": status, "broker": p.cfg.broker, "repetition": p.repetition,
                          "seconds": round(seconds, 1), "run_dir": os.path.join(self.out, p.name), "error": error})
        self._index()

    def _mark(self, p: grid.Point, status: str, error: str = "") -> None:
        run_dir = os.path.join(self.out, p.name)
        os.makedirs(run_dir, exist_ok=True)
        report.write_json(os.path.join(run_dir, "sweep.json"), {
            "sweep": self.sweep.name, "file": self.sweep.path, "point": p.values, "repetition": p.repetition,
            "status": status, "error": error,
            "updated": _dt.datetime.now().astimezone().isoformat(timespec="seconds")})

    # -- running ------------------------------------------------------------------------------------
    def run(self, live) -> int:
        os.makedirs(self.out, exist_ok=True)
        with open(self.sweep.path, encoding="utf-8") as src:
            text = src.read()
        with open(os.path.join(self.out, "sweep.yaml"), "w", encoding="utf-8") as fh:
            fh.write(text)
        try:
            with Campaign(os.path.join(self.out, BROKER_LOGS), "sweep") as camp:
                for p in self.sweep.points:
                    run_dir = os.path.join(self.out, p.name)
                    if run_complete(run_dir):
                        self._record(p, "skipped (complete)", 0.0)
                        live.end_run()
                        continue
                    if os.path.exists(run_dir):
                        dst = move_aside(self.out, p.name)
                        live.log(f"redo {p.name}: the earlier attempt was incomplete (moved to {dst})")
                    self._run_point(camp, p, live)
        except KeyboardInterrupt:
            raise Interrupted("interrupted: finished runs are kept; run the same command to resume") from None
        return 1 if self.failed else 0

    def _run_point(self, camp: Campaign, p: grid.Point, live) -> None:
        from testbed.orchestration.execute import Interrupted as RunInterrupted
        t_start = time.monotonic()
        live.start_run(p.name, p.cfg.duration + p.cfg.drain)
        cfg = p.cfg
        cfg.out = os.path.join(self.out, p.name)
        try:
            camp.broker(cfg, live.tick)  # started (or refused) before the run folder is marked running
            self._mark(p, "running")
            result = camp.run(cfg, run_id=f"{p.name}-{secrets.token_hex(2)}", progress=live.tick)
            self._mark(p, "complete")
            self._record(p, "complete", time.monotonic() - t_start)
            s = result.summary
            live.log(f"done {p.name}: out {s.get('throughput_out', 0):.1f} msg/s, "
                     f"p99 {_num(s.get('e2e_p99_ms'))} ms, "
                     f"{'stable' if s.get('stable') else 'NOT stable'}, lost {s.get('lost')}")
        except RunInterrupted:
            self._mark(p, "interrupted", "interrupted (Ctrl-C)")
            self._record(p, "interrupted", time.monotonic() - t_start, "interrupted (Ctrl-C)")
            raise Interrupted("interrupted: finished runs are kept; run the same command to resume") from None
        except TestbedError as exc:
            self.failed += 1
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self._mark(p, "failed", msg)
            self._record(p, "failed", time.monotonic() - t_start, msg)
            live.log(f"FAILED {p.name}: {msg}")
            if camp.handle is not None:  # the failure may have been the broker's: a fresh one
                camp.reset()
        finally:
            live.end_run()


def _num(v) -> str:
    try:
        return f"{float(v):.2f}"
    except (TypeError, ValueError):
        return "-"


def _pairs(items: list[str]) -> dict:
    out = {}
    for it in items or []:
        if "=" not in it:
            raise ConfigError(f"--set {it!r}: expected KEY=VALUE")
        k, v = it.split("=", 1)
        out[k.strip()] = v.strip()
    return out



def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m testbed.sweep",
                description="Run every point of an experiment grid (experiments/*.yaml), resumably.",
                epilog="Exit codes: 0 all complete; 1 some run failed; 2 bad input; 130 interrupted.")
    p.add_argument("file", help="experiment file (YAML): grid, fixed, repetitions")
    p.add_argument("--out", required=True, metavar="DIR", help="results folder (run again to resume)")
    p.add_argument("--brokers", metavar="A,B", help="run only these brokers (replaces the file's broker list)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                   help="override one fixed value (repeatable), e.g. --set duration=5")
    p.add_argument("--dry-run", action="store_true", help="check the file and list the runs; run nothing")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    old_term = None
    try:
        only = [b.strip() for b in args.brokers.split(",") if b.strip()] if args.brokers else None
        if args.brokers is not None and not only:
            raise ConfigError("--brokers '' is not allowed: name at least one broker")
        sweep = grid.load(args.file, only, _pairs(args.set))
        for line in sweep.ignored:
            print(line, file=sys.stderr)
        if args.dry_run:
            for p in sweep.points:
                print(f"{p.name}  ({p.label()}; consumer_rate {p.cfg.consumer_rate:g} msg/s)")
            print(f"{len(sweep.points)} runs; at most "
                  f"{sum(p.cfg.duration + p.cfg.drain for p in sweep.points) / 60:.1f} min of load and drain")
            return 0
        try:
            os.makedirs(args.out, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"--out {args.out!r} cannot be written: {exc.strerror}") from None

        def on_term(signum, frame):
            raise KeyboardInterrupt
        old_term = signal.signal(signal.SIGTERM, on_term)
        from testbed.orchestration.live import LiveRuns
        runner = SweepRunner(sweep, args.out, args.quiet)
        title = f"sweep {sweep.name or os.path.basename(args.file)}"
        with LiveRuns(len(sweep.points), title, quiet=args.quiet) as live:
            rc = runner.run(live)
        done = sum(1 for r in runner.rows if r["status"] == "complete")
        skipped = sum(1 for r in runner.rows if r["status"].startswith("skipped"))
        print(f"sweep: {done} runs complete, {skipped} skipped (already complete), {runner.failed} failed; "
              f"results in {args.out} (index: {os.path.join(args.out, 'sweep.csv')})")
        return rc
    except TestbedError as exc:
        print(f"testbed.sweep: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("testbed.sweep: interrupted: finished runs are kept; run the same command to resume",
              file=sys.stderr)
        return 130
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)


if __name__ == "__main__":
    sys.exit(main())
