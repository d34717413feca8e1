"""The conformance suite over every cluster recipe of the registry (``--broker-nodes 3``), each cluster
started once per class by the real cluster launcher on this machine, and then, last in the class, the
leader of the run's topic killed under load in at-least-once mode (``kill-leader``): the cluster fails
over, the run says which node it killed (faults.csv, asked of the broker), how long it took to recover,
how many leader changes it saw and what was lost.

Kafka (3 KRaft nodes, RF 3, min ISR 2, acks all), the RabbitMQ quorum queue and NATS R3 lose no
acknowledged message; Redis (asynchronous replicas, Sentinel failover) reports its ``lost_acked``
whatever it is (a finding, printed, not a pass condition). Kafka's JVMs get 384 MB heaps (three on two
cores). ``-k Cluster`` picks these, ``-k NatsCluster`` one.
"""
from __future__ import annotations

import csv
import os
import re
import shutil
import tempfile
import time
import uuid

import brokers
from testbed import config
from testbed.config import RunConfig
from testbed.launchers import launch
from testbed.orchestration.execute import execute
from tests.conformance.suite import BrokerConformance, cases, class_name

NODES = 3


class ClusterCase:
    """A conformance case whose broker is a cluster of ``NODES`` nodes."""

    launcher = "local"
    #: seconds of load of the failover run, and when the leader is killed
    failover_s = 14.0
    kill_at_s = 3.0
    #: Redis: asynchronous replication, lost acknowledged entries are reported, not a failure
    may_lose_acked = False
    #: the failover stops acknowledgements for at least this long (Kafka: broker.session.timeout.ms)
    unavailable_at_least_s = 0.0
    #: the failover run's fault ("" = kill-leader at kill_at_s); a bounce-leader brings the node back
    fault = ""

    @classmethod
    def cluster_config(cls, **kw) -> RunConfig:
        cfg = RunConfig(broker=cls.broker, launcher=cls.launcher, broker_impl=cls.broker_impl, broker_nodes=NODES,
                        broker_heap="384m", delivery="at-least-once", broker_opt=dict(cls.settings().options), **kw)
        config.check_cluster(cfg)  # the options validate() sets: the cluster's and the delivery mode's
        config.check_faults(cfg)
        return cfg

    @classmethod
    def _launch(cls):
        run_dir = tempfile.mkdtemp(prefix=f"conformance-{cls.broker}-cluster-")
        try:
            handle = launch(cls.cluster_config(), f"conf-{uuid.uuid4().hex[:8]}", run_dir)
        except BaseException:
            shutil.rmtree(run_dir, ignore_errors=True)
            raise
        return handle, run_dir

    def test_the_cluster_is_what_its_recipe_says(self, _server, topic):
        """N nodes, each its own process and ports, all named in the URL; the broker names a leader of
        the topic among them; run.json's launch facts say what replication means."""
        ep = _server.endpoint
        assert ep.extra["nodes"] == NODES and ep.extra["replication"]
        nodes = [m for m in ep.extra["members"] if m["role"] == "node"]
        assert len(nodes) == NODES and len({m["pid"] for m in nodes}) == NODES
        assert len({m["port"] for m in nodes}) == NODES
        named = {int(p) for p in re.findall(r":(\d+)", ep.url)}  # every node, or every one of a discovery role
        by_role: dict = {}
        for m in ep.extra["members"]:
            by_role.setdefault(m["role"], set()).add(m["port"])
        assert any(ports <= named for ports in by_role.values()), (ep.url, by_role)
        assert all(_server.node_alive(k) for k in range(NODES))
        leader = None
        for _ in range(50):
            leader = _server.leader(topic)
            if leader is not None:
                break
            time.sleep(0.1)
        assert leader in range(NODES), f"the broker named no leader of {topic}"


class FailoverLast:
    """First among the bases: pytest collects a class's tests base-most first (the reverse of the MRO), so
    this runs after every conformance test of the class (it kills a node of the class's cluster)."""

    def test_kill_leader_under_load(self, _server, tmp_path):
        fault = self.fault or f"kill-leader@{self.kill_at_s:g}s"
        kill_at = float(fault.split("@")[1].split(":")[0].rstrip("s"))
        cfg = self.cluster_config(faults=[fault], duration=self.failover_s,
                                  warmup=1.0, drain=3.0, rate=20.0, fanout="2", consumer_rate=2000.0,
                                  message_bytes=1024, out=str(tmp_path / "run"))
        config.validate(cfg)
        result = execute(cfg, broker_handle=_server)
        s = result.summary
        with open(os.path.join(result.run_dir, "faults.csv")) as fh:
            row = next(csv.DictReader(fh))
        with open(os.path.join(result.run_dir, "timeseries.csv")) as fh:
            ts = list(csv.DictReader(fh))
        print(f"\n{self.broker} x{NODES} {fault}: node {row['node']}, lost_acked {s['lost_acked']}, "
              f"lost_unacked {s['lost_unacked']}, recovery_s {s['recovery_s']}, unavailable_s {s['unavailable_s']}, "
              f"leader_changes {s['leader_changes']}, e2e p99 {s['e2e_p99_ms']} ms")
        assert result.complete, s["error"]
        assert row["kind"] == fault.split("@")[0] and not row["error"], row
        killed = int(row["node"])
        before = [r["broker_leader"] for r in ts if int(r["t_s"]) < kill_at and r["broker_leader"] != ""]
        after = [r["broker_leader"] for r in ts if int(r["t_s"]) > kill_at + 1 and r["broker_leader"] != ""]
        assert before and int(before[-1]) == killed, f"the node killed was not the leader sampled before: {before}"
        assert after and any(int(k) != killed for k in after), f"no other node took over: {after}"
        assert _server.node_alive(killed) == fault.startswith("bounce-")
        assert s["leader_changes"] >= 1
        assert s["recovered"] and 0 <= s["recovery_s"] < self.failover_s, (s["recovered"], s["recovery_s"])
        assert s["unavailable_s"] >= self.unavailable_at_least_s
        assert s["broker_nodes"] == NODES and s["replication"] == _server.endpoint.extra["replication"]
        if not self.may_lose_acked:
            assert s["lost_acked"] == 0, f"{self.broker}: {s['lost_acked']} acknowledged messages lost"
        assert s["lost"] == s["lost_acked"] + s["lost_unacked"]


#: per broker: the failover run's length and what its failover must show (see the module docstring)
SETTINGS = {
    "kafka": {"failover_s": 28.0, "kill_at_s": 2.0, "unavailable_at_least_s": 5.0},  # 9-13 s to a new leader
    "rabbitmq": {"failover_s": 10.0},
    "nats": {"failover_s": 20.0, "unavailable_at_least_s": 1.0},
    "redis": {"failover_s": 16.0, "may_lose_acked": True, "unavailable_at_least_s": 3.0},  # Sentinel: 5 s
}

for _broker, _impl in cases():
    _spec = brokers.spec(_broker)
    if not _spec.needs_server or _spec.impl(_impl).cluster is None:
        continue
    _name = class_name("Test", _broker, _impl) + "Cluster"
    globals()[_name] = type(_name, (FailoverLast, ClusterCase, BrokerConformance),
                            {"broker": _broker, "broker_impl": _impl, "__module__": __name__,
                             **SETTINGS.get(_broker, {})})


def test_every_broker_with_a_server_has_a_cluster_or_says_why_not():
    for name in brokers.names():
        spec = brokers.spec(name)
        for impl in spec.impls:
            assert impl.cluster is not None or impl.no_cluster, f"{name} {impl.name}: no cluster recipe, no reason"
