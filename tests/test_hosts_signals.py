"""A run over simulated hosts it brought up itself (root), stopped mid-load by SIGINT, SIGTERM or SIGKILL:
no namespace, veth, bridge, Ray process or broker is left (SIGINT/SIGTERM: removed by the run itself,
which writes what it measured with complete=false; SIGKILL: by its watchdog, or at the latest by the
next start's sweep). The three runs go at once (each its own hosts, its own Ray cluster): the bring-ups
are most of the time."""
from __future__ import annotations

import csv
import glob
import json
import os
import select
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
    pytest.mark.skipif(__import__("shutil").which("redis-server") is None, reason="redis-server not installed"),
]
SIGNALS = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM, "SIGKILL": signal.SIGKILL}


def _state_of(pid: int):
    from testbed.hosts.state import read
    for path in glob.glob("/run/testbed-hosts/*.json"):
        st = read(path)
        if st is not None and st.owner_pid == pid and st.nodes.get("mq"):
            return st
    return None


def _pids(st) -> list[int]:
    """Every process of the run's hosts: the Ray head's session and what runs in the host's namespace."""
    from testbed.hosts import netns, ray_nodes
    out = set(netns.netns_pids(st.host("mq").netns))
    out.update(ray_nodes.session_members(int(st.nodes["head"]["pid"])))
    return sorted(out)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def leftovers(st, pids) -> list[str]:
    out = []
    if st.host("mq").netns in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout:
        out.append("namespace")
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    out += [n for n in (st.bridge, st.host("mq").veth_bridge_side) if f" {n}:" in links or f" {n}@" in links]
    out += [f"process {p}" for p in pids if _alive(p)]
    if os.path.exists(st.path) or os.path.exists(st.ray_dir):
        out.append("state file or Ray folder")
    return out


def test_signals_mid_run_leave_nothing(tmp_path):
    hosts = tmp_path / "one.yaml"
    hosts.write_text(yaml.safe_dump({"ray": "simulated", "hosts": {"mq": {"cpus": 1, "clock_offset_s": 5}}}))
    runs = {}
    for name in SIGNALS:
        out = str(tmp_path / name)
        argv = [sys.executable, "-m", "testbed.run", "--broker", "redis", "--launcher", "local", "--hosts",
                str(hosts), "--place", "broker=mq", "--duration", "60", "--warmup", "0", "--rate", "20",
                "--fanout", "1", "--message-bytes", "1024", "--out", out]
        # SIGINT's default disposition: a job started in the background inherits it ignored
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        runs[name] = {"proc": proc, "out": out, "err": b""}
    try:
        deadline = time.monotonic() + 150
        waiting = dict(runs)
        while waiting:  # each run's first progress line: its load is under way
            assert time.monotonic() < deadline, {n: r["err"][-500:] for n, r in waiting.items()}
            ready, _, _ = select.select([r["proc"].stderr for r in waiting.values()], [], [], 1.0)
            for name, r in list(waiting.items()):
                if r["proc"].stderr in ready:
                    r["err"] += os.read(r["proc"].stderr.fileno(), 65536)
                    if b"s load]" in r["err"]:
                        del waiting[name]
                assert r["proc"].poll() is None, (name, r["err"][-2000:])
        for name, r in runs.items():
            r["state"] = _state_of(r["proc"].pid)
            assert r["state"] is not None, name
            r["pids"] = _pids(r["state"])
            assert len(r["pids"]) >= 4, r["pids"]  # the head's daemons, the node's, the agent, the broker
        for name, r in runs.items():
            r["proc"].send_signal(SIGNALS[name])
        for name, r in runs.items():
            _, err = r["proc"].communicate(timeout=60)
            r["err"] += err
    finally:
        for r in runs.values():
            if r["proc"].poll() is None:
                r["proc"].kill()
                r["proc"].wait()
    for name in ("SIGINT", "SIGTERM"):
        r = runs[name]
        assert r["proc"].returncode == 130, (name, r["err"][-2000:])
        assert not leftovers(r["state"], r["pids"]), (name, leftovers(r["state"], r["pids"]))
        with open(os.path.join(r["out"], "summary.csv")) as fh:
            row = next(csv.DictReader(fh))
        assert row["complete"].lower() == "false" and int(row["sent"]) > 0 and row["hosts"] == "broker=mq"
        meta = json.load(open(os.path.join(r["out"], "run.json")))
        assert meta["hosts"]["brought_up_for_this_run"] and "mq" in meta["hosts"]["clocks"]
    r = runs["SIGKILL"]
    assert r["proc"].returncode == -signal.SIGKILL
    deadline = time.monotonic() + 20  # the watchdog removes them; else the next start's sweep does
    while leftovers(r["state"], r["pids"]) and time.monotonic() < deadline:
        time.sleep(0.25)
    if leftovers(r["state"], r["pids"]):
        from testbed.hosts import teardown
        teardown.sweep()
    assert not leftovers(r["state"], r["pids"]), leftovers(r["state"], r["pids"])
