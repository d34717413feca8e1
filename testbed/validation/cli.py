"""``python -m testbed.validate``'s command line: the cases and brokers chosen, every run planned and
checked before anything starts, each run and its analysis, the table and validate.csv, exit codes."""
from __future__ import annotations

import argparse
import datetime as _dt
import math
import os
import sys

import brokers
from testbed.cli import OneLineParser
from testbed.config import LAUNCHERS, RunConfig, validate as validate_config
from testbed.errors import ConfigError, TestbedError
from testbed.validation.analysis import Outcome, analyse, error_pct, print_table, write_csv
from testbed.validation.cases import CASES, COMMON, DEFAULT_DURATION_S, DEFAULT_WARMUP_S, QUICK, Case, broker_facts, \
    embedded_brokers


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m testbed.validate",
                      description="Run queues with known answers on real brokers and compare each run's e2e "
                                  "percentiles with exact replays of the same run and with queueing theory.",
                      epilog=f"Cases: {', '.join(f'{c.name} ({c.title})' for c in CASES.values())}. "
                             "Exit codes: 0 every case passes; 1 a case fails; 2 bad input; 130 interrupted.")
    p.add_argument("--brokers", default="", metavar="LIST",
                   help="comma-separated brokers, or 'all' (default: those with no server to start)")
    p.add_argument("--cases", default="all", metavar="LIST", help="comma-separated cases, or 'all' (default)")
    p.add_argument("--duration", type=float, default=None, metavar="S",
                   help=f"seconds of load per case, warm-up included (default {DEFAULT_DURATION_S:g}; "
                        f"--quick {QUICK['duration']:g})")
    p.add_argument("--warmup", type=float, default=None, metavar="S",
                   help=f"seconds excluded from statistics (default {DEFAULT_WARMUP_S:g}; --quick {QUICK['warmup']:g})")
    p.add_argument("--seed", type=int, default=1, metavar="N", help="seed of every run (default 1)")
    p.add_argument("--launcher", default="auto", choices=LAUNCHERS, help="how brokers with a server are started")
    p.add_argument("--out", default="", metavar="DIR", help="folder to write (default results/validate-<time>)")
    p.add_argument("--quick", action="store_true", help="short runs: a smoke test, not a measurement")
    return p


def _pick(text: str, allowed: list[str], what: str, default: list[str]) -> list[str]:
    if not text:
        return default
    if text.strip().lower() == "all":
        return list(allowed)
    out = []
    for name in (t.strip() for t in text.split(",")):
        if name not in allowed:
            raise ConfigError(f"--{what} {name!r} is not allowed: use 'all' or any of {', '.join(allowed)}")
        if name not in out:
            out.append(name)
    if not out:
        raise ConfigError(f"--{what} {text!r} names nothing: use 'all' or any of {', '.join(allowed)}")
    return out


def plan(args) -> tuple[list[tuple[Case, str, RunConfig]], str]:
    """Every (case, broker, config) to run, checked before anything starts; and the output folder."""
    names = brokers.names()
    chosen = _pick(args.brokers, names, "brokers", embedded_brokers())
    cases = _pick(args.cases, list(CASES), "cases", list(CASES))
    duration = args.duration if args.duration is not None else (QUICK["duration"] if args.quick else DEFAULT_DURATION_S)
    warmup = args.warmup if args.warmup is not None else (QUICK["warmup"] if args.quick else DEFAULT_WARMUP_S)
    drain = QUICK["drain"] if args.quick else COMMON["drain"]
    if not math.isfinite(duration) or duration <= 0:
        raise ConfigError(f"--duration {duration:g} is not allowed: a positive number of seconds")
    out = args.out or os.path.join("results", "validate-" + _dt.datetime.now().strftime("%Y%m%d-%H%M%S"))
    if os.path.exists(os.path.join(out, "validate.csv")):
        raise ConfigError(f"--out {out!r} already holds a validation (validate.csv); choose another folder")
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"--out {out!r} is not a folder")
    todo = []
    for cname in cases:
        case = CASES[cname]
        for b in chosen:
            cfg = RunConfig(**{**RunConfig().to_dict(), **COMMON, **case.settings, "broker": b,
                               "duration": duration, "warmup": warmup, "drain": drain, "seed": args.seed,
                               # embedded brokers have nothing to start: --launcher is for the others
                               "launcher": args.launcher if brokers.spec(b).needs_server else "auto",
                               "out": os.path.join(out, f"{cname}-{b}")})
            validate_config(cfg)
            if os.path.exists(os.path.join(cfg.out, "summary.csv")):
                raise ConfigError(f"--out {out!r} already holds run {cname}-{b}; choose another folder")
            todo.append((case, b, cfg))
    return todo, out


def run_one(case: Case, broker: str, cfg: RunConfig) -> Outcome:
    from testbed.orchestration.execute import execute
    dispatch, strict = broker_facts(broker, cfg.broker_impl, cfg.broker_opt)
    try:
        res = execute(cfg)
    except ConfigError:
        raise
    except TestbedError as exc:
        if exc.exit_code == 130:  # interrupted: stop the whole validation
            raise KeyboardInterrupt from None
        o = Outcome(case, broker, dispatch, strict, cfg, cfg.out, error=str(exc).splitlines()[0])
        if os.path.exists(os.path.join(cfg.out, "messages.csv")):
            try:
                got = analyse(cfg, cfg.out, case, broker, dispatch, strict)
                got.error = o.error
                return got
            except (TestbedError, OSError, ValueError):
                pass
        return o
    try:
        return analyse(cfg, res.run_dir, case, broker, dispatch, strict)
    except (TestbedError, OSError, ValueError) as exc:
        return Outcome(case, broker, dispatch, strict, cfg, res.run_dir, error=f"analysis: {exc}")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    outcomes: list[Outcome] = []
    out = ""
    try:
        todo, out = plan(args)
        os.makedirs(out, exist_ok=True)
        for i, (case, b, cfg) in enumerate(todo, 1):
            print(f"validate [{i}/{len(todo)}] {case.name} on {b}: {case.title}, {cfg.duration:g} s ...",
                  file=sys.stderr, flush=True)
            o = run_one(case, b, cfg)
            outcomes.append(o)
            if o.measured:
                print(f"  p99 measured {o.measured['p99']:.3f} ms, nominal replay {o.nominal['p99']:.3f} ms "
                      f"({error_pct(o.measured['p99'], o.nominal['p99']):+.1f}%), measured-cost replay "
                      f"{o.measured_cost['p99']:.3f} ms ({error_pct(o.measured['p99'], o.measured_cost['p99']):+.1f}%)"
                      f": {'PASS' if o.passed else 'FAIL'}" + (f" ({o.error})" if o.error else ""),
                      file=sys.stderr, flush=True)
            else:
                print(f"  FAIL: {o.error}", file=sys.stderr, flush=True)
        write_csv(os.path.join(out, "validate.csv"), outcomes)
        print_table(outcomes)
        failed = [f"{o.case.name} on {o.broker}" for o in outcomes if not o.passed]
        print(f"{len(outcomes) - len(failed)} of {len(outcomes)} passed"
              + (f"; failed: {', '.join(failed)}" if failed else "") + f"; validate.csv in {out}")
        return 1 if failed else 0
    except ConfigError as exc:
        print(f"testbed.validate: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if outcomes and out:
            write_csv(os.path.join(out, "validate.csv"), outcomes)
        print("testbed.validate: interrupted", file=sys.stderr)
        return 130
    except TestbedError as exc:
        print(f"testbed.validate: error: {exc}", file=sys.stderr)
        return exc.exit_code


