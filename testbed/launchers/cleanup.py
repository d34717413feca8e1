"""Remove what crashed runs left behind: private broker processes, their temporary folders, containers.

``python -m testbed.brokers cleanup`` calls ``cleanup_all()``. A run that ends normally, fails or is
interrupted stops its own brokers; only a run that was itself killed (SIGKILL, a crash of the
interpreter) leaves them. Those are found by what the local launcher gives every broker: a temporary
folder ``<tmp>/testbed-<name>-*`` (``base.private_tmp``) that the broker's command line, working
directory or environment names.

A folder still used by a live run is left alone (other people may run the testbed on the same machine
at the same time):
- the local launcher writes ``owner`` into its folder (``base.write_owner``) (``"<pid> <create_time>"`` of the orchestrating
  process): live while that process is;
- otherwise, live while one of the broker processes still has a Python parent (its orchestrator) that
  is not itself part of the leftovers; an orphan's parent is init.
Leftover process groups get SIGTERM, then SIGKILL after a few seconds; the folders are removed.
Folders with no process at all are removed once they are older than ``STALE_EMPTY_S``. Folders whose
name says docker or engine belong to a private Docker engine meant to outlive runs: never touched here.
"""
from __future__ import annotations

import glob
import os
import shutil
import signal
import tempfile
import time

from testbed.launchers.base import OWNER_FILE, write_owner  # noqa: F401 (write_owner: re-exported)

STALE_EMPTY_S = 120.0
TERM_WAIT_S = 3.0


def cleanup_all() -> list[str]:
    lines = cleanup_local()
    lines += cleanup_docker()
    return lines


# -- local processes ------------------------------------------------------------------------------
#: folders of long-lived helpers (a private Docker engine) are not a run's leftovers
NOT_RUNS = ("docker", "engine")


def _testbed_dirs() -> list[str]:
    found = glob.glob(os.path.join(tempfile.gettempdir(), "testbed-*"))
    return sorted(d for d in found if os.path.isdir(d) and not any(w in os.path.basename(d) for w in NOT_RUNS))


def _references(proc, dirs: list[str]) -> str | None:
    """The testbed folder ``proc`` points into (command line, working directory, environment)."""
    import psutil
    texts = []
    try:
        texts.extend(proc.cmdline())
    except psutil.Error:
        pass
    try:
        texts.append(proc.cwd())
    except psutil.Error:
        pass
    try:
        texts.extend(proc.environ().values())
    except psutil.Error:
        pass
    for d in dirs:
        if any(d in t for t in texts):
            return d
    return None


def _owner_alive(tmp_dir: str) -> bool | None:
    """True/False from the owner file; None when there is none (or it is unreadable)."""
    import psutil
    try:
        with open(os.path.join(tmp_dir, OWNER_FILE)) as fh:
            pid_s, created_s = fh.read().split()
        p = psutil.Process(int(pid_s))
        return abs(p.create_time() - float(created_s)) < 1.0
    except (OSError, ValueError):
        return None
    except psutil.Error:
        return False


def _has_live_orchestrator(procs, members: set[int]) -> bool:
    import psutil
    for p in procs:
        try:
            parent = p.parent()
            if parent is None or parent.pid == 1 or parent.pid in members:
                continue
            name = (parent.name() or "").lower()
            argv0 = (parent.cmdline() or [""])[0].lower()
            if "python" in name or "python" in argv0 or "pytest" in name:
                return True
        except psutil.Error:
            continue
    return False


def cleanup_local() -> list[str]:
    import psutil
    dirs = _testbed_dirs()
    if not dirs:
        return ["local: no testbed broker folders or processes left"]
    me = os.getpid()
    by_dir: dict[str, list] = {d: [] for d in dirs}
    for proc in psutil.process_iter():
        if proc.pid == me:
            continue
        d = _references(proc, dirs)
        if d:
            by_dir[d].append(proc)
    lines = []
    for d, procs in by_dir.items():
        owner = _owner_alive(d)
        members = {p.pid for p in procs}
        live = owner if owner is not None else _has_live_orchestrator(procs, members)
        if live:
            lines.append(f"local: {d} belongs to a run still going: left alone")
            continue
        if not procs:
            try:
                # a file's mtime is wall-clock time, so its age needs the wall clock (not a duration we measure)
                age = time.time() - os.path.getmtime(d)
            except OSError:
                continue
            if age < STALE_EMPTY_S:
                lines.append(f"local: {d} is new ({age:.0f}s) and has no process: left alone")
                continue
        killed = _kill_groups(procs)
        shutil.rmtree(d, ignore_errors=True)
        what = ", ".join(killed) if killed else "no process"
        lines.append(f"local: removed {d} ({what})")
    return lines


def _kill_groups(procs) -> list[str]:
    import psutil
    my_pgid = os.getpgid(0)
    groups: dict[int, str] = {}
    for p in procs:
        try:
            pgid = os.getpgid(p.pid)
            groups.setdefault(pgid, f"{p.name()} pid {p.pid}")
        except (ProcessLookupError, psutil.Error):
            continue
    groups.pop(my_pgid, None)  # never our own group
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pgid in list(groups):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                pass
        if sig == signal.SIGTERM:
            psutil.wait_procs([p for p in procs if p.is_running()], timeout=TERM_WAIT_S)
    return [f"killed {what}" for what in groups.values()]


# -- containers -----------------------------------------------------------------------------------
def cleanup_docker() -> list[str]:
    try:
        from testbed.launchers import docker as docker_launcher
    except ImportError as exc:
        return [f"docker: launcher not available ({exc}): nothing to clean"]
    try:
        answers = getattr(docker_launcher, "engine_answers", None)
        if answers is not None and not answers():
            return ["docker: no engine answers: nothing to clean"]
        out = docker_launcher.cleanup()
    except Exception as exc:  # noqa: BLE001 - whatever the engine says, one line
        return [f"docker: cleanup failed: {' '.join(str(exc).split()) or type(exc).__name__}"]
    if out is None:
        return ["docker: cleaned"]
    return [f"docker: {line}" for line in (out if isinstance(out, (list, tuple)) else [out])]
