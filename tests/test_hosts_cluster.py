"""Simulated hosts with a real Ray cluster on this machine (root): ``python -m testbed.hosts up`` brings up
three hosts (clock offsets +1000 s, 0, -37.5 s), this process attaches as a run would, and then: clocks
estimated within their stated uncertainty, a broker started on a host through ``RemoteNode`` (reached over
the bridge, paused, killed, restarted, partitioned), stage processes on hosts streaming records back and
obeying start/stop/t0, and what dies with what. One cluster for the module: Ray's start-up is seconds."""
from __future__ import annotations

import json
import multiprocessing.connection as mpc
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import yaml

from testbed.harness import records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="simulated hosts need root (namespaces, a bridge, tc)"),
    pytest.mark.skipif(__import__("importlib").util.find_spec("ray") is None, reason="needs the hosts extra (ray)"),
]

SPEC = {"ray": "simulated", "hosts": {"cam": {"cpus": 1, "clock_offset_s": 1000}, "mq": {"cpus": 1},
                                      "gpu1": {"cpus": 1, "clock_offset_s": -37.5}}}


def cli(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "testbed.hosts", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, env=env)


def leftovers(ident: str) -> list[str]:
    out = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    if f"tbh{ident}" in netns:
        out.append("namespace")
    if f"tbh{ident}" in links:
        out.append("link")
    procs = subprocess.run(["pgrep", "-af", f"tbh-{ident}"], capture_output=True, text=True).stdout
    out += [ln for ln in procs.splitlines() if "pgrep" not in ln]
    if os.path.exists(f"/run/testbed-hosts/{ident}.json") or os.path.exists(f"/tmp/tbh-{ident}"):
        out.append("state or folder")
    return out


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    from testbed import hosts
    if hosts.up_state() is not None:
        pytest.skip("simulated hosts are up already (python -m testbed.hosts status): this test brings its own")
    path = tmp_path_factory.mktemp("hosts") / "hosts.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    t = time.monotonic()
    r = cli("up", str(path))
    took = time.monotonic() - t
    assert r.returncode == 0, r.stderr
    st = hosts.up_state()
    assert st is not None and st.persistent
    try:
        c = hosts.open_hosts(hosts.load(str(path)))
        try:
            yield {"cluster": c, "state": st, "stdout": r.stdout, "path": str(path), "up_s": took}
        finally:
            c.close()
    finally:
        r = cli("down")
        assert r.returncode == 0, r.stderr
        assert not leftovers(st.id), leftovers(st.id)


def test_up_leaves_hosts_up_and_status_sees_them(up):
    c, st = up["cluster"], up["state"]
    assert not c.owned and c.state.id == st.id, "a run attaches to hosts that are up"
    for name in SPEC["hosts"]:
        assert st.host(name).address in up["stdout"] and name in up["stdout"]
    assert up["stdout"].count("clock offset") == 3
    r = cli("status")
    assert r.returncode == 0 and r.stdout.count("Ray node alive") == 3, r.stdout
    assert "+1000.0000" in r.stdout or "+999.9999" in r.stdout, r.stdout
    other = os.path.join(os.path.dirname(up["path"]), "other.yaml")
    with open(other, "w") as fh:
        yaml.safe_dump({"hosts": {"solo": {}}}, fh)
    r = cli("up", other)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "down first" in r.stderr, r.stderr
    r = cli("up", up["path"])
    assert r.returncode == 0 and "already up" in r.stdout


def test_clock_offsets_within_stated_uncertainty(up):
    c = up["cluster"]
    c.start_clocks(0.25)
    time.sleep(1.5)
    c.stop_clocks()
    report = c.clock_report()
    print(json.dumps(report, indent=1))
    for name, h in SPEC["hosts"].items():
        r = report[name]
        configured = round(h.get("clock_offset_s", 0) * 1e9)
        error_us = abs(r["clock_offset_ns"] - configured) / 1e3
        assert error_us <= r["clock_uncertainty_us"], (name, error_us, r)
        assert r["clock_uncertainty_us"] < 1000 and r["clock_samples"] >= 4 and abs(r["clock_drift_ppm"]) < 100
        assert r["clock_rtt_us"]["min"] > 0


def _ping(s: socket.socket) -> bytes:
    s.sendall(b"PING\r\n")
    return s.recv(64)


