"""What ties every process and container a run starts to the life of the run, even when it is SIGKILLed.

Two mechanisms, because neither covers everything alone:

- The Linux parent-death signal: a broker process (``die_with_parent``, a ``preexec_fn``) and a stage
  process (``run_child``, at the start of the spawned child) get SIGKILL when the thread that started
  them ends; it survives ``exec`` (a launcher script that execs its runtime) but not ``fork``: a
  broker's own children (a shell wrapper that runs the server as its child) do not have it. Brokers are
  given it only when started from the main thread (a worker thread may end before its broker should).
- A watchdog: one small process per orchestrating process (``watchdog.py``), in a session of its own,
  holding the read end of a pipe only we write to. ``track_dir`` (every private folder, from
  ``base.write_owner``), ``track_container`` (before the container is created) and ``track_hosts``
  (simulated hosts' state file, before they are made: testbed/hosts/) tell it what exists;
  when the pipe reaches end of file (the orchestrator is gone, however it went) it removes what is still
  there: the containers by name, the process groups that point into the folders, the folders. After a
  normal exit there is nothing left, and it exits without looking further.

What neither catches (a watchdog killed with the run) the next run's start-up sweep removes
(``cleanup.sweep``): owner files and labels say what is ours.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading

PR_SET_PDEATHSIG = 1
WATCHDOG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "watchdog.py")

try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: the child only calls it
except (OSError, AttributeError):  # not Linux: the watchdog and the sweep still apply
    _prctl = None

_lock = threading.Lock()
_pipe: tuple[int, int] | None = None  # (owner pid, write fd) of this process's watchdog
_watchdog = None  # its Popen, kept (it outlives us; a collected Popen would warn)


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent thread ends."""
    return _prctl is not None and _prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0


def die_with_parent():
    """A ``preexec_fn`` (or None off the main thread): the child gets SIGKILL when we end."""
    if _prctl is None or threading.current_thread() is not threading.main_thread():
        return None
    parent = os.getpid()

    def preexec() -> None:
        set_parent_death_signal()
        if os.getppid() != parent:  # we ended between the fork and the prctl
            os._exit(1)
    return preexec


def run_child(parent_pid: int, target, *args):
    """The entry of a spawned stage process: die with the orchestrator, then run ``target``."""
    set_parent_death_signal()
    if os.getppid() != parent_pid:
        os._exit(1)
    return target(*args)


# -- the watchdog ----------------------------------------------------------------------------------
def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat): with the pid,
    it names one process (pids are reused)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "0"


def _send(line: str) -> None:
    global _pipe
    with _lock:
        if _pipe is None or _pipe[0] != os.getpid():  # none yet, or inherited through a fork
            _pipe = (os.getpid(), _start_watchdog())
        try:
            os.write(_pipe[1], (line + "\n").encode())
        except OSError:  # the watchdog is gone (killed): the next run's sweep remains
            pass


def _start_watchdog() -> int:
    r, w = os.pipe()  # both ends close on exec: only the watchdog gets ``r``, as its stdin
    root = os.path.dirname(os.path.dirname(os.path.dirname(WATCHDOG)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    global _watchdog
    try:
        _watchdog = subprocess.Popen(
            [sys.executable, WATCHDOG, str(os.getpid()), _start_time(os.getpid())], stdin=r,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/", env=env,
            start_new_session=True)  # not in our group: a Ctrl-C or killpg leaves it
    except OSError:
        pass  # no watchdog: the parent-death signal and the sweep remain
    finally:
        os.close(r)
    return w


def watchdog_pid() -> int | None:
    """This process's watchdog (None before anything was tracked)."""
    with _lock:
        ours = _watchdog is not None and _pipe is not None and _pipe[0] == os.getpid()
        return _watchdog.pid if ours else None


def track_dir(path: str) -> None:
    """A private folder (and the processes pointing into it) to remove if we die with it in place."""
    _send(f"dir {os.path.abspath(path)}")


def track_container(host: str, name: str) -> None:
    """A container (by name, before it exists) to remove from ``host`` if we die first."""
    _send(f"container {host} {name}")


def untrack_container(name: str) -> None:
    """The container is removed: nothing to do for it."""
    with _lock:
        ours = _pipe is not None and _pipe[0] == os.getpid()
    if ours:
        _send(f"-container {name}")


def track_hosts(state_path: str) -> None:
    """Simulated hosts (their state file, testbed/hosts/state.py) to remove if we die with them up."""
    _send(f"hosts {os.path.abspath(state_path)}")


def untrack_hosts(state_path: str) -> None:
    """The hosts are removed, or handed over to stay up: nothing to do for them."""
    with _lock:
        ours = _pipe is not None and _pipe[0] == os.getpid()
    if ours:
        _send(f"-hosts {os.path.abspath(state_path)}")
