"""RabbitMQ: one work queue per run, competing consumers with prefetch, basic_ack after service (pika).

Started as a private node, so it never touches a RabbitMQ or an epmd the machine already runs:
- its own epmd (Erlang's port mapper) on a free port bound to 127.0.0.1, started first, in the
  foreground (``ERL_EPMD_PORT``; the node is told ``-start_epmd false``, so no daemon escapes);
- node name ``testbed-<id>@localhost``, AMQP and Erlang distribution on free 127.0.0.1 ports;
- data (mnesia), config, enabled-plugins (none: no management plugin), env file and Erlang cookie
  (``HOME``) in the private folder; logs go to stdout (the log file in the run folder).
``/usr/lib/rabbitmq/bin/rabbitmq-server`` is the server itself (Debian's ``/usr/sbin`` wrapper switches
to the ``rabbitmq`` user and writes to /var/log); in the image ``rabbitmq-server`` on PATH is the same.
Ready means a real AMQP login. Start-up takes a few seconds (the Erlang VM and RabbitMQ's boot steps).
"""
from __future__ import annotations

import os
import secrets

from brokers.rabbitmq import cluster
from brokers.spec import (ACK_MODES, Binary, BrokerSpec, Capabilities, Context, Helper, Image, Impl, LocalRecipe, Plan,
                          Testing)

VERSION = "3.10.8"  # Debian 12's rabbitmq-server; the official image is pinned to the same

CONFIG = """\
listeners.tcp.1 = {host}:{port}
# guest may log in: every listener is on the loopback interface anyway
loopback_users = none
# a private temporary node: do not refuse publishes because the temp disk is nearly full
disk_free_limit.absolute = 1MB
log.console = true
log.console.level = warning
log.file = false
"""

#: `rabbitmq-server` on PATH in the image is the server itself (as in the official image)
WRAPPER = (" \\\n && printf '#!/bin/sh\\nexec /usr/lib/rabbitmq/bin/rabbitmq-server \"$@\"\\n' "
           "> /usr/local/sbin/rabbitmq-server && chmod 755 /usr/local/sbin/rabbitmq-server")


def plan(ctx: Context) -> Plan:
    d, amqp, dist, epmd = ctx.dir, ctx.ports["amqp"], ctx.ports["dist"], ctx.ports["epmd"]
    node = f"testbed-{secrets.token_hex(4)}@localhost"
    path = lambda name: os.path.join(d, name)  # noqa: E731
    env = {
        "HOME": d, "ERL_EPMD_PORT": str(epmd), "ERL_EPMD_ADDRESS": ctx.host,
        "RABBITMQ_NODENAME": node, "RABBITMQ_USE_LONGNAME": "false",
        "RABBITMQ_NODE_IP_ADDRESS": ctx.host, "RABBITMQ_NODE_PORT": str(amqp),
        "RABBITMQ_DIST_PORT": str(dist),
        "RABBITMQ_MNESIA_BASE": path("mnesia"), "RABBITMQ_LOG_BASE": path("log"),
        "RABBITMQ_LOGS": "-", "RABBITMQ_CONFIG_FILE": path("rabbitmq.conf"),
        "RABBITMQ_ADVANCED_CONFIG_FILE": path("advanced.config"),
        "RABBITMQ_CONF_ENV_FILE": path("rabbitmq-env.conf"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": path("enabled_plugins"),
        "RABBITMQ_PID_FILE": path("rabbitmq.pid"),
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-start_epmd false -kernel inet_dist_use_interface "
                                              + "{" + ctx.host.replace(".", ",") + "}",
    }
    epmd_bin = ctx.binaries["epmd"]
    return Plan(
        argv=[ctx.binaries["rabbitmq"]], env=env, dirs=("mnesia", "log"),
        files={"rabbitmq.conf": CONFIG.format(host=ctx.host, port=amqp), "enabled_plugins": "[].\n", "rabbitmq-env.conf": ""},
        helpers=[Helper("epmd", [epmd_bin, "-port", str(epmd), "-address", ctx.host],
                        ready_argv=[epmd_bin, "-port", str(epmd), "-names"], env={"HOME": d})],
        facts={"node": node, "dist_port": dist, "epmd_port": epmd})


SERVER = Binary("rabbitmq", "/usr/lib/rabbitmq/bin/rabbitmq-server", "rabbitmq-server",
                container_path="rabbitmq-server")


def _wrong_password(url: str) -> str:
    return url.replace("guest:guest@", "guest:not-the-password@")


SPEC = BrokerSpec(
    name="rabbitmq",
    summary="RabbitMQ: a work queue per run, competing consumers with prefetch, basic_ack after service",
    capabilities=Capabilities(redelivers=True, competing_consumers=True, reports_backlog=True,
                              dispatch="shared", delivery=("at-most-once", "at-least-once"),
                              window_option="prefetch",
                              # basic_ack per message, one multiple ack per batch, or written without waiting
                              ack_modes=ACK_MODES, ack_default="per-batch"),
    client="pika", extra="rabbitmq",
    url_form="amqp://USER:PASSWORD@HOST:PORT/VHOST",
    url_schemes=("amqp://", "amqps://"),
    impls=(Impl(
        version=VERSION,
        local=LocalRecipe(
            server=SERVER,
            helpers=(Binary("epmd", "epmd", "erlang-base"),),
            plan=plan, ports=("amqp", "dist", "epmd"), url="amqp://guest:guest@{host}:{amqp}/%2F",
            start_timeout_s=60.0, stop_grace_s=5.0),
        image=Image("rabbitmq", f"rabbitmq:{VERSION}", f"testbed/rabbitmq:{VERSION}-debian12", VERSION,
                    ("rabbitmq-server",), "TESTBED_RABBITMQ_IMAGE", post=WRAPPER),
        cluster=cluster.cluster(SERVER, 60.0, CONFIG),
    ),),
    # prefetch 50 so two consumers of 400 messages both get a share (RabbitMQ requeues a dead
    # consumer's messages as soon as its connection drops: no option needed for fast redelivery)
    testing=Testing(options={"prefetch": "50"}, redelivery_timeout_s=15.0,
                    dead_url="amqp://guest:guest@127.0.0.1:{port}/%2F", wrong_credentials=_wrong_password),
    # at least once: a durable queue, persistent messages, each publish confirmed by the broker
    delivery_options={"at-least-once": {"durable": True, "persistent": True, "confirms": True},
                      "at-most-once": {"durable": False, "persistent": False, "confirms": False}},
)
