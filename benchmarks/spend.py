"""Benchmark: how exactly the synthetic stages spend a service time, and what it costs in CPU.

Methods, each in a fresh process (as a stage runs; the new method changes the thread's timer slack):
- ``old``: plain ``time.sleep`` against a deadline (sleep, check, sleep the rest), as spend() once did;
- ``new``: ``stages.synthetic.spend(ns, "sleep")``: sleep to an adaptive margin before the deadline, spin
  the rest;
- ``spin``: ``spend(ns, "spin")``, for reference (``--with-spin``).

For each service time (default 1, 10, 50 ms) and method: overshoot (end - deadline) p50/p99/max in
microseconds and CPU time per call (thread CPU time) in microseconds and as a share of the service.
Methods alternate ``--rounds`` times (default 3); the table shows the median over rounds and the spread
(min-max). The first ``WARMUP`` calls of each process are not counted (the new method's margin settles).

    .venv/bin/python benchmarks/spend.py [--rounds 3] [--services 1,10,50] [--seconds 1.5]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WARMUP = 20


def old_spend(ns: int) -> None:
    deadline = time.monotonic_ns() + ns
    left = ns
    while left > 0:
        time.sleep(left / 1e9)
        left = deadline - time.monotonic_ns()


def child(method: str, service_ms: float, calls: int) -> dict:
    sys.path.insert(0, ROOT)
    from stages.synthetic import spend
    ns = int(service_ms * 1e6)
    call = {"old": old_spend, "new": lambda n: spend(n, "sleep"), "spin": lambda n: spend(n, "spin")}[method]
    late, cpu = [], []
    for i in range(WARMUP + calls):
        c0, t0 = time.thread_time_ns(), time.monotonic_ns()
        call(ns)
        t1, c1 = time.monotonic_ns(), time.thread_time_ns()
        if i >= WARMUP:
            late.append(t1 - t0 - ns)
            cpu.append(c1 - c0)
    late_us, cpu_us = np.array(late) / 1e3, np.array(cpu) / 1e3
    return {"p50": float(np.percentile(late_us, 50)), "p99": float(np.percentile(late_us, 99)),
            "max": float(late_us.max()), "cpu_us": float(np.mean(cpu_us)),
            "cpu_share": float(np.mean(cpu_us) / (service_ms * 1e3))}


def measure(method: str, service_ms: float, calls: int) -> dict:
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", method, str(service_ms),
                          str(calls)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def fmt(values: list[float], digits: int = 1) -> str:
    return f"{np.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--services", default="1,10,50", help="service times in ms, comma-separated")
    ap.add_argument("--seconds", type=float, default=1.5, help="measured seconds per method, service, round")
    ap.add_argument("--with-spin", action="store_true", help="also measure spin mode")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], float(args.child[1]), int(args.child[2]))))
        return
    methods = ["old", "new"] + (["spin"] if args.with_spin else [])
    services = [float(s) for s in args.services.split(",")]
    results: dict = {(m, s): [] for m in methods for s in services}
    for r in range(args.rounds):
        for s in services:
            calls = max(30, int(args.seconds * 1e3 / s))
            for m in (methods if r % 2 == 0 else methods[::-1]):
                results[(m, s)].append(measure(m, s, calls))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    load = os.getloadavg()
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, {platform.platform()}, Python "
          f"{platform.python_version()}, load average {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}")
    print(f"{args.rounds} rounds, methods alternated; median over rounds (min-max)\n")
    print("| service | method | overshoot p50 us | p99 us | max us | CPU per call us | CPU share % |")
    print("|---|---|---|---|---|---|---|")
    for s in services:
        for m in methods:
            rs = results[(m, s)]
            print(f"| {s:g} ms | {m} | {fmt([x['p50'] for x in rs])} | {fmt([x['p99'] for x in rs])} | "
                  f"{fmt([x['max'] for x in rs])} | {fmt([x['cpu_us'] for x in rs])} | "
                  f"{fmt([100 * x['cpu_share'] for x in rs], 2)} |")


if __name__ == "__main__":
    main()