def test_broker_on_a_host(up, tmp_path):
    import redis

    import brokers
    from testbed.config import RunConfig
    from testbed.launchers import local
    c, st = up["cluster"], up["state"]
    mq = st.host("mq")
    spec = brokers.spec("redis")
    h = local.start(RunConfig(broker="redis"), "hosts-test", str(tmp_path), spec, spec.impl(""), node=c.node("mq"))
    try:
        ep = h.endpoint
        assert ep.url.startswith(f"redis://{mq.address}:") and ep.extra["host"] == "mq"
        pid = h.server.pid
        ident = subprocess.run(["ip", "netns", "identify", str(pid)], capture_output=True, text=True).stdout.strip()
        assert ident == mq.netns, "the broker runs inside the host's namespace"
        listening = subprocess.run(["ip", "netns", "exec", mq.netns, "ss", "-ltnH"], capture_output=True,
                                   text=True).stdout
        local = [ln.split()[3] for ln in listening.splitlines() if ln.split()[3].endswith(f":{ep.extra['port']}")]
        assert local == [f"{mq.address}:{ep.extra['port']}"], listening  # bound to the host's address alone
        assert redis.Redis.from_url(ep.url, socket_timeout=2).ping()  # from the orchestrator, over the bridge
        h.pause()
        with pytest.raises(redis.exceptions.TimeoutError):
            redis.Redis.from_url(ep.url, socket_timeout=0.5).ping()
        h.resume()
        assert redis.Redis.from_url(ep.url, socket_timeout=2).ping()
        h.kill()
        assert not h.server.alive()
        h.restart()
        assert h.server.pid != pid and ep.extra["restarts"] == 1
        port = ep.extra["port"]
        s = socket.create_connection((mq.address, port), timeout=2)
        assert _ping(s) == b"+PONG\r\n"
        c.partition("mq")
        try:
            s.settimeout(1.0)
            with pytest.raises(socket.timeout):
                _ping(s)  # the partition cuts the established connection
        finally:
            c.heal("mq")
        s.settimeout(10)
        assert s.recv(64) == b"+PONG\r\n", "after heal the same connection delivers the answer"
        s.close()
        folder = ep.extra["tmp_dir"]
        assert os.path.isdir(folder)
    finally:
        h.stop()
    assert not os.path.exists(folder)
    left = subprocess.run(["ip", "netns", "pids", mq.netns], capture_output=True, text=True).stdout.split()
    assert "redis-server" not in [open(f"/proc/{p}/comm").read().strip() for p in left if os.path.exists(f"/proc/{p}")]


def test_stage_processes_stream_records_and_obey_control(up):
    from testbed.hosts import wire
    from testbed.orchestration.collector import Collector
    c = up["cluster"]
    ctl = c.control()
    workers = [c.worker(h, f"stage {h}", "tests.hosts_stage:stream",
                        [wire.CONN, wire.START_EVT, wire.STOP_EVT, wire.T0, h], ctl) for h in ("cam", "gpu1")]
    col = Collector([w.conn for w in workers], records.message_dtype((), ()))
    for w in workers:
        w.start()
    deadline = time.monotonic() + 60
    while len(col.ready) < 2:
        col.poll(0.1)
        assert time.monotonic() < deadline and all(w.is_alive() for w in workers), col.errors
    assert {col.ready[i]["tag"] for i in (0, 1)} == {"cam", "gpu1"}
    time.sleep(0.3)
    assert not col.frames, "nothing before the start"
    t0 = time.monotonic_ns() + 100_000_000
    ctl.t0.value = t0
    ctl.start_evt.set()
    end = time.monotonic() + 1.2
    while time.monotonic() < end:
        col.poll(0.1)
    ctl.stop_evt.set()
    deadline = time.monotonic() + 20
    while col.open and time.monotonic() < deadline:
        col.poll(0.1)
    for w in workers:
        w.join(10)
    assert [w.exitcode for w in workers] == [0, 0], col.errors
    assert len(col.stopped) == 2 and not col.errors
    frames = col.frames_array()
    for w, name in zip(workers, ("cam", "gpu1")):
        clock = c.hosts[name].clock
        unc = clock.fit().uncertainty_ns
        seen = next(f for f in col.failed if abs(clock.to_orchestrator(f["t0_seen"]) - t0) < 1e9)
        assert abs(clock.to_orchestrator(seen["t0_seen"]) - t0) <= unc, "t0 reached the host on its own clock"
        assert clock.to_orchestrator(seen["started_ns"]) >= t0 - 100_000_000 - unc, "it waited for the start"
    starts = frames["start"]
    assert len(frames) > 1000, len(frames)  # two streams of 1000 frames/s for 1.2 s, less the start-up
    by_host = {n: c.hosts[n].clock.to_orchestrator(starts) for n in ("cam", "gpu1")}
    on_time = sum(int(((v >= t0 - 1e6) & (v <= t0 + 10e9)).sum()) for v in by_host.values())
    assert on_time == len(frames), "every frame ran after t0 on the orchestrator's clock"
    for w in workers:
        w.close()


