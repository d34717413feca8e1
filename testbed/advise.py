"""``python -m testbed.advise``: the cheapest configurations that keep e2e p99 under a bound at a rate.

    python -m testbed.advise --profile profile.json --rate 30 --slo-p99-ms 100 [--brokers a,b] [--max-replicas 8]
    python -m testbed.advise --profile profile.json --rate 30 --slo-p99-ms 100 --verify    # top picks run for real

The twin searches broker x batch_max (--batch-sizes) x batch_wait (--batch-waits-ms) and, for each, the
fewest stage B replicas (up to --max-replicas) whose prediction is stable with p99 <= the bound. It
prints them cheapest first: fewest replicas, then the most headroom (the highest rate the configuration
sustains under the bound, predicted), with the predicted p99 and its band. The rest of the pipeline
comes from the ``testbed.run`` flags (same defaults). --verify runs the --verify-top picks with the
testbed (--verify-duration s each) and prints predicted beside measured. --json FILE writes the picks
(figures keyed like summary.csv). Exit 0 when some configuration meets the bound, 1 when none does,
2 bad input.
"""
from __future__ import annotations

import dataclasses
import sys

import brokers
from testbed.cli import OneLineParser
from testbed.config import add_run_arguments
from testbed.errors import ConfigError, TestbedError
from testbed.twin import advise as ta
from testbed.twin.cli import (as_json, config_json, console, fail, fmt, positive_float,
                              positive_int, write_json)
from testbed.twin.profile import load

OWN = ("profile", "slo_p99_ms", "brokers", "max_replicas", "batch_sizes", "batch_waits_ms", "reps", "json",
       "verify", "verify_top", "verify_duration", "top", "stage_a", "stage_b")
SEARCHED = ("broker", "replicas", "batch_max", "batch_wait_ms")


