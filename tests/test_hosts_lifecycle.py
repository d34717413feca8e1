"""Simulated hosts leave nothing behind however their owner ends (root): Ctrl-C, SIGTERM (also in the middle
of ``python -m testbed.hosts up``), SIGKILL (the owner's watchdog removes them), SIGKILL of the owner and
its watchdog (the next start's sweep, through testbed/launchers/cleanup.py, removes them)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="simulated hosts need root (namespaces, a bridge, tc)"),
    pytest.mark.skipif(__import__("importlib").util.find_spec("ray") is None, reason="needs the hosts extra (ray)"),
]

#: a driver holding one simulated host, with a process started on it through its agent and a stage process
DRIVER = r"""
import json, signal, sys, time
from testbed import hosts
from testbed.hosts import wire
from testbed.launchers import lifeline
def term(signum, frame):
    raise KeyboardInterrupt
signal.signal(signal.SIGTERM, term)
c = hosts.up(hosts.parse({"hosts": {"solo": {"clock_offset_s": 5}}}))
try:
    p = c.node("solo").start_process("sleep", ["sleep", "600"], sys.argv[1])
    w = c.worker("solo", "w", "tests.hosts_stage:sleeper", [wire.CONN, wire.START_EVT, wire.STOP_EVT, wire.T0],
                 c.control())
    w.start()
    print(json.dumps({"id": c.state.id, "watchdog": lifeline.watchdog_pid(), "pids": [p.pid, w.pid]}), flush=True)
    time.sleep(600)
finally:
    c.close()
"""


def leftovers(ident: str) -> list[str]:
    out = []
    if f"tbh{ident}" in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout:
        out.append("namespace")
    if f"tbh{ident}" in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout:
        out.append("link")
    procs = subprocess.run(["pgrep", "-af", f"tbh-{ident}"], capture_output=True, text=True).stdout
    out += [ln for ln in procs.splitlines() if "pgrep" not in ln]
    for path in (f"/run/testbed-hosts/{ident}.json", f"/tmp/tbh-{ident}"):
        if os.path.exists(path):
            out.append(path)
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def _start_driver(tmp_path):
    p = subprocess.Popen([sys.executable, "-c", DRIVER, str(tmp_path / "sleep.log")], stdout=subprocess.PIPE,
                         text=True, cwd=ROOT, start_new_session=True,
                         # SIGINT's default: a job started in the background inherits it ignored
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    line = p.stdout.readline()
    assert line, f"the driver did not come up (exit {p.wait()})"
    info = json.loads(line)
    assert all(_alive(pid) for pid in info["pids"]) and not leftovers_missing(info["id"])
    return p, info


def leftovers_missing(ident: str) -> list[str]:
    """What a live set of hosts should have and does not."""
    have = leftovers(ident)
    return [w for w in ("namespace", "link", f"/run/testbed-hosts/{ident}.json") if w not in have]


def _gone(info, timeout_s: float) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while True:
        left = leftovers(info["id"]) + [f"pid {p}" for p in info["pids"] if _alive(p)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.25)


def test_ctrl_c_removes_everything(tmp_path):
    p, info = _start_driver(tmp_path)
    p.send_signal(signal.SIGINT)
    assert p.wait(60) != 0
    assert not _gone(info, 5)


def test_sigkill_of_the_owner_its_watchdog_removes_everything(tmp_path):
    p, info = _start_driver(tmp_path)
    assert info["watchdog"] and _alive(info["watchdog"])
    p.kill()
    p.wait()
    assert not _gone(info, 30)


def test_sigkill_of_owner_and_watchdog_the_sweep_removes_everything(tmp_path):
    from testbed.launchers import cleanup
    p, info = _start_driver(tmp_path)
    os.kill(info["watchdog"], signal.SIGKILL)
    p.kill()
    p.wait()
    time.sleep(1.0)
    assert f"/run/testbed-hosts/{info['id']}.json" in leftovers(info["id"]), "nobody removed them yet"
    lines = cleanup.sweep()
    assert any(ln.startswith("hosts: removed simulated hosts " + info["id"]) for ln in lines), lines
    assert not _gone(info, 10)
    assert not [ln for ln in cleanup.sweep() if ln.startswith("hosts:")], "nothing left to sweep"


def test_sigterm_in_the_middle_of_up(tmp_path):
    path = tmp_path / "solo.yaml"
    path.write_text(yaml.safe_dump({"hosts": {"solo": {}, "duo": {"clock_offset_s": -3}}}))
    p = subprocess.Popen([sys.executable, "-m", "testbed.hosts", "up", str(path)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=ROOT)
    line = p.stdout.readline()  # "network: bridge tbhXXXXbr ...": the namespaces exist, Ray is starting
    assert line.startswith("network: bridge tbh"), line + p.stderr.read()
    ident = line.split()[2][3:7]
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130 and "interrupted" in err, err
    assert not _gone({"id": ident, "pids": []}, 5)
