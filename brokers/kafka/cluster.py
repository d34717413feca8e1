"""Apache Kafka as a cluster (``--broker-nodes N``): N KRaft nodes, each a combined broker and
controller, with a static voter set.

Every node gets node.id ``i + 1``, its own two ports (PLAINTEXT for clients, CONTROLLER for the quorum)
on its own address, its own log directory formatted (``kafka-storage format``) with the cluster's one
id, and ``controller.quorum.voters`` naming all N controllers. All start at once (the quorum elects a
controller once a majority is up). Internal topics are replicated (factor min(3, N), min ISR min(2, N));
the run's topic gets replication factor N and ``min.insync.replicas`` N-1 (adapter options
``replication_factor`` and ``min_insync_replicas``, set on the topic), and at least once means acks=all
with an idempotent producer: a produce is acknowledged once every in-sync replica has it, and at least
N-1 must be in sync. The JVM heap is ``--broker-heap`` per node (the tests use 384m: three JVMs on two
cores). Kafka's own failover timing is kept: a killed node's partitions move once the controller has not
heard from it for ``broker.session.timeout.ms`` (9 s, Kafka's default).

Clients get every node (``kafka://h1:p1,h2:p2,...``). Formed: the metadata lists all N brokers. The
leader of the run's partition 0 is what the metadata says (a node id, ``i + 1``).

tansu is refused (its memory engine has no replication: brokers/kafka/spec.py).
"""
from __future__ import annotations

import base64
import os
import time

from brokers.kafka import dist, image
from brokers.spec import ClusterRecipe, ClusterView, LocalRecipe, MemberContext, Plan, Step
from testbed.errors import BrokerError


def cluster_id(view: ClusterView) -> str:
    """One KRaft cluster id for every node, from the cluster's secret (a Kafka Uuid in base64)."""
    raw = bytes.fromhex(view.secret[:32])
    cid = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    return "A" + cid[1:] if cid.startswith("-") else cid


def properties(ctx: MemberContext, data_dir: str) -> str:
    view, me = ctx.cluster, ctx.member
    voters = ",".join(f"{p.index + 1}@{p.host}:{p.ports['controller']}" for p in view.nodes)
    return node_properties(me.index + 1, ctx.host, ctx.ports["port"], ctx.ports["controller"], voters, data_dir,
                           view.size)


def node_properties(node_id: int, host: str, port: int, controller_port: int, voters: str, data_dir: str,
                    n: int) -> str:
    """One node's server.properties (also what compose/kafka-cluster.yml sets, as KAFKA_* variables)."""
    internal_rf, internal_isr = min(3, n), min(2, n)
    return "\n".join([
        "process.roles=broker,controller",
        f"node.id={node_id}",
        f"controller.quorum.voters={voters}",
        f"listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        f"advertised.listeners=PLAINTEXT://{host}:{port}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        f"log.dirs={data_dir}",
        "num.partitions=1",
        f"default.replication.factor={n}",
        f"offsets.topic.replication.factor={internal_rf}",
        "offsets.topic.num.partitions=1",
        f"transaction.state.log.replication.factor={internal_rf}",
        f"transaction.state.log.min.isr={internal_isr}",
        f"share.coordinator.state.topic.replication.factor={internal_rf}",
        f"share.coordinator.state.topic.min.isr={internal_isr}",
        "group.initial.rebalance.delay.ms=0",
        "",
    ])


def node_plan(ctx: MemberContext) -> Plan:
    heap = dist.check_heap(getattr(ctx.cfg, "broker_heap", "") or "512m")
    java = ctx.binaries["kafka"]
    local = ctx.where == "local"
    libs = dist.install(progress=ctx.log) if local else image.LIBS_IN_IMAGE
    config, log4j = os.path.join(ctx.dir, "server.properties"), os.path.join(ctx.dir, "log4j2.properties")
    cid = cluster_id(ctx.cluster)
    archive = dist.cds_archive(libs, java) if local else ""
    cds = dist.cds_flags(archive) if local else ()  # map the archive a single broker wrote; never write one
    fmt = dist.format_command(config, cid, libs, log4j, java, cds)
    argv = dist.server_command(config, heap, libs, log4j, java, cds)
    return Plan(argv=argv, dirs=("data",),
                files={"server.properties": properties(ctx, os.path.join(ctx.dir, "data")),
                       "log4j2.properties": dist.log4j_properties()},
                steps=[Step("kafka-storage format", fmt, 60.0)],
                facts={"node_id": ctx.member.index + 1, "heap": heap, "cluster_id": cid})


