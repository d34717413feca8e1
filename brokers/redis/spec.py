"""Redis Streams: one stream per run, a consumer group, XACK after service (redis-py).

Started as ``redis-server`` bound to 127.0.0.1 (or its host's address) on a free port, working directory in a private folder,
no snapshots and no append-only file: the run's data lives in memory and dies with the process.
With ``--delivery at-least-once`` the server keeps an append-only file in that folder
(``appendonly yes``, ``appendfsync everysec``: every write reaches the file before the reply, so a
killed process loses nothing; a machine crash could lose the last second), and a restart on the same
folder replays it.
"""
from __future__ import annotations

from brokers.redis import cluster
from brokers.spec import (ACK_MODES, Binary, BrokerSpec, Capabilities, Context, Image, Impl, LocalRecipe, Plan,
                          Testing)

VERSION = "7.0.15"  # Debian 12's redis-server; the official image is pinned to the same


SERVER = Binary("redis", "redis-server", "redis-server")


def plan(ctx: Context) -> Plan:
    aof = ["--appendonly", "yes", "--appendfsync", "everysec"] \
        if getattr(ctx.cfg, "delivery", "") == "at-least-once" else ["--appendonly", "no"]
    # protected mode refuses every client not on loopback: off only when bound to a host's own address
    protected = "yes" if ctx.host in ("127.0.0.1", "localhost") else "no"
    return Plan(argv=[ctx.binaries["redis"], "--bind", ctx.host, "--port", str(ctx.port),
                      "--protected-mode", protected, "--save", "", *aof, "--dir", ctx.dir,
                      "--daemonize", "no", "--logfile", "", "--databases", "1", "--unixsocket", ""])


SPEC = BrokerSpec(
    name="redis",
    summary="Redis Streams: a consumer group per run, XACK after service, dead consumers' entries claimed",
    capabilities=Capabilities(redelivers=True, competing_consumers=True, reports_backlog=True,
                              dispatch="shared", delivery=("at-most-once", "at-least-once"),
                              # XACK per message, one XACK per batch, or pipelined with the next XREADGROUP
                              ack_modes=ACK_MODES, ack_default="per-batch"),
    client="redis", extra="redis",
    url_form="redis://[:PASSWORD@]HOST:PORT[/DB]",
    url_schemes=("redis://", "rediss://", "unix://", "redis-sentinel://"),  # redis-py's from_url; Sentinels
    impls=(Impl(
        version=VERSION,
        local=LocalRecipe(server=SERVER, plan=plan, url="redis://{host}:{port}/0", start_timeout_s=20.0),
        cluster=cluster.cluster(SERVER, 20.0),
        image=Image("redis", f"redis:{VERSION}", f"testbed/redis:{VERSION}-debian12", VERSION,
                    ("redis-server",), "TESTBED_REDIS_IMAGE"),
    ),),
    # a dead consumer's entries are claimed after 1 s (the default, 30 s, suits real runs)
    testing=Testing(options={"claim_idle_ms": "1000"}, redelivery_timeout_s=15.0,
                    dead_url="redis://127.0.0.1:{port}/0"),
)