def test_pause_kill_and_orphaned_stages(up):
    from testbed.hosts import wire
    from testbed.orchestration.collector import Collector
    c = up["cluster"]
    ctl = c.control()
    args = [wire.CONN, wire.START_EVT, wire.STOP_EVT, wire.T0]
    a = c.worker("gpu1", "sleeper a", "tests.hosts_stage:sleeper", args, ctl)
    b = c.worker("gpu1", "sleeper b", "tests.hosts_stage:sleeper", args, ctl)
    col = Collector([a.conn, b.conn], records.message_dtype((), ()))
    a.start()
    b.start()
    while len(col.ready) < 2:
        col.poll(0.1)

    def state(pid):
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    a.signal(signal.SIGSTOP)
    time.sleep(0.2)
    assert state(a.pid) == "T"
    a.signal(signal.SIGCONT)
    time.sleep(0.2)
    assert state(a.pid) in ("S", "R")
    a.kill()
    a.join(5)
    assert not a.is_alive() and a.exitcode == -signal.SIGKILL
    b.conn.close()  # the orchestrator's side goes away: the stage stops itself
    b.join(10)
    from testbed.hosts.child import ORPHAN_EXIT
    assert b.exitcode == ORPHAN_EXIT
    a.close()
    b.close()


def test_what_an_agent_started_dies_with_it(up, tmp_path):
    from testbed.hosts import wire
    from testbed.hosts.cluster import Host
    from testbed.hosts.handle import AgentHandle
    from testbed.hosts.remote_node import RemoteNode
    c = up["cluster"]
    cam = c.hosts["cam"]
    agent = AgentHandle.create(c.ray, "cam", cam.address, os.urandom(16))
    node = RemoteNode(agent)
    proc = node.start_process("sleep", ["sleep", "600"], str(tmp_path / "sleep.log"))
    host = Host("cam", cam.address, agent, cam.clock, node)
    w = c.worker("cam", "x", "tests.hosts_stage:sleeper", [wire.CONN, wire.START_EVT, wire.STOP_EVT, wire.T0],
                 c.control())
    w.host = host
    w.start()
    w.conn.connected.wait(30)
    pids = [proc.pid, w.pid]
    assert all(os.path.exists(f"/proc/{p}") for p in pids)
    agent.kill()
    deadline = time.monotonic() + 10
    while any(os.path.exists(f"/proc/{p}") for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(os.path.exists(f"/proc/{p}") for p in pids), "the parent-death signal"
    from testbed.hosts.errors import HostDown
    with pytest.raises(HostDown, match="host cam is down"):
        proc.alive()
    w.close()


def test_listener_lets_in_only_the_runs_peers(up):
    c = up["cluster"]
    before = c.listener.refused
    with pytest.raises((mpc.AuthenticationError, EOFError, ConnectionError)):
        mpc.Client(c.listener.address, family="AF_INET", authkey=os.urandom(32))
    conn = mpc.Client(c.listener.address, family="AF_INET", authkey=c.listener.authkey)
    from testbed.hosts import wire
    conn.send_bytes(wire.hello("nobody-expected", os.getpid()))
    with pytest.raises(EOFError):
        conn.recv_bytes()
    deadline = time.monotonic() + 5
    while c.listener.refused < before + 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert c.listener.refused == before + 2


EXISTING = r"""
import json, sys
from testbed import hosts
from testbed.errors import TestbedError
address = sys.argv[1]
out = {}
try:
    hosts.connect(address, hosts.parse({"ray": address, "hosts": {"cam": {}, "gpu7": {}}}))
except TestbedError as exc:
    out["missing"] = str(exc)
c = hosts.connect(address)
out["hosts"] = {n: [h.address, h.clock.report()["clock_offset_ns"], h.clock.report()["clock_uncertainty_us"]]
                for n, h in c.hosts.items()}
c.close()
print(json.dumps(out))
"""


def test_an_existing_cluster_as_a_user_gives_it(up):
    st = up["state"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    r = subprocess.run([sys.executable, "-c", EXISTING, st.ray_address], capture_output=True, text=True, cwd=ROOT,
                       timeout=120, env={**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": st.token_path})
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert "gpu7" in out["missing"] and "\n" not in out["missing"] and "cam, gpu1, mq" in out["missing"]
    assert sorted(out["hosts"]) == ["cam", "gpu1", "mq"]
    for name, (address, offset, unc) in out["hosts"].items():
        assert address == st.host(name).address
        assert abs(offset - st.host(name).clock_offset_ns) / 1e3 <= unc
    r = subprocess.run([sys.executable, "-c", EXISTING, st.ray_address], capture_output=True, text=True, cwd=ROOT,
                       timeout=120, env={**env, "RAY_AUTH_MODE": "token", "HOME": "/nonexistent"})
    assert r.returncode != 0 and "cannot connect" in r.stderr, "no token, no cluster"


def test_the_stage_loops_across_three_hosts_on_one_timeline(up, tmp_path):
    """Stage A on cam (+1000 s), a broker on mq, stage B on gpu1 (-37.5 s): the harness's own loops, started
    through the agents, their records read by the Collector; after mapping, every latency is positive."""
    import numpy as np

    import brokers
    from testbed.config import RunConfig
    from testbed.hosts import timeline, wire
    from testbed.hosts.placement import Placement
    from testbed.launchers import local
    from testbed.orchestration.collector import Collector
    c = up["cluster"]
    cfg = RunConfig(broker="redis", rate=100, duration=1.5, warmup=0.5, drain=2, fanout="2", message_bytes=2000,
                    producer_rate=float("inf"), consumer_rate=float("inf"))
    spec = brokers.spec("redis")
    h = local.start(cfg, "loops", str(tmp_path), spec, spec.impl(""), node=c.node("mq"))
    admin = brokers.get("redis")(h.endpoint)
    topic = "tb-hosts-loops"
    try:
        admin.connect(5)
        admin.ensure_topic(topic, 1)
        place = Placement.of({"stage_a": ["cam"], "stage_b": ["gpu1"], "broker": ["mq"]}, c)
        ctl = c.control()
        cfg_d, ep_d = cfg.to_dict(), h.endpoint.__dict__.copy()
        common = [wire.CONN, wire.START_EVT, wire.STOP_EVT, wire.T0, False]
        a = c.worker(place.stage_a_host(), "stage A", "testbed.harness.loops:producer_main",
                     [cfg_d, ep_d, topic, *common], ctl)
        b = c.worker(place.replica_host(0), "stage B replica 0", "testbed.harness.loops:consumer_main",
                     [cfg_d, ep_d, topic, 0, *common], ctl)
        a_steps, b_steps = __import__("stages").step_names(cfg.pipeline)
        col = Collector([a.conn, b.conn], records.message_dtype(a_steps, b_steps))
        a.start()
        b.start()
        deadline = time.monotonic() + 90
        while len(col.ready) < 2:
            col.poll(0.1)
            assert not col.errors and time.monotonic() < deadline, col.errors
        c.start_clocks(0.5)
        t0 = time.monotonic_ns() + 50_000_000
        ctl.t0.value = t0
        ctl.start_evt.set()
        deadline = time.monotonic() + cfg.duration + cfg.drain + 5
        while time.monotonic() < deadline and not (col.done and col.distinct >= col.done["sent"]):
            col.poll(0.1)
            assert not col.errors, col.errors
        ctl.stop_evt.set()
        deadline = time.monotonic() + 15
        while col.open and time.monotonic() < deadline:
            col.poll(0.1)
        c.stop_clocks()
        for w in (a, b):
            w.join(10)
        assert [a.exitcode, b.exitcode] == [0, 0], col.errors
        sent = col.done["sent"]
        assert sent >= 250 and col.distinct == sent, (sent, col.distinct)  # nothing lost
        raw = col.messages_array()
        assert (raw["received"] - raw["published"]).min() < -1e12, "the clocks really are apart"
        m = timeline.convert_messages(raw, place.a_clocks(), place.b_clocks(1))
        fr = timeline.convert_frames(col.frames_array(), place.a_clocks())
        bound = sum(x.clock.fit().uncertainty_ns for x in c.hosts.values())
        assert timeline.negative(m, bound) == {"transit": {"count": 0, "worst_us": 0.0},
                                              "e2e": {"count": 0, "worst_us": 0.0}}
        e2e_ms = (m["end"] - m["intended"]) / 1e6
        assert 0 < np.median(e2e_ms) < 50, np.median(e2e_ms)
        assert fr["intended"].min() >= t0 - bound and abs(fr["intended"].min() - t0) < 5_000_000
        print(f"e2e p50 {np.median(e2e_ms):.3f} ms, transit p50 "
              f"{np.median((m['received'] - m['published']) / 1e6):.3f} ms over {sent} messages")
        for w in (a, b):
            w.close()
    finally:
        admin.delete_topic(topic)
        admin.close()
        h.stop()


def test_a_host_whose_node_dies_is_named(up):
    """Last in this module (it kills a node): the agent's death is seen at the next look, naming the host."""
    from testbed.hosts import ray_nodes
    from testbed.hosts.errors import HostDown
    c, st = up["cluster"], up["state"]
    c.check()
    ray_nodes.stop_sessions({"gpu1": st.nodes["gpu1"]})
    deadline = time.monotonic() + 30
    with pytest.raises(HostDown, match="^host gpu1 is down"):
        while time.monotonic() < deadline:
            c.check()
            time.sleep(0.1)
    assert c.dead_hosts() == ["gpu1"]
    assert c.hosts["cam"].agent.call("info")["name"] == "cam", "the other hosts go on"
