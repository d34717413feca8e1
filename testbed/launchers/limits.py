"""Resource limits for local broker processes: CPU pinning (``--broker-cpus``) and what cannot be applied.

A local process can be pinned to CPUs (Linux affinity) but not capped in memory without cgroups, which
only the docker launcher drives: ``--broker-memory`` with ``--launcher local`` is recorded as not applied.
Affinity is set on every thread of the broker's process tree (a thread created later inherits it from
the thread that creates it), right after start and again once the broker is ready.
"""
from __future__ import annotations

import os
import sys

from testbed.errors import ConfigError


def parse_cpus(spec: str) -> set[int]:
    """``"1"``, ``"0-1"``, ``"0,2-3"`` -> {CPU numbers}; one clear line when it names a CPU we do not have."""
    cpus: set[int] = set()
    try:
        for part in spec.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                cpus.update(range(lo, hi + 1))
            else:
                cpus.add(int(part))
    except ValueError:
        raise ConfigError(f"--broker-cpus {spec!r} is not allowed: use CPU numbers like 1, 0-1 or 0,2") from None
    have = os.sched_getaffinity(0)
    if not cpus or not cpus <= have:
        raise ConfigError(f"--broker-cpus {spec!r} is not allowed: this machine offers CPUs "
                          f"{','.join(map(str, sorted(have)))}")
    return cpus


def pin(pid: int, cpus: set[int]) -> str:
    """Pin every thread of ``pid`` and its children to ``cpus``; returns what happened, in words."""
    import psutil
    try:
        procs = [psutil.Process(pid)]
        procs += procs[0].children(recursive=True)
    except psutil.Error as exc:
        return f"not applied: {exc}"
    done, failed = 0, []
    for p in procs:
        try:
            tids = [t.id for t in p.threads()]
        except psutil.Error:
            tids = [p.pid]
        for tid in tids:
            try:
                os.sched_setaffinity(tid, cpus)
                done += 1
            except OSError as exc:
                if exc.errno != 3:  # ESRCH: the thread ended meanwhile
                    failed.append(f"{tid}: {exc.strerror}")
    if failed:
        return f"partly applied ({done} threads pinned; failed {', '.join(failed[:3])})"
    return f"applied to {done} threads: CPUs {','.join(map(str, sorted(cpus)))}"


def apply_limits(cfg, pid: int, extra: dict, log_path: str = "") -> None:
    """Pin (if asked) and record in ``extra`` (run.json's broker.launch) what was and was not applied."""
    if cfg.broker_cpus:
        cpus = parse_cpus(cfg.broker_cpus)
        extra["broker_cpus"] = cfg.broker_cpus
        extra["broker_cpus_applied"] = pin(pid, cpus)
    if cfg.broker_memory:
        extra["broker_memory"] = cfg.broker_memory
        extra["broker_memory_applied"] = ("not applied: only the docker launcher can cap a broker's memory "
                                          "(a local process has no cgroup of its own)")
        if cfg.launcher == "auto":  # an explicit --launcher local was warned about before the run
            print(f"testbed: warning: --broker-memory {cfg.broker_memory!r} is ignored with --launcher auto: no "
                  "docker engine answers, and only the docker launcher can cap a broker's memory",
                  file=sys.stderr, flush=True)
    lines = [f"testbed: {k.replace('_applied', '')}: {extra[k]}\n"
             for k in ("broker_cpus_applied", "broker_memory_applied") if k in extra]
    if log_path and lines:
        with open(log_path, "a") as fh:
            fh.writelines(lines)
