"""Clusters (``--broker-nodes N``) without a running broker: what each cluster recipe plans for every
member knowing all its peers, the refusals (one line each), the cluster fault kinds, the availability
columns from hand-made records; and one real cluster run interrupted (Ctrl-C, SIGKILL) that leaves no
node behind. The clusters themselves, under the conformance suite and a leader killed under load:
tests/conformance/test_clusters.py; in containers: tests/conformance/test_docker_clusters.py."""
from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest

import brokers
from brokers.spec import ClusterView, MemberContext
from testbed import config
from testbed.analysis import availability
from testbed.analysis.metrics import RunData
from testbed.config import RunConfig
from testbed.errors import ConfigError
from testbed.faults import parse, parse_all
from testbed.harness import records
from testbed.launchers.cluster import plan_peers
from testbed.launchers.nodes import Node

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- the recipes' plans, every peer known ------------------------------------------------------------
class FakeNode(Node):
    """A host with an address whose ports are made up (nothing is bound): placement without processes."""

    counter = iter(range(20000, 30000))

    def __init__(self, address: str, name: str = ""):
        self.address, self.name = address, name

    def free_ports(self, names):
        return {n: next(self.counter) for n in names}


def view_of(broker: str, n: int = 3, hosts=None, **cfg_kw) -> tuple[ClusterView, list]:
    """A cluster of ``broker`` as the launcher plans it (cluster.plan_peers: ports made up, nothing started)."""
    recipe = brokers.spec(broker).impl().cluster
    nodes = [FakeNode(h, f"h{i}") for i, h in enumerate(hosts or ["127.0.0.1"] * n)]
    peers = [(peer, r) for peer, r, _ in plan_peers(recipe, nodes)]
    cfg = RunConfig(broker=broker, broker_nodes=n, broker_heap="384m", **cfg_kw)
    view = ClusterView([p for p, _ in peers], "ab" * 16, cfg, "test")
    return view, peers


def plans(broker: str, n: int = 3, hosts=None, **cfg_kw) -> list:
    view, peers = view_of(broker, n, hosts, **cfg_kw)
    out = []
    for peer, r in peers:
        binaries = {b.name: f"/bin/{b.name}" for b in (r.server, *r.helpers)}
        ctx = MemberContext("docker", f"/tmp/m{peer.role}{peer.index}", dict(peer.ports), binaries, view.cfg, "t",
                            lambda line: None, host=peer.host, member=peer, cluster=view)
        out.append((peer, r.plan(ctx)))
    return out


def test_kafka_nodes_share_one_voter_set_and_cluster_id():
    got = plans("kafka", 3)
    props = [p.files["server.properties"] for _, p in got]
    voters = {line for text in props for line in text.splitlines() if line.startswith("controller.quorum.voters=")}
    assert len(voters) == 1 and voters.pop().count("@") == 3
    assert [f"node.id={i + 1}" in text for i, text in enumerate(props)] == [True] * 3
    assert len({p.facts["cluster_id"] for _, p in got}) == 1
    assert all(f"advertised.listeners=PLAINTEXT://127.0.0.1:{peer.ports['port']}" in p.files["server.properties"]
               for peer, p in got)
    opts = brokers.spec("kafka").impl("apache").cluster.options(3, RunConfig())
    assert opts == {"replication_factor": "3", "min_insync_replicas": "2"}


def test_rabbitmq_nodes_join_node_0_with_one_cookie_and_one_port_mapper_per_host():
    got = plans("rabbitmq", 3, hosts=["10.0.0.1", "10.0.0.2", "10.0.0.1"])
    nodes = [(peer, p) for peer, p in got if not peer.role]
    epmds = [(peer, p) for peer, p in got if peer.role == "epmd"]
    assert sorted(peer.host for peer, _ in epmds) == ["10.0.0.1", "10.0.0.2"]  # one per host, one port
    assert len({p.env["ERL_EPMD_PORT"] for _, p in nodes} | {p.argv[2] for _, p in epmds}) == 1
    assert all("-setcookie " + "ab" * 16 in p.env["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"] for _, p in nodes)
    names = [p.env["RABBITMQ_NODENAME"] for _, p in nodes]
    assert [n.split("@")[1] for n in names] == ["10.0.0.1", "10.0.0.2", "10.0.0.1"] and len(set(names)) == 3
    assert "classic_config" not in nodes[0][1].files["rabbitmq.conf"]
    for _, p in nodes[1:]:
        assert f"cluster_formation.classic_config.nodes.1 = {names[0]}" in p.files["rabbitmq.conf"]
    assert all(p.env["RABBITMQ_NODE_IP_ADDRESS"] == peer.host for peer, p in nodes)
    query = [p for peer, p in got if peer.role == "query"]
    assert len(query) == 1 and all(f"'{n}'" in query[0].argv[-1] for n in names)


