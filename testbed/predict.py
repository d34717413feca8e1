"""``python -m testbed.predict``: the twin's prediction of a configuration, or of a run it checks.

    python -m testbed.predict --profile profile.json --broker NAME --rate 30 --replicas 2 --batch-max 8 --batch-wait-ms 10
    python -m testbed.predict --profile profile.json --check results/some_run      # predicted vs measured

The configuration takes every ``testbed.run`` flag (same defaults); without --duration the twin
simulates enough time for about 50,000 messages (30 s to 600 s). The figure is the median of --reps
simulations (seeds seed, seed+1, ...), the band their lowest and highest; with --check, the figure is
the simulation with the run's own seed (same arrivals as the run), and the run's measured value and the
error are printed beside it. --json FILE writes the figures keyed like summary.csv's columns.
Exit 0 done, 2 bad input (one line; nothing written).
"""
from __future__ import annotations

import dataclasses
import os
import sys

from testbed.cli import OneLineParser
from testbed.config import add_run_arguments
from testbed.errors import ConfigError, TestbedError
from testbed.twin import predict as tp
from testbed.twin.cli import (as_json, config_json, console, fail, positive_int, prediction_table,
                              write_json)
from testbed.twin.profile import load

OWN = ("profile", "check", "reps", "json", "stage_a", "stage_b", "csv", "plot")
PREDICT_MESSAGES = 50_000


def build_parser() -> OneLineParser:
    p = OneLineParser(prog="python -m testbed.predict",
                      description="Predict a configuration's latency with the twin (a profile and a simulation).")
    g = p.add_argument_group("twin")
    g.add_argument("--profile", required=True, metavar="FILE", help="profile from python -m testbed.profile")
    g.add_argument("--check", metavar="RUN", help="predict this run folder and print predicted vs measured")
    g.add_argument("--reps", type=positive_int, default=tp.DEFAULT_REPS, metavar="N",
                   help=f"simulations per prediction (default {tp.DEFAULT_REPS})")
    g.add_argument("--json", metavar="FILE", help="write the figures as JSON (keys as summary.csv)")
    g.add_argument("--csv", metavar="FILE", help="--check FOLDER of runs: write one row per run (CSV)")
    g.add_argument("--plot", metavar="PNG", help="--check FOLDER of runs: predicted-vs-measured scatter plot")
    g.add_argument("--stage-a", default="", metavar="NAME", help="stage A from the profile (default: synthetic, "
                   "or the profile's measured stage of the same pipeline)")
    g.add_argument("--stage-b", default="", metavar="NAME", help="stage B from the profile (a measured stage, a "
                   "stage table or a perf_analyzer CSV)")
    add_run_arguments(p)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = parser.prog
    try:
        prof = load(args.profile)
        if (args.csv or args.plot) and not args.check:
            raise ConfigError("--csv and --plot go with --check FOLDER (a folder of runs)")
        if args.check:
            given = [k for k in vars(args) if k not in OWN]
            if given:
                raise ConfigError(f"--check takes the run's own configuration: leave out --{given[0].replace('_', '-')}")
            if not os.path.isfile(os.path.join(args.check, "run.json")):
                return _check_folder(prof, args)
            res = tp.check(prof, args.check, args.reps, args.stage_a, args.stage_b)
            pred, cfg = res["prediction"], res["config"]
            title = f"{args.check}: predicted vs measured ({cfg.broker}, {cfg.rate:g} frames/s, " \
                    f"{cfg.replicas} replica(s), batch {cfg.batch_max})"
            console().print(prediction_table(pred, title, res["measured"], res["error_pct"]))
            out = {**as_json(pred), "config": config_json(cfg), "run": args.check,
                   "measured": {k: v for k, v in res["measured"].items()}, "error_pct": res["error_pct"]}
        else:
            from testbed.twin.cli import resolve_run
            cfg, given = resolve_run(args, OWN)
            if "duration" not in given:
                rate = cfg.rate * cfg.fanout_dist.mean
                duration = round(min(600.0, max(30.0, PREDICT_MESSAGES / rate)), 3)
                cfg = dataclasses.replace(cfg, duration=duration)
            pred = tp.predict(prof, cfg, args.reps, args.stage_a, args.stage_b)
            title = (f"predicted: {cfg.broker}, {cfg.rate:g} frames/s x fan-out {cfg.fanout}, {cfg.replicas} "
                     f"replica(s), batch {cfg.batch_max} / {cfg.batch_wait_ms:g} ms, {cfg.duration:g} s simulated")
            console().print(prediction_table(pred, title))
            out = {**as_json(pred), "config": config_json(cfg)}
        for note in pred.notes:
            print(f"  {note}")
        print(f"  profile {args.profile} ({prof.machine})")
        if args.json:
            out["profile"] = args.profile
            out["machine"] = prof.machine
            write_json(args.json, out)
        return 0
    except TestbedError as exc:
        return fail(prog, exc)


def _check_folder(prof, args) -> int:
    """Every run under a folder: one table row each, the targets' verdicts, optional CSV, JSON and plot."""
    from rich.table import Table

    from testbed.analysis.report import write_csv
    from testbed.twin import holdout
    from testbed.twin.cli import fmt
    rows = holdout.check_all(prof, args.check, args.reps)
    t = Table(title=f"{args.check}: predicted vs measured, {len(rows)} runs (profile {args.profile})")
    for c in ("run", "broker", "x", "batch", "rho", "stable m/p", "p50 meas", "p50 pred", "err %", "p99 meas",
              "p99 pred", "err %"):
        t.add_column(c, justify="left" if c in ("run", "broker") else "right")
    for r in rows:
        if r.get("error"):
            t.add_row(os.path.basename(r["run"]), "", "", "", "", "", "", "", "", "", "", r["error"][:40])
            continue
        name = os.path.basename(r["run"].rstrip("/")) + (" (in profile)" if r["in_profile"] else "")
        t.add_row(name, r["broker"], str(r["replicas"]), str(r["batch_max"]), fmt(r["rho"]),
                  f"{fmt(r['stable_meas'])}/{fmt(r['stable_pred'])}", fmt(r["e2e_p50_meas"]), fmt(r["e2e_p50_pred"]),
                  fmt(r["e2e_p50_err_pct"], 1), fmt(r["e2e_p99_meas"]), fmt(r["e2e_p99_pred"]),
                  fmt(r["e2e_p99_err_pct"], 1))
    console().print(t)
    v = holdout.verdicts(rows)
    vs = holdout.verdicts(rows, stable_only=True)
    for key in holdout.TARGETS:
        a, b = v[key], vs[key]
        print(f"  {key}: median |error| {a['median_abs_error_pct']:g}% over {a['runs']} held-out runs "
              f"({b['median_abs_error_pct']:g}% over the {b['runs']} stable ones); target {a['target_pct']:g}%: "
              f"{'met' if a['met'] else 'NOT met'}")
    print(f"  stable verdict right in {v['stable']['right_pct']:g}% of {v['runs']} runs; target "
          f"{v['stable']['target_pct']:g}%: {'met' if v['stable']['met'] else 'NOT met'}")
    print(f"  profile {args.profile} ({prof.machine})")
    if args.csv:
        write_csv(args.csv, rows, holdout.COLUMNS)
    if args.json:
        write_json(args.json, {"profile": args.profile, "machine": prof.machine, "runs": rows,
                               "verdicts": v, "verdicts_stable_runs": vs})
    if args.plot:
        holdout.scatter(rows, args.plot, f"twin held-out check: {args.check} (profile from {prof.machine})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
