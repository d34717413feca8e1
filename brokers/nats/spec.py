"""NATS JetStream: a stream per run, one durable pull consumer shared by the replicas, explicit ack after
service (nats-py).

Started as ``nats-server -c nats.conf -a 127.0.0.1 -p PORT -js -sd DIR``: JetStream on, its store in the
private folder (file storage by default; the adapter can ask for memory), messages up to 64 MB (the
config file's one line: there is no flag for it). Ready means a real client round trip;
the version is the one the server's INFO says.
"""
from __future__ import annotations

import os

from brokers.nats import cluster
from brokers.spec import (ACK_MODES, Binary, BrokerSpec, Capabilities, Context, Image, Impl, LocalRecipe, Plan,
                          Testing)

VERSION = "2.9.10"  # Debian 12's nats-server; the official image is pinned to the same


#: nats-server takes the largest message only from a config file; the testbed carries up to 64 MiB
#: (the server's ceiling, and its default per-connection buffer, which must not be smaller)
CONFIG = "max_payload: 64MB\n"


def plan(ctx: Context) -> Plan:
    conf = os.path.join(ctx.dir, "nats.conf")
    return Plan(argv=[ctx.binaries["nats"], "-c", conf, "-a", ctx.host, "-p", str(ctx.port), "-js",
                      "-sd", os.path.join(ctx.dir, "jetstream")],
                files={"nats.conf": CONFIG})


SERVER = Binary("nats", "nats-server", "nats-server", container_path="/nats-server")


def _image_build(fetch: bool) -> tuple[str, dict]:
    # the official image's layout: the server at /nats-server, which is also the entry point
    return 'RUN ln -s /usr/sbin/nats-server /nats-server\nENTRYPOINT ["/nats-server"]\n', {}


SPEC = BrokerSpec(
    name="nats",
    summary="NATS JetStream: a stream per run, a durable pull consumer shared by the replicas, ack after service",
    capabilities=Capabilities(redelivers=True, competing_consumers=True, reports_backlog=True,
                              dispatch="shared", delivery=("at-most-once", "at-least-once"),
                              # each ack's reply awaited, the batch's last reply awaited, or no reply awaited
                              ack_modes=ACK_MODES, ack_default="per-batch"),
    client="nats-py", extra="nats",
    url_form="nats://[USER:PASSWORD@]HOST:PORT",
    url_schemes=("nats://", "tls://"),  # what the adapter's _check_url takes
    impls=(Impl(
        version=VERSION,
        local=LocalRecipe(server=SERVER, plan=plan, url="nats://{host}:{port}", start_timeout_s=20.0),
        cluster=cluster.cluster(SERVER, 20.0, CONFIG),
        image=Image("nats", f"nats:{VERSION}", f"testbed/nats:{VERSION}-debian12", VERSION, ("nats-server",),
                    "TESTBED_NATS_IMAGE", build=_image_build),
    ),),
    # a dead consumer's messages come back after 2 s (the default, 30 s, suits real runs)
    testing=Testing(options={"ack_wait_s": "2"}, redelivery_timeout_s=15.0, dead_url="nats://127.0.0.1:{port}"),
    # at least once: file storage in the server's folder, each publish waits for its PubAck
    delivery_options={"at-least-once": {"storage": "file", "publish": "acked"},
                      "at-most-once": {"storage": "memory"}},
)