def test_nats_servers_route_to_every_server():
    got = plans("nats", 3)
    routes = {p.argv[p.argv.index("--routes") + 1] for _, p in got}
    assert len(routes) == 1 and routes.pop().count("nats://") == 3
    assert len({p.argv[p.argv.index("-n") + 1] for _, p in got}) == 3
    assert brokers.spec("nats").impl().cluster.options(7, RunConfig()) == {"replicas": "5"}  # JetStream's limit
    from brokers.nats.adapter import _name
    from brokers.nats.cluster import stream_name
    for topic in ("tb-x.y", "a b*c>d/e\\f", "plain"):
        assert stream_name(topic) == _name(topic)  # the leader probe asks for the adapter's stream


def test_redis_has_a_primary_replicas_and_three_sentinels():
    got = plans("redis", 3, delivery="at-least-once")
    nodes = [p for peer, p in got if not peer.role]
    sentinels = [p for peer, p in got if peer.role == "sentinel"]
    primary_port = next(peer for peer, _ in got if not peer.role).ports["port"]
    assert "replicaof" not in nodes[0].files["redis.conf"]
    assert all(f"replicaof 127.0.0.1 {primary_port}" in p.files["redis.conf"] for p in nodes[1:])
    assert all("appendonly yes" in p.files["redis.conf"] for p in nodes)
    assert len(sentinels) == 3
    assert all(f"sentinel monitor testbed 127.0.0.1 {primary_port} 2" in p.files["sentinel.conf"] for p in sentinels)
    assert all(p.argv[-1] == "--sentinel" for p in sentinels)
    view, _ = view_of("redis", 3)
    assert brokers.spec("redis").impl().cluster.url(view).startswith("redis-sentinel://")
    cfg = RunConfig(broker="redis", broker_nodes=3, delivery="at-least-once")
    assert brokers.spec("redis").impl().cluster.options(3, cfg) == {"wait_replicas": "1"}


def test_config_sets_the_cluster_options_and_an_explicit_one_wins():
    cfg = RunConfig(broker="kafka", broker_nodes=3, launcher="local", broker_opt={"min_insync_replicas": "1"})
    config.validate(cfg)
    assert cfg.broker_opt["replication_factor"] == "3" and cfg.broker_opt["min_insync_replicas"] == "1"
    cfg = RunConfig(broker="rabbitmq", broker_nodes=3, launcher="local", delivery="at-least-once")
    config.validate(cfg)
    assert cfg.broker_opt["queue_type"] == "quorum" and cfg.broker_opt["confirms"] == "True"
    single = RunConfig(broker="nats", launcher="local")
    config.validate(single)
    assert "replicas" not in single.broker_opt  # one node: today's run, unchanged


# -- refusals: one line each -------------------------------------------------------------------------
REFUSED = [
    ({"broker": "zeromq", "broker_nodes": 3}, ["--broker-nodes 3", "zeromq", "no broker to replicate"]),
    ({"broker": "inproc", "broker_nodes": 2}, ["--broker-nodes 2", "inproc"]),
    ({"broker": "kafka", "broker_impl": "tansu", "broker_nodes": 3}, ["tansu", "no replication"]),
    ({"broker": "nats", "faults": ["kill-leader@2s"]}, ["kill-leader", "--broker-nodes 2 or more"]),
    ({"broker": "nats", "faults": ["bounce-node:1@2s:1s"]}, ["bounce-node", "a cluster"]),
    ({"broker": "nats", "broker_nodes": 3, "faults": ["kill-node:3@2s"]}, ["node 3", "0 to 2"]),
    ({"broker": "nats", "broker_nodes": 3, "faults": ["net-delay@2s:1s:5ms"]}, ["network faults", "single node"]),
    ({"broker": "nats", "broker_nodes": 3, "faults": ["kill-node:1@2s", "bounce-node:1@4s:1s"]},
     ["node 1 is down"]),
    ({"broker": "nats", "broker_nodes": 10}, ["--broker-nodes", "1 to 9"]),
]


