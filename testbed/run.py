"""``python -m testbed.run``: one run of the testbed.

    python -m testbed.run --duration 20                  # the default broker (brokers.DEFAULT)
    python -m testbed.run --broker NAME --producer-rate 120 --consumer-rate 100 --duration 30
    python -m testbed.run --find-max-rate --slo-p99-ms 50 --duration 5

``python -m testbed.brokers list`` names the brokers (the registry in brokers/__init__.py).

With ``--find-max-rate`` it searches for the highest offered rate that is stable with e2e p99 under
``--slo-p99-ms`` (testbed/orchestration/maxrate.py): one run per probe under --out, listed in maxrate.csv; exit 1
when the answer could not be bracketed within --min-rate..--max-rate and --max-probes.

Prints a progress line a second and a short summary; writes results/<run_id>/ (or --out DIR) with
summary.csv, timeseries.csv, messages.csv and run.json. Exit codes: 0 done, 1 the run failed
(partial results are written, complete=false), 2 bad input (nothing is written), 130 interrupted.
"""
from __future__ import annotations

import argparse
import sys

from testbed.cli import OneLineParser
from testbed.config import add_run_arguments, resolve
from testbed.errors import ConfigError, TestbedError
from testbed.orchestration.maxrate import (DEFAULT_MAX_PROBES, DEFAULT_MAX_RATE, DEFAULT_MIN_RATE, DEFAULT_SLO_MS,
                             DEFAULT_TOLERANCE, Search)
from testbed.orchestration.maxrate import main_branch as maxrate_branch

SEARCH_FLAGS = ("find_max_rate", "slo_p99_ms", "min_rate", "max_rate", "max_probes", "rate_tolerance", "use_twin")



def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python -m testbed.run",
        description="Run one testbed experiment: open-loop load -> stage A -> broker -> stage B, "
                    "measured by the harness, summarised in CSV.",
        epilog="Exit codes: 0 done; 1 run failed (partial results, complete=false); 2 bad input; "
               "130 interrupted. Flags override --config; see README.md for the columns.")
    add_run_arguments(p)
    p.add_argument("--quiet", action="store_true", help="no progress lines, only the summary")
    g = p.add_argument_group("highest sustainable rate (testbed/orchestration/maxrate.py)")
    g.add_argument("--find-max-rate", action="store_true",
                   help="search for the highest --rate that is stable with e2e p99 under --slo-p99-ms")
    g.add_argument("--slo-p99-ms", type=float, metavar="MS", default=DEFAULT_SLO_MS,
                   help=f"latency bound of the search: e2e p99 in ms (default {DEFAULT_SLO_MS:g})")
    g.add_argument("--min-rate", type=float, metavar="N", default=DEFAULT_MIN_RATE,
                   help=f"lowest rate probed, frames/s (default {DEFAULT_MIN_RATE:g})")
    g.add_argument("--max-rate", type=float, metavar="N", default=DEFAULT_MAX_RATE,
                   help=f"highest rate probed, frames/s (default {DEFAULT_MAX_RATE:g})")
    g.add_argument("--max-probes", type=int, metavar="N", default=DEFAULT_MAX_PROBES,
                   help=f"at most this many runs (default {DEFAULT_MAX_PROBES})")
    g.add_argument("--rate-tolerance", type=float, metavar="F", default=DEFAULT_TOLERANCE,
                   help=f"stop when pass and fail rates are this close, relative (default {DEFAULT_TOLERANCE:g})")
    g.add_argument("--use-twin", metavar="PROFILE", default="",
                   help="bracket the answer from the twin's prediction (a profile from python -m testbed.profile) "
                        "and confirm it with few real probes")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    quiet = getattr(args, "quiet", False)
    if hasattr(args, "quiet"):
        del args.quiet
    search_args = {k: vars(args).pop(k) for k in SEARCH_FLAGS}
    try:
        cfg = resolve(args)
        if search_args["use_twin"] and not search_args["find_max_rate"]:
            raise ConfigError("--use-twin is for the max-rate search: add --find-max-rate")
        if search_args.pop("find_max_rate"):
            search = Search(search_args["slo_p99_ms"], search_args["min_rate"], search_args["max_rate"],
                            search_args["max_probes"], search_args["rate_tolerance"])
            return maxrate_branch(cfg, search, quiet, search_args["use_twin"])
        from testbed.analysis import report
        from testbed.orchestration.execute import execute
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