def _list(kind):
    def parse(text: str):
        try:
            vals = [kind(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise ValueError(f"{text!r} is not a comma-separated list of numbers") from None
        if not vals:
            raise ValueError("an empty list")
        return vals
    return parse


def build_parser() -> OneLineParser:
    p = OneLineParser(prog="python -m testbed.advise",
                      description="Recommend the cheapest broker / replicas / batching that meets an e2e p99 bound.")
    g = p.add_argument_group("advice")
    g.add_argument("--profile", required=True, metavar="FILE", help="profile from python -m testbed.profile")
    g.add_argument("--slo-p99-ms", required=True, type=positive_float, metavar="MS", help="e2e p99 bound (ms)")
    g.add_argument("--brokers", default="", metavar="A,B", help="brokers to consider (default: those in the profile)")
    g.add_argument("--max-replicas", type=positive_int, default=8, metavar="N", help="most stage B replicas (default 8)")
    g.add_argument("--batch-sizes", default="1,2,4,8", metavar="K,K", help="batch_max values (default 1,2,4,8)")
    g.add_argument("--batch-waits-ms", default="0,5,10", metavar="MS,MS",
                   help="batch_wait_ms values for batch sizes above 1 (default 0,5,10)")
    g.add_argument("--reps", type=positive_int, default=3, metavar="N", help="simulations per configuration (default 3)")
    g.add_argument("--top", type=positive_int, default=10, metavar="N", help="picks printed (default 10)")
    g.add_argument("--json", metavar="FILE", help="write the picks as JSON")
    g.add_argument("--verify", action="store_true", help="run the top picks for real and print predicted vs measured")
    g.add_argument("--verify-top", type=positive_int, default=3, metavar="N", help="picks verified (default 3)")
    g.add_argument("--verify-duration", type=positive_float, default=20.0, metavar="S",
                   help="seconds of load per verifying run (default 20)")
    g.add_argument("--stage-a", default="", metavar="NAME", help="stage A from the profile")
    g.add_argument("--stage-b", default="", metavar="NAME", help="stage B from the profile (table, perf_analyzer)")
    add_run_arguments(p)
    return p


def _values(args):
    try:
        batches = _list(int)(args.batch_sizes)
        if any(b < 1 for b in batches):
            raise ValueError("batch sizes must be >= 1")
    except ValueError as exc:
        raise ConfigError(f"--batch-sizes {args.batch_sizes!r} is not allowed: {exc}") from None
    try:
        waits = _list(float)(args.batch_waits_ms)
        if any(not w >= 0 for w in waits):
            raise ValueError("waits must be >= 0")
    except ValueError as exc:
        raise ConfigError(f"--batch-waits-ms {args.batch_waits_ms!r} is not allowed: {exc}") from None
    names = [b.strip() for b in args.brokers.split(",") if b.strip()]
    for b in names:
        brokers.check_name(b)
    return batches, waits, names


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = parser.prog
    try:
        for k in SEARCHED:
            if k in vars(args):
                alt = {"broker": "--brokers", "replicas": "--max-replicas", "batch_max": "--batch-sizes",
                       "batch_wait_ms": "--batch-waits-ms"}[k]
                raise ConfigError(f"--{k.replace('_', '-')} is what advise searches: use {alt}")
        batches, waits, names = _values(args)
        prof = load(args.profile)
        from testbed.twin.cli import resolve_run
        cfg, _ = resolve_run(args, OWN)
        names = names or [b for b in brokers.names() if b in prof.brokers]
        if not names:
            raise ConfigError(f"the profile {args.profile!r} holds no broker run: profile some runs first")
        log = lambda line: print(f"  {line}", file=sys.stderr)  # noqa: E731
        adv = ta.search(prof, cfg, args.slo_p99_ms, names, args.max_replicas, batches, waits, args.reps,
                        stage_a=args.stage_a, stage_b=args.stage_b, log=log)
        con = console()
        con.print(_table(adv, cfg, args))
        for b, why in adv.skipped:
            print(f"  {b}: {why}")
        for b, k, w, why in adv.failed:
            print(f"  {b} batch {k} wait {w:g} ms: {why}")
        print(f"  {adv.tried} configurations simulated; profile {args.profile} ({prof.machine})")
        verified = []
        if args.verify and adv.picks:
            verified = _verify(adv.picks[:args.verify_top], cfg, args, prof)
        if args.json:
            write_json(args.json, {
                "rate": cfg.rate, "slo_p99_ms": args.slo_p99_ms, "profile": args.profile, "machine": prof.machine,
                "picks": [{"broker": p.broker, "replicas": p.replicas, "batch_max": p.batch_max,
                           "batch_wait_ms": p.batch_wait_ms, "headroom_rate": p.headroom, **as_json(p.prediction)}
                          for p in adv.picks],
                "verified": verified, "config": config_json(cfg)})
        return 0 if adv.picks else 1
    except TestbedError as exc:
        return fail(prog, exc)


def _table(adv, cfg, args):
    from rich.table import Table
    t = Table(title=f"configurations with e2e p99 <= {args.slo_p99_ms:g} ms at {cfg.rate:g} frames/s "
                    f"(fan-out {cfg.fanout}), cheapest first")
    for c, j in (("#", "right"), ("broker", "left"), ("replicas", "right"), ("batch", "right"), ("wait ms", "right"),
                 ("p99 ms", "right"), ("p99 band", "right"), ("p50 ms", "right"), ("headroom frames/s", "right")):
        t.add_column(c, justify=j)
    for i, p in enumerate(adv.picks[:args.top], 1):
        pr = p.prediction
        t.add_row(str(i), p.broker, str(p.replicas), str(p.batch_max), f"{p.batch_wait_ms:g}", fmt(p.p99),
                  f"{fmt(pr.lo.get('e2e_p99_ms'))} - {fmt(pr.hi.get('e2e_p99_ms'))}", fmt(pr.point.get("e2e_p50_ms")),
                  fmt(p.headroom, 1) if p.headroom is not None else "-")
    return t


def _verify(picks, cfg, args, prof) -> list:
    """Run each pick for real; print predicted (same seed as the run) beside measured."""
    from testbed.orchestration.execute import execute
    from testbed.twin.predict import build_model, run_reps
    rows = []
    for p in picks:
        c = dataclasses.replace(cfg, broker=p.broker, replicas=p.replicas, batch_max=p.batch_max,
                                batch_wait_ms=p.batch_wait_ms, duration=args.verify_duration,
                                warmup=min(cfg.warmup, args.verify_duration / 4), out="", broker_opt=dict(cfg.broker_opt))
        print(f"  verifying {p.broker}, {p.replicas} replica(s), batch {p.batch_max}/{p.batch_wait_ms:g} ms "
              f"({args.verify_duration:g} s) ...", file=sys.stderr)
        res = execute(c)
        pred = run_reps(build_model(prof, c, args.stage_a, args.stage_b), args.reps, same_seed_point=True)
        s = res.summary
        rows.append({"broker": p.broker, "replicas": p.replicas, "batch_max": p.batch_max,
                     "batch_wait_ms": p.batch_wait_ms, "run_dir": res.run_dir,
                     "predicted": {k: pred.point.get(k) for k in ("e2e_p50_ms", "e2e_p99_ms", "stable")},
                     "measured": {k: s.get(k) for k in ("e2e_p50_ms", "e2e_p99_ms", "stable")},
                     "meets": bool(s.get("stable")) and (s.get("e2e_p99_ms") or 1e18) <= args.slo_p99_ms})
    from rich.table import Table
    t = Table(title="verified: predicted vs measured (same seed)")
    for col in ("broker", "replicas", "batch", "p50 pred", "p50 meas", "p99 pred", "p99 meas", "stable", "meets SLO"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["broker"], str(r["replicas"]), f"{r['batch_max']}/{r['batch_wait_ms']:g}",
                  fmt(r["predicted"]["e2e_p50_ms"]), fmt(r["measured"]["e2e_p50_ms"]),
                  fmt(r["predicted"]["e2e_p99_ms"]), fmt(r["measured"]["e2e_p99_ms"]),
                  f"{fmt(r['predicted']['stable'])}/{fmt(r['measured']['stable'])}", fmt(r["meets"]))
    console().print(t)
    return rows


if __name__ == "__main__":
    sys.exit(main())
