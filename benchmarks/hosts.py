"""Benchmark: what a stage costs per message when Ray places it on a host, against the same stage on
this machine, same run of the benchmark, same broker.

Two sides, alternating ``--repeat`` times (default 3; median and min-max spread):

- one host: ``testbed.run`` with every part on this machine (broker bound to 127.0.0.1);
- hosts: the same configuration and seed with ``--place stage_a=cam --place stage_b=gpu1`` over simulated
  hosts (testbed/hosts/: network + time namespaces, a Ray node each; the broker stays on this machine,
  bound to its address on the hosts' bridge). The stage processes are started by the hosts' agents and
  ship their records back on a socket instead of a pipe; the loops are the same code.

Per message, p50 in microseconds: stage A's bookkeeping (``a_harness``: envelope, stamps, records) and
publish call, stage B's bookkeeping (``b_harness``), receive and ack calls. Bookkeeping is ours and must
not depend on where a stage runs: the target is within 5 us of the one-host run. The client calls cross
a veth pair and a bridge on hosts instead of loopback: they are shown, not targeted.

    flock /tmp/testbed-heavy.lock .venv/bin/python benchmarks/hosts.py [--broker redis] [--seconds 6]
        [--rate 100] [--repeat 3] [--write FILE]

Root and the hosts extra (ray) are needed. It brings up two simulated hosts (cam +1000 s, gpu1 -37.5 s)
with ``python -m testbed.hosts up`` unless hosts are up already (it then refuses: ``down`` them first),
and takes them down at the end.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import _common as C  # noqa: E402 - first: the project's ``brokers`` package

from testbed.config import RunConfig  # noqa: E402

HOSTS = "ray: simulated\nhosts:\n  cam: {cpus: 1, clock_offset_s: 1000}\n  gpu1: {cpus: 1, clock_offset_s: -37.5}\n"
COSTS = [("a_harness_p50_us", "stage A bookkeeping", True), ("publish_call_p50_us", "stage A publish call", False),
         ("b_harness_p50_us", "stage B bookkeeping", True), ("recv_call_p50_us", "stage B receive call", False),
         ("ack_call_p50_us", "stage B ack call", False)]
TARGET_US = 5.0


def hosts_cli(*args) -> None:
    r = subprocess.run([sys.executable, "-m", "testbed.hosts", *args], cwd=C.ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"python -m testbed.hosts {' '.join(args)}: {r.stderr.strip()}")


def main() -> int:
    ap = C.parser(__doc__, seconds=6.0)
    ap.add_argument("--broker", default="redis", help="the broker between the stages (default redis)")
    ap.add_argument("--rate", type=float, default=100.0, help="frames/s (2 messages each; default 100)")
    a = ap.parse_args()
    from testbed import hosts
    if hosts.up_state() is not None:
        raise SystemExit("simulated hosts are up already: python -m testbed.hosts down first")
    work = tempfile.mkdtemp(prefix="testbed-hostsbench-")
    path = os.path.join(work, "hosts.yaml")
    with open(path, "w") as fh:
        fh.write(HOSTS)
    extra = {"launcher": "local"} if a.broker != "zeromq" else {}
    base = dict(broker=a.broker, rate=a.rate, fanout="2", arrival="poisson", producer_rate=float("inf"),
                consumer_rate=float("inf"), message_bytes=1024, duration=a.seconds + 1.0, warmup=1.0, drain=3.0,
                seed=3, no_trace=True, **extra)
    n = {"one": 0, "hosts": 0}

    def side(name: str):
        def go() -> dict:
            n[name] += 1
            place = {"hosts": path, "place": {"stage_a": ["cam"], "stage_b": ["gpu1"]}} if name == "hosts" else {}
            cfg = RunConfig(**base, **place, out=os.path.join(work, f"{name}-{n[name]}"))
            s = C.harness(cfg)
            C.say(f"  {name} #{n[name]}: " + ", ".join(f"{k} {s[k]:.1f}" for k, _, _ in COSTS) +
                  f", e2e p50 {s['e2e_p50_ms']:.3f} ms, lost {s['lost']}")
            return s
        return go

    C.say(f"bringing up 2 simulated hosts ({path})")
    hosts_cli("up", path)
    try:
        got = C.alternate({"one": side("one"), "hosts": side("hosts")}, a.repeat)
    finally:
        hosts_cli("down")
    rows = []
    ok = True
    for key, label, target in COSTS:
        d = C.med(got["hosts"], key) - C.med(got["one"], key)
        verdict = ""
        if target:
            good = abs(d) <= TARGET_US
            ok = ok and good
            verdict = "met" if good else "NOT met"
        rows.append([label, C.cell(got["one"], key, "{:.1f}"), C.cell(got["hosts"], key, "{:.1f}"), f"{d:+.1f}",
                     f"within {TARGET_US:g} us: {verdict}" if target else "shown"])
    rows.append(["e2e p50 (ms)", C.cell(got["one"], "e2e_p50_ms"), C.cell(got["hosts"], "e2e_p50_ms"),
                 f"{C.med(got['hosts'], 'e2e_p50_ms') - C.med(got['one'], 'e2e_p50_ms'):+.3f}", "shown"])
    text = (f"{C.machine()}\n\n{a.broker}, {a.rate:g} frames/s x 2 messages of 1 KB, {a.seconds:g} s measured, "
            f"{a.repeat} alternations; per message p50 in us (median, min-max)\n\n"
            + C.table(["per message", "one host", "stage A on cam, stage B on gpu1", "hosts - one", "target"],
                      rows, ["l", "r", "r", "r", "l"]))
    C.emit(text, a.write)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
