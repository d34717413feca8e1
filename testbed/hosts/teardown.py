"""Removing simulated hosts: those of one state file (``remove``), and whatever a dead owner left (``sweep``).

``remove(state)``, in order: the Ray nodes' sessions (SIGTERM, then SIGKILL: the agents die, and with
them what they started, through the parent-death signal), what is still inside each host's network
namespace after a moment (SIGKILL), the namespaces (their veth pairs go with them), the bridge, any
process still naming the Ray folder, the folder, the token and the state file. Every step tolerates
what is already gone, so it can run twice, or after a half-made bring-up.

``sweep()`` (every run's start calls it through testbed/launchers/cleanup.py, and so does every
bring-up): state files whose owner is dead and that were not handed over to stay up, and then anything
with our prefix (state.py) that no live state file names. Cheap when there is nothing: three folder
listings, no process started. Never touches a live owner's hosts, nor hosts ``up`` left up.
"""
from __future__ import annotations

import os
import shutil
import signal
import time

from testbed.hosts import netns
from testbed.hosts.ray_nodes import stop_sessions
from testbed.hosts.state import State, all_states, existing_ids, lock, read

SETTLE_S = 3.0  # for the agents' own watchdogs to remove their folders before the rest is killed


def remove(state: State, force: bool = False) -> list[str]:
    """Remove everything of ``state``; unless ``force``, only when it is not live (kept, or its owner runs)."""
    if not force and state.live():
        return []
    lines = []
    lines += stop_sessions(dict(state.nodes))  # every node at once: the agents with their hosts' nodes
    spaces = [state.host(n).netns for n in state.hosts]
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline and any(netns.netns_pids(ns) for ns in spaces if _exists_netns(ns)):
        time.sleep(0.1)
    for ns in spaces:
        if _exists_netns(ns):
            killed = _kill(netns.netns_pids(ns))
            if killed:
                lines.append(f"killed {killed} process(es) left in {ns}")
            netns.remove_netns(ns)
            lines.append(f"namespace {ns}")
    for name in state.hosts:
        netns.remove_link(state.host(name).veth_bridge_side)
    if state.bridge and os.path.exists(f"/sys/class/net/{state.bridge}"):
        netns.remove_link(state.bridge)
        lines.append(f"bridge {state.bridge}")
    if state.ray_dir:
        killed = _kill(_naming(state.ray_dir))
        if killed:
            lines.append(f"killed {killed} process(es) of {state.ray_dir}")
        if os.path.isdir(state.ray_dir):
            shutil.rmtree(state.ray_dir, ignore_errors=True)
            lines.append(f"folder {state.ray_dir}")
    for path in (state.token_path, state.path):
        if path:
            try:
                os.remove(path)
            except OSError:
                pass
    return lines


def remove_state_file(path: str, force: bool = False) -> list[str]:
    """``remove`` for the state at ``path`` (what an owner's watchdog calls once the owner is dead)."""
    s = read(path)
    if s is None:
        return []
    with lock():
        return remove(s, force)


def sweep() -> list[str]:
    """What dead owners left: one line per set of hosts removed (empty when there was nothing)."""
    found = existing_ids()  # listed before the states are read: anything listed has its state by now
    states = all_states()
    if not found and not states:
        return []
    if os.geteuid() != 0:
        return []
    lines = []
    with lock():
        states = all_states()
        live = {s.id for s in states if s.live()}
        for s in states:
            if s.id not in live:
                done = remove(s)
                lines.append(f"removed simulated hosts {s.id} of a dead run ({', '.join(s.hosts)}): "
                             f"{len(done)} things")
        for ident, what in found.items():
            if ident in live or any(s.id == ident for s in states):
                continue
            lines.append(f"removed leftovers {ident} with no state file: {'; '.join(_remove_strays(what))}")
    return lines


def _remove_strays(what: list[str]) -> list[str]:
    out = []
    for item in what:
        kind, _, name = item.partition(" ")
        if kind == "netns":
            _kill(netns.netns_pids(name))
            netns.remove_netns(name)
        elif kind == "link":
            netns.remove_link(name)
        elif kind == "dir":
            _kill(_naming(name))
            shutil.rmtree(name, ignore_errors=True)
        out.append(item)
    return out


def _exists_netns(name: str) -> bool:
    return os.path.exists(os.path.join("/run/netns", name))


def _naming(path: str) -> list[int]:
    """Processes whose command line names ``path`` (Ray's daemons and workers name their session folder)."""
    me, out = os.getpid(), []
    needle = path.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                if needle in fh.read():
                    out.append(int(entry))
        except OSError:
            continue
    return out


def _kill(pids: list[int]) -> int:
    n = 0
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
            n += 1
        except (ProcessLookupError, PermissionError):
            pass
    return n
