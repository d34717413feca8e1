"""Clusters under the docker launcher (``--broker-nodes 3 --launcher docker``): the same cluster recipes as
one container per member on the host network (testbed/launchers/cluster_docker.py).

NATS and Redis get the whole conformance suite over their containers; all four the checks that are
docker's own: every member a labelled container of the run, the broker names a leader, a killed leader
(``docker kill``) is replaced, its node comes back (``docker start`` of the same container). After each class no container
of this test process is left. Skips where no engine can be had; fails under TESTBED_REQUIRE_DOCKER=1.
"""
from __future__ import annotations

import time
import uuid

import brokers
from tests.conformance.base import BrokerCase
from tests.conformance.suite import BrokerConformance, class_name
from tests.conformance.test_clusters import NODES, ClusterCase
from tests import docker_required


class DockerCluster(docker_required.DockerLaunched):
    """See tests/docker_required.py: the engine, and no container left after the class."""

    def test_every_member_is_a_labelled_container(self, _server):
        from testbed.launchers import engine as docker_engine
        ep = _server.endpoint
        assert ep.launcher == "docker"
        client = docker_engine.client()
        try:
            for m in ep.extra["members"]:
                c = client.containers.get(m["container_id"])
                assert c.status == "running", m
                assert c.labels["testbed"] == "1" and c.labels["testbed.run_id"].startswith("conf-")
                assert c.attrs["HostConfig"]["NetworkMode"] == "host"
        finally:
            client.close()

    def test_a_killed_leader_is_replaced_and_its_node_comes_back(self, _server):
        admin = brokers.get(self.broker)(_server.endpoint)
        admin.connect(15)
        topic = f"conf-{uuid.uuid4().hex[:10]}"
        admin.ensure_topic(topic, 1)
        admin.close()
        leader = _wait(lambda: _server.leader(topic), lambda k: k is not None, 30)
        _server.kill_node(leader)
        assert not _server.node_alive(leader)
        other = _wait(lambda: _server.leader(topic), lambda k: k is not None and k != leader, 60)
        assert other in range(NODES)
        _server.restart_node(leader)
        assert _server.node_alive(leader)


def _wait(ask, ok, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    got = None
    while time.monotonic() < deadline:
        got = ask()
        if ok(got):
            return got
        time.sleep(0.2)
    raise AssertionError(f"no answer within {timeout_s:g}s (last: {got})")


#: NATS and Redis: the whole suite; Kafka and RabbitMQ: the docker checks only (their suite, and every
#: failover under load, run over local clusters: tests/conformance/test_clusters.py; the run drives a
#: cluster through the same handle calls whichever launcher made it)
_FULL = {"nats": (DockerCluster, ClusterCase, BrokerConformance),
         "redis": (DockerCluster, ClusterCase, BrokerConformance),
         "kafka": (DockerCluster, ClusterCase, BrokerCase),
         "rabbitmq": (DockerCluster, ClusterCase, BrokerCase)}

for _broker, _bases in _FULL.items():
    _spec = brokers.spec(_broker)
    _impl = _spec.impl_names()[0] if _spec.impl_names() else ""
    if _spec.impl(_impl).cluster is None or _spec.impl(_impl).image is None:
        continue
    _name = class_name("TestDocker", _broker, _impl) + "Cluster"
    globals()[_name] = type(_name, _bases, {"broker": _broker, "broker_impl": _impl, "__module__": __name__})
