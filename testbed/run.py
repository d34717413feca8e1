"""``python -m testbed.run``: one run of the testbed.

    python -m testbed.run --broker inproc --duration 20
    python -m testbed.run --broker zeromq --producer-rate 120 --consumer-rate 100 --duration 30

Prints a progress line a second and a short summary; writes results/<run_id>/ (or --out DIR) with
summary.csv, timeseries.csv, messages.csv and run.json. Exit codes: 0 done, 1 the run failed
(partial results are written, complete=false), 2 bad input (nothing is written), 130 interrupted.
"""
from __future__ import annotations

import argparse
import sys

from testbed.config import add_run_arguments, resolve
from testbed.errors import TestbedError


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit 2), not a usage dump."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python -m testbed.run",
        description="Run one testbed experiment: open-loop load -> stage A -> broker -> stage B, "
                    "measured by the harness, summarised in CSV.",
        epilog="Exit codes: 0 done; 1 run failed (partial results, complete=false); 2 bad input; "
               "130 interrupted. Flags override --config; see README.md for the columns.")
    add_run_arguments(p)
    p.add_argument("--quiet", action="store_true", help="no progress lines, only the summary")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    quiet = getattr(args, "quiet", False)
    if hasattr(args, "quiet"):
        del args.quiet
    try:
        cfg = resolve(args)
        from testbed import report
        from testbed.orchestrate import execute
        progress = None if quiet else (lambda line: print(line, file=sys.stderr, flush=True))
        result = execute(cfg, progress=progress)
        print(report.human(result.summary, result.run_dir))
        return 0
    except TestbedError as exc:
        print(f"testbed.run: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("testbed.run: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
