"""Redis as a replicated set (``--broker-nodes N``): one primary, N-1 replicas, three Sentinels.

Node 0 starts first as the primary; nodes 1..N-1 then start together as its replicas (``replicaof``);
then three ``redis-sentinel`` processes (Debian's package of that name: the same program as
``redis-server --sentinel``), Sentinel ``i`` on node ``i mod N``'s host, each monitoring the primary under
the service name ``testbed`` with a quorum of 2. Every server has its own config file in its folder, so
the ``CONFIG REWRITE`` a failover makes (a replica promoted, the old primary made a replica when it is
back) is kept across a restart. Clients get the Sentinels (``redis-sentinel://h1:p1,h2:p2,h3:p3/testbed``)
and ask them for the primary at every connect (redis-py's ``Sentinel.master_for``).

Replication is asynchronous: the primary acknowledges an XADD before any replica has it. With
``--delivery at-least-once`` each publish also waits for ``WAIT 1`` (adapter option ``wait_replicas``):
one replica has it. A failover can still lose acknowledged entries (WAIT does not make a failover pick a
replica that has them): the run counts them, a finding rather than a failure.

Failover timing (Sentinel's own settings, written into each Sentinel's config): a primary that does not
answer for ``down-after-milliseconds`` (5000; Redis's sample config says 30000) is subjectively down,
and once two Sentinels agree it is objectively down and one of them promotes a replica
(``failover-timeout`` 10000). Formed: every Sentinel sees the primary, its N-1 replicas (link up) and
the two other Sentinels. The leader (the primary) is what the Sentinels name for the service now.
"""
from __future__ import annotations

import time

from brokers.spec import Binary, ClusterRecipe, ClusterView, Extra, LocalRecipe, MemberContext, Plan
from testbed.errors import BrokerError

SERVICE = "testbed"
SENTINELS = 3
QUORUM = 2
DOWN_AFTER_MS = 5000
FAILOVER_TIMEOUT_MS = 10000

SENTINEL = Binary("redis-sentinel", "redis-sentinel", "redis-sentinel", container_path="redis-server")


def node_plan(ctx: MemberContext) -> Plan:
    primary = ctx.cluster.nodes[0]
    lines = [f"bind {ctx.host}", f"port {ctx.port}", "protected-mode no", 'save ""', f"dir {ctx.dir}",
             "daemonize no", 'logfile ""', "databases 1", "unixsocket \"\"",
             f"replica-announce-ip {ctx.host}"]
    if getattr(ctx.cfg, "delivery", "") == "at-least-once":
        lines += ["appendonly yes", "appendfsync everysec"]
    else:
        lines += ["appendonly no"]
    if ctx.member.index:
        lines.append(f"replicaof {primary.host} {primary.ports['port']}")
    conf = f"{ctx.dir}/redis.conf"
    return Plan(argv=[ctx.binaries["redis"], conf], files={"redis.conf": "\n".join(lines) + "\n"},
                facts={"role": "replica" if ctx.member.index else "primary"})


def sentinel_plan(ctx: MemberContext) -> Plan:
    primary = ctx.cluster.nodes[0]
    lines = [f"bind {ctx.host}", f"port {ctx.port}", "protected-mode no", f"dir {ctx.dir}", "daemonize no",
             'logfile ""', f"sentinel announce-ip {ctx.host}",
             f"sentinel monitor {SERVICE} {primary.host} {primary.ports['port']} {QUORUM}",
             f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}",
             f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}",
             f"sentinel parallel-syncs {SERVICE} 1"]
    conf = f"{ctx.dir}/sentinel.conf"
    # the same program either way: the Debian binary redis-sentinel, or redis-server --sentinel in an image
    return Plan(argv=[ctx.binaries["redis-sentinel"], conf, "--sentinel"],
                files={"sentinel.conf": "\n".join(lines) + "\n"})


def url(view: ClusterView) -> str:
    return "redis-sentinel://" + ",".join(f"{p.host}:{p.ports['port']}" for p in view.role("sentinel")) + \
        f"/{SERVICE}/0"