@pytest.mark.parametrize("kw,words", REFUSED, ids=[str(k) for k, _ in REFUSED])
def test_refusals_name_the_value_in_one_line(kw, words):
    cfg = RunConfig(**{"launcher": "local", "duration": 10.0, **kw})
    with pytest.raises(ConfigError) as info:
        config.validate(cfg)
    msg = str(info.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_the_cli_refuses_in_one_line_and_exit_2(tmp_path):
    r = subprocess.run([sys.executable, "-m", "testbed.run", "--broker", "zeromq", "--broker-nodes", "3",
                        "--out", str(tmp_path / "run")], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--broker-nodes 3" in lines[0], r.stderr
    assert not (tmp_path / "run").exists()


def test_cluster_fault_events():
    s = parse_all(["bounce-leader@2s:3s", "pause-node:1@6s:1s", "kill-node:0@9s", "kill-leader@10s"])
    got = [(e.at_s, e.target, e.action) for e in s.events()]
    assert got == [(2.0, "leader", "kill"), (5.0, "leader", "restart"), (6.0, "node:1", "pause"),
                   (7.0, "node:1", "resume"), (9.0, "node:0", "kill"), (10.0, "leader", "kill")]
    assert parse("kill-node:2@1s").to_dict()["node"] == 2
    assert str(parse_all([{"kind": "bounce-node", "node": 1, "at": "2s", "duration": "1s"}]).faults[0]) == \
        "bounce-node:1@2s:1s"


# -- the availability columns from hand-made records ----------------------------------------------------
def run_data(ack_gaps_s: list[float], status=records.ACKED, nodes: int = 3, samples=None) -> RunData:
    """One message per frame at 0.1 s steps, except the gaps given (seconds without a frame), each publish
    call 1 ms; a load of 10 s."""
    t0 = 1_000_000_000
    times, t = [], 0.05
    gaps = list(ack_gaps_s)
    while t < 10.0:
        times.append(t)
        t += 0.1 + (gaps.pop(0) if gaps and t > 2.0 else 0.0)
    n = len(times)
    f = np.zeros(n, records.FRAME_DTYPE)
    f["frame_id"] = f["first_seq"] = np.arange(n)
    f["n"] = 1
    f["intended"] = f["start"] = [t0 + int(x * 1e9) for x in times]
    f["end"] = f["start"]
    f["published"] = f["end"] + 1_000_000
    pub = np.zeros(n, records.PUBLISH_DTYPE)
    pub["seq"] = np.arange(n)
    pub["publish_call"] = 1_000_000
    pub["status"] = status
    cfg = RunConfig(duration=10.0, broker_nodes=nodes)
    m = np.zeros(0, records.message_dtype((), ()))
    return RunData(cfg, t0, f, m, broker_samples=samples or {}, end_ns=t0 + 12 * 10**9, publishes=pub)


def test_unavailable_s_is_the_longest_stretch_without_an_ack():
    assert availability.unavailable_s(run_data([])) == pytest.approx(0.1, abs=0.002)
    assert availability.unavailable_s(run_data([2.5])) == pytest.approx(2.6, abs=0.002)
    assert math.isnan(availability.unavailable_s(run_data([], status=records.SENT)))  # fire and forget
    failed = run_data([])
    failed.publishes["status"][20:40] = records.PUBLISH_FAILED  # 2 s of refused publishes
    assert availability.unavailable_s(failed) == pytest.approx(2.1, abs=0.002)
    # a client that acknowledges later: the 10 ms bins in which acknowledgements arrived
    bins = [(1_000_000_000 + int(x * 1e9)) // 10_000_000 for x in (0.5, 1.0, 5.0, 8.0, 9.99)]
    assert availability.unavailable_s(run_data([]), bins) == pytest.approx(4.0, abs=0.02)


def test_leader_changes_and_the_columns():
    samples = {0: {"broker_leader": 0}, 1: {"broker_leader": 0}, 2: {"broker_leader": ""}, 3: {},
               4: {"broker_leader": 2}, 5: {"broker_leader": 2}, 6: {"broker_leader": 0}}
    d = run_data([], samples=samples)
    cols = availability.cluster_columns(d, {"replication": "stream R3"})
    assert cols["leader_changes"] == 2 and cols["broker_nodes"] == 3 and cols["replication"] == "stream R3"
    single = availability.cluster_columns(run_data([], nodes=1), {})
    assert single["replication"] == "none" and math.isnan(single["leader_changes"])


# -- a real cluster run, interrupted --------------------------------------------------------------------
@pytest.mark.parametrize("sig", ["SIGINT", "SIGKILL"])
def test_an_interrupted_cluster_run_leaves_no_node_behind(tmp_path, monkeypatch, sig):
    """Three NATS servers under load; the run gets Ctrl-C (it stops every node) or SIGKILL (the
    parent-death signal and the watchdog do): no process, folder or listening port of the run is left."""
    if not brokers.spec("nats").impl().local or not __import__("shutil").which("nats-server"):
        pytest.skip("nats-server is not installed (make setup)")
    from tests import test_interrupts as ti
    monkeypatch.setattr(ti, "RUN", ti.RUN + ["--broker-nodes", "3"])
    left, loading = ti.interrupt(tmp_path, 0, "nats", "local", sig, 6.0)
    assert loading, "the load had not started when the run was interrupted"
    assert not left, left
