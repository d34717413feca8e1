"""NATS JetStream as a cluster (``--broker-nodes N``): N servers joined by routes, JetStream clustered,
the run's stream replicated on all of them (JetStream's limit: 5).

Each server: ``nats-server -c nats.conf -a HOST -p PORT -n NAME --cluster_name C --cluster
nats://HOST:CPORT --routes <every server's cluster URL> -js -sd DIR``. Every server starts at once
(JetStream's meta group elects its leader once a majority is up). Clients get every server
(``nats://h1:p1,nats://h2:p2,...``) and connect to the first that answers. The run's stream has
``num_replicas`` N (adapter option ``replicas``): JetStream keeps it with Raft over N servers; its
leader answers each publish, and a PubAck means a majority stored the message. Formed: a probe stream
with N replicas can be made (JetStream refuses one until enough servers joined), then it is deleted.
The leader of the run's stream is what ``$JS.API.STREAM.INFO`` says (``cluster.leader``: a server name).
"""
from __future__ import annotations

import asyncio
import functools
import os
import re
import time

from brokers.spec import ClusterRecipe, ClusterView, LocalRecipe, MemberContext, Plan
from testbed.errors import BrokerError

FORM_STREAM = "testbed_cluster_ready"
_BAD_NAME = re.compile(r"[.*>/\\\s]")


def stream_name(topic: str) -> str:
    """The adapter's stream name for ``topic`` (brokers/nats/adapter.py ``_name``; not imported from it:
    the adapter imports the spec, which imports this)."""
    return _BAD_NAME.sub("_", topic)


def node_plan(ctx: MemberContext, config: str = "") -> Plan:
    view = ctx.cluster
    conf = os.path.join(ctx.dir, "nats.conf")
    routes = ",".join(f"nats://{p.host}:{p.ports['cluster']}" for p in view.nodes)
    argv = [ctx.binaries["nats"], "-c", conf, "-a", ctx.host, "-p", str(ctx.ports["port"]), "-n", ctx.member.name,
            "--cluster_name", f"testbed-{view.secret[:8]}", "--cluster", f"nats://{ctx.host}:{ctx.ports['cluster']}",
            "--routes", routes, "-js", "-sd", os.path.join(ctx.dir, "jetstream")]
    return Plan(argv=argv, files={"nats.conf": config}, facts={"server_name": ctx.member.name})


def url(view: ClusterView) -> str:
    return ",".join(f"nats://{p.host}:{p.ports['port']}" for p in view.nodes)


class _Js:
    """A nats-py client on a private event loop, connected to the first server that answers (made again
    after any failure): the forming step's and the leader probe's."""

    def __init__(self, view: ClusterView, timeout_s: float = 1.0):
        self.servers = url(view).split(",")
        self.timeout_s = timeout_s
        self.loop = asyncio.new_event_loop()
        self.nc = None

    def call(self, make):
        import nats
        try:
            if self.nc is None:
                self.nc = self.loop.run_until_complete(asyncio.wait_for(nats.connect(
                    servers=self.servers, allow_reconnect=False, connect_timeout=self.timeout_s,
                    dont_randomize=True, name="testbed-cluster", error_cb=_quiet,
                    disconnected_cb=_quiet_none), 3 * self.timeout_s))
            jsm = self.nc.jsm(timeout=self.timeout_s)
            return self.loop.run_until_complete(asyncio.wait_for(make(jsm), 2 * self.timeout_s))
        except BaseException:
            self._drop()
            raise

    def _drop(self) -> None:
        nc, self.nc = self.nc, None
        if nc is not None:
            try:
                self.loop.run_until_complete(asyncio.wait_for(nc.close(), 1.0))
            except BaseException:  # noqa: BLE001 - closing a broken connection
                pass

    def close(self) -> None:
        self._drop()
        loop = self.loop
        try:
            tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in tasks:
                t.cancel()
            if tasks:
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        except BaseException:  # noqa: BLE001 - closing
            pass
        finally:
            loop.close()


async def _quiet(exc) -> None:
    pass


async def _quiet_none() -> None:
    pass


def form(view: ClusterView, log) -> dict:
    """Until a stream with N replicas can be made (every server joined, a meta leader elected)."""
    from nats.js.api import StreamConfig, StorageType
    js = _Js(view)
    deadline = time.monotonic() + 60.0
    last: BaseException | None = None
    try:
        while time.monotonic() < deadline:
            try:
                cfg = StreamConfig(name=FORM_STREAM, subjects=[FORM_STREAM], num_replicas=replicas(view.size),
                                   storage=StorageType.MEMORY)
                info = js.call(lambda jsm: jsm.add_stream(cfg))
                leader = info.cluster.leader if info.cluster else ""
                js.call(lambda jsm: jsm.delete_stream(FORM_STREAM))
                return {"formed": f"a stream with {replicas(view.size)} replicas placed (leader {leader})"}
            except Exception as exc:  # noqa: BLE001 - still forming
                last = exc
            time.sleep(0.25)
    finally:
        js.close()
    raise BrokerError(f"nats: the {view.size} servers did not form a JetStream cluster within 60s: "
                      f"{' '.join(str(last).split()) or type(last).__name__}")


class LeaderProbe:
    """``probe(topic)`` -> the index of the server leading the run's stream (its Raft leader)."""

    def __init__(self, view: ClusterView):
        self.by_name = {p.name: p.index for p in view.nodes}
        self.js = _Js(view)

    def __call__(self, topic: str) -> int | None:
        info = self.js.call(lambda jsm: jsm.stream_info(stream_name(topic)))
        leader = info.cluster.leader if info.cluster else None
        return self.by_name.get(leader) if leader else None

    def close(self) -> None:
        self.js.close()


def replicas(nodes: int) -> int:
    """The stream's replicas on ``nodes`` servers: all of them, up to JetStream's limit of 5."""
    return min(nodes, 5)


def cluster(node_server, start_timeout_s: float, config: str) -> ClusterRecipe:
    """The recipe; ``config`` is the servers' config file (the single node's: brokers/nats/spec.py)."""
    return ClusterRecipe(
        node=LocalRecipe(server=node_server, plan=functools.partial(node_plan, config=config), ports=("port", "cluster"), url="nats://{host}:{port}",
                         start_timeout_s=start_timeout_s),
        url=url,
        replication=lambda n, cfg: f"stream R{replicas(n)} (JetStream Raft: a PubAck means a majority stored it)",
        options=lambda n, cfg: {"replicas": str(replicas(n))},
        start="together", form=form, leader=LeaderProbe)