def _sentinels(view: ClusterView, timeout_s: float = 1.0) -> list:
    import redis
    return [redis.Redis(host=p.host, port=p.ports["port"], socket_timeout=timeout_s,
                        socket_connect_timeout=timeout_s, decode_responses=True) for p in view.role("sentinel")]


def form(view: ClusterView, log) -> dict:
    """Until every Sentinel sees the primary, its replicas with their links up, and the other Sentinels."""
    clients = _sentinels(view)
    want_replicas, want_others = view.size - 1, len(clients) - 1
    deadline = time.monotonic() + 60.0
    last = ""
    try:
        while time.monotonic() < deadline:
            try:
                ok = 0
                for c in clients:
                    m = c.sentinel_master(SERVICE)
                    replicas = [r for r in c.sentinel_slaves(SERVICE)
                                if "s_down" not in r.get("flags", "") and r.get("master-link-status") == "ok"]
                    if len(replicas) >= want_replicas and int(m.get("num-other-sentinels", 0)) >= want_others:
                        ok += 1
                    else:
                        last = (f"a Sentinel sees {len(replicas)} of {want_replicas} replicas and "
                                f"{m.get('num-other-sentinels')} of {want_others} other Sentinels")
                if ok == len(clients):
                    return {"formed": f"{len(clients)} Sentinels see the primary, {want_replicas} replicas and "
                                      "each other", "service": SERVICE}
            except Exception as exc:  # noqa: BLE001 - not up yet
                last = " ".join(str(exc).split())
            time.sleep(0.25)
    finally:
        for c in clients:
            c.close()
    raise BrokerError(f"redis: the Sentinels did not see the whole set within 60s: {last}")


class LeaderProbe:
    """``probe(topic)`` -> the index of the node the Sentinels name primary now (the topic is on it)."""

    def __init__(self, view: ClusterView):
        self.view = view
        self.clients = _sentinels(view, 0.5)

    def __call__(self, topic: str) -> int | None:
        last: Exception | None = None
        for c in self.clients:  # the first Sentinel that answers
            try:
                addr = c.sentinel_get_master_addr_by_name(SERVICE)
            except Exception as exc:  # noqa: BLE001 - that Sentinel is down or paused: ask the next
                last = exc
                continue
            if not addr:
                return None
            return self.view.node_index(str(addr[0]), int(addr[1]))
        raise BrokerError(f"no Sentinel answered: {last}")

    def close(self) -> None:
        for c in self.clients:
            c.close()


def _sentinel_probe(url_: str, impl: str):
    """A Sentinel is ready once it answers and monitors the service."""
    import redis
    host, port = url_.split("://", 1)[1].split("/")[0].rsplit(":", 1)

    def probe() -> str:
        c = redis.Redis(host=host, port=int(port), socket_timeout=1.0, socket_connect_timeout=1.0)
        try:
            c.sentinel_master(SERVICE)
        finally:
            c.close()
        return "redis-sentinel"
    return probe


def cluster(server: Binary, start_timeout_s: float) -> ClusterRecipe:
    def replication(n: int, cfg) -> str:
        wait = ", WAIT 1 per publish" if getattr(cfg, "delivery", "") == "at-least-once" else ""
        return f"asynchronous: 1 primary + {n - 1} replicas, {SENTINELS} Sentinels (quorum {QUORUM}){wait}"

    return ClusterRecipe(
        node=LocalRecipe(server=server, plan=node_plan, url="redis://{host}:{port}/0", start_timeout_s=start_timeout_s),
        url=url, replication=replication,
        options=lambda n, cfg: {"wait_replicas": "1"} if getattr(cfg, "delivery", "") == "at-least-once" else {},
        extras=(Extra("sentinel", LocalRecipe(server=SENTINEL, plan=sentinel_plan, url="redis://{host}:{port}/0",
                                              probe=_sentinel_probe, start_timeout_s=start_timeout_s),
                      count=lambda n: SENTINELS),),
        start="first", form=form, leader=LeaderProbe)
