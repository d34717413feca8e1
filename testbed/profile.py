"""``python -m testbed.profile``: profile a pipeline once, from run folders, for the twin.

    python -m testbed.profile results/broker_compare results/multi_dnn --out profile.json
    python -m testbed.profile results/r1 --stage-table gpu.yaml --perf-analyzer perf.csv:batch=8 --out p.json

Each path is a run folder or a folder of them (a sweep). What each run measured (the broker's hop and
client calls, the harness's bookkeeping, stage service per batch size: testbed/twin/profile.py) is kept
as empirical distributions, with every source, its machine and its broker implementation. Runs from
different machines are refused unless --allow-mixed-machines. Exit 0 written, 2 bad input (nothing
written).
"""
from __future__ import annotations

import sys

from testbed.errors import TestbedError
from testbed.twin import profile as prof_mod
from testbed.cli import OneLineParser
from testbed.twin.cli import fail


def build_parser() -> OneLineParser:
    p = OneLineParser(prog="python -m testbed.profile",
                      description="Profile a pipeline from run folders (and stage tables) for testbed.predict "
                                  "and testbed.advise.")
    p.add_argument("runs", nargs="*", metavar="RUN", help="run folders, or folders of run folders (sweeps)")
    p.add_argument("--out", required=True, metavar="FILE", help="profile to write (JSON)")
    p.add_argument("--stage-table", action="append", default=[], metavar="YAML",
                   help="a stage's service by batch size (batch -> p50/p90/p99); repeatable")
    p.add_argument("--perf-analyzer", action="append", default=[], metavar="CSV[:batch=N][:name=NAME]",
                   help="a Triton perf_analyzer CSV as stage B service for batch N; repeatable")
    p.add_argument("--allow-mixed-machines", action="store_true",
                   help="mix runs from different machines (recorded in the profile)")
    p.add_argument("--quiet", action="store_true", help="no per-source lines")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not args.runs and not args.stage_table and not args.perf_analyzer:
        print("python -m testbed.profile: error: give at least one run folder, --stage-table or --perf-analyzer",
              file=sys.stderr)
        return 2
    log = None if args.quiet else (lambda line: print(line, file=sys.stderr))
    try:
        prof = prof_mod.build(args.runs, args.stage_table, args.perf_analyzer, args.allow_mixed_machines, log)
        prof_mod.save(prof, args.out)
    except TestbedError as exc:
        return fail("python -m testbed.profile", exc)
    runs = [s for s in prof.sources if "run_id" in s]
    print(f"profile {args.out}: {len(runs)} run(s) on {prof.machine}"
          + (" (MIXED machines)" if prof.mixed_machines else ""))
    for name, entries in prof.brokers.items():
        sizes = sorted({e["message_bytes"] for e in entries})
        batches = sorted({k for e in entries for k in e["b_post"]})
        print(f"  {name}: {len(entries)} run(s), {', '.join(str(s) for s in sizes)} B, "
              f"batch sizes {', '.join(str(b) for b in batches) or '-'}")
    for key, st in prof.stages_a.items():
        print(f"  stage A {key}: from {st['source']}")
    for key, st in prof.stages_b.items():
        print(f"  stage B {key}: batch sizes {', '.join(str(k) for k in sorted(st['service']))} (from {st['source']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