def compose_env(ports: list[tuple[int, int]], heap: str = "384m") -> list[dict]:
    """Per node, the ``KAFKA_*`` variables of its properties (both kafka images read them: brokers/kafka/
    image.py) for nodes on 127.0.0.1 with these (client, controller) ports: compose/kafka-cluster.yml."""
    voters = ",".join(f"{i + 1}@127.0.0.1:{c}" for i, (_, c) in enumerate(ports))
    out = []
    for i, (port, controller) in enumerate(ports):
        env = {"KAFKA_HEAP_OPTS": f"-Xms{heap} -Xmx{heap}"}
        text = node_properties(i + 1, "127.0.0.1", port, controller, voters, "/tmp/kraft-combined-logs", len(ports))
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                env["KAFKA_" + key.replace("_", "__").replace("-", "___").replace(".", "_").upper()] = value
        out.append(env)
    return out


def url(view: ClusterView) -> str:
    return "kafka://" + ",".join(f"{p.host}:{p.ports['port']}" for p in view.nodes)


def _admin(view: ClusterView):
    from confluent_kafka.admin import AdminClient
    from brokers.kafka.client import _client_log
    return AdminClient({"bootstrap.servers": url(view)[len("kafka://"):], "logger": _client_log,
                        "socket.timeout.ms": 2000})


def form(view: ClusterView, log) -> dict:
    """Until the metadata lists every node as a broker."""
    admin = _admin(view)
    deadline = time.monotonic() + 60.0
    have = 0
    while time.monotonic() < deadline:
        try:
            md = admin.list_topics(timeout=2.0)
            have = len(md.brokers)
            if have >= view.size:
                return {"formed": f"{have} brokers in the metadata, controller {md.controller_id}"}
        except Exception:  # noqa: BLE001 - not yet
            pass
        time.sleep(0.25)
    raise BrokerError(f"kafka: {have} of {view.size} nodes joined the cluster within 60s")


class LeaderProbe:
    """``probe(topic)`` -> the index of the node leading the run's topic's partition 0 (metadata). One
    admin client for the cluster's life, never made again after a failure (it reconnects by itself, and
    librdkafka must not be destroyed with a metadata request still out: it asserts), with a timeout long
    enough that an answer from a live node arrives while one is down."""

    def __init__(self, view: ClusterView):
        self.admin = _admin(view)
        self.ids = {p.index + 1: p.index for p in view.nodes}

    def __call__(self, topic: str) -> int | None:
        md = self.admin.list_topics(topic, timeout=5.0)
        t = md.topics.get(topic)
        if t is None or t.error is not None or 0 not in t.partitions:
            return None
        return self.ids.get(t.partitions[0].leader)

    def close(self) -> None:
        self.admin = None


def cluster(server, start_timeout_s: float, probe, version, install) -> ClusterRecipe:
    def replication(n: int, cfg) -> str:
        return f"replication factor {n}, min.insync.replicas {max(1, n - 1)} (KRaft, {n} voters)"

    return ClusterRecipe(
        node=LocalRecipe(server=server, plan=node_plan, ports=("port", "controller"), url="kafka://{host}:{port}",
                         probe=probe, version=version, install=install, start_timeout_s=start_timeout_s,
                         stop_grace_s=10.0),
        url=url, replication=replication,
        options=lambda n, cfg: {"replication_factor": str(n), "min_insync_replicas": str(max(1, n - 1))},
        start="together", form=form, leader=LeaderProbe)
