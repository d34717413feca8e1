"""Apache Kafka's own jars, fetched once from Maven Central, and the one command that starts a broker.

There is no Kafka tarball here: ``org.apache.kafka:kafka_2.13:<KAFKA_VERSION>`` (the broker, with
``kafka-server``, ``kafka-metadata``, ``kafka-raft``, ``kafka-storage``... as its runtime dependencies)
plus ``log4j-slf4j-impl`` (Kafka logs through SLF4J 1.7; the Kafka distribution ships the same
log4j2 binding in its libs/) are resolved by Maven from a generated pom and copied into one folder.
Nothing else is downloaded.

    install(progress) -> str        fetch into the cache once (a second call returns at once); the libs dir
    libs_dir(version) -> str        where the jars are: $XDG_CACHE_HOME/testbed/kafka-<v>/libs
                                    (~/.cache/... without XDG_CACHE_HOME); not checked
    installed(version) -> bool
    server_properties(port, controller_port, data_dir, ...) -> str   a single-node KRaft config
    log4j_properties(level) -> str                                    quiet log4j2 config (stdout)
    format_command(config_path, cluster_id, libs, log4j_path, java, jvm_extra) -> argv   kafka-storage format
    server_command(config_path, heap, libs, log4j_path, java, jvm_extra) -> argv         kafka-server-start
    cds_archive(libs, java) -> str, cds_flags(archive, dump_to) -> tuple   class-data sharing (optional)
    new_cluster_id() -> str

The local image is built from the same jars (``libs_dir()``), and both launchers run the same
``format_command`` / ``server_command`` from brokers/kafka/spec.py's plan (with ``libs`` pointing at
the folder inside the image in a container), so the local and the docker broker are one configuration.

Why these JVM flags (``JVM_FLAGS``): Kafka's own start script uses G1 with a 20 ms pause goal; we add
``-XX:TieredStopAtLevel=1`` (only the quick C1 compiler): measured here, a broker is ready in about
2.5 s instead of 4-5 s, and on a 2-core machine the C2 compiler threads would otherwise compete with
the pipeline's stages during the first minute of every run. ``-Xms`` = ``-Xmx`` = ``--broker-heap``.
Class-data sharing (``cds_archive``/``cds_flags``): the local launcher's first broker writes an archive of
the classes it loaded when it exits (``-XX:ArchiveClassesAtExit``, next to libs/), later brokers map it
(``-XX:SharedArchiveFile``): measured here, about 0.5 s less start-up (1.8-2.3 s instead of 2.5 s).

Install is atomic: Maven copies into a temporary folder that is renamed into place only when complete,
under a file lock, so two installs at once or an interrupted one never leave half a folder.
"""
from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable

from testbed.errors import BrokerError

#: Apache Kafka fetched from Maven Central (org.apache.kafka:kafka_2.13); the image holds the same jars.
KAFKA_VERSION = "4.4.0"
KAFKA_SCALA = "2.13"

#: log4j2's SLF4J 1.x binding; Kafka logs through slf4j-api 1.7 and ships this binding itself.
LOG4J_VERSION = "2.25.5"
MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"
JVM_FLAGS = ("-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35",
             "-XX:+ExplicitGCInvokesConcurrent", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true")
JAVA_PACKAGE = "openjdk-17-jre-headless"
MAVEN_PACKAGE = "maven"
MVN_TIMEOUT_S = 900


def cache_root() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "testbed")


def libs_dir(version: str = KAFKA_VERSION) -> str:
    return os.path.join(cache_root(), f"kafka-{version}", "libs")


def server_jar(version: str = KAFKA_VERSION, libs: str | None = None) -> str:
    return os.path.join(libs or libs_dir(version), f"kafka_{KAFKA_SCALA}-{version}.jar")


def installed(version: str = KAFKA_VERSION) -> bool:
    return os.path.isfile(server_jar(version))


def pom(version: str = KAFKA_VERSION) -> str:
    return f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>testbed</groupId>
  <artifactId>kafka-server-libs</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{KAFKA_SCALA}</artifactId>
      <version>{version}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{LOG4J_VERSION}</version>
    </dependency>
  </dependencies>
</project>
"""


def find_java() -> str:
    java = shutil.which("java")
    if not java:
        raise BrokerError(f"java not found: Apache Kafka needs Java 17 or newer; install the Debian package "
                          f"{JAVA_PACKAGE!r} (or default-jre-headless) or run `make setup`")
    return java


def find_mvn() -> str:
    mvn = shutil.which("mvn")
    if not mvn:
        raise BrokerError(f"mvn (Maven) not found: it fetches Apache Kafka's jars; install the Debian package "
                          f"{MAVEN_PACKAGE!r} or run `make setup`")
    return mvn


def java_major(java: str) -> int:
    """The Java feature version (17, 21, ...), asked of the binary itself."""
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerError(f"{java} -version failed: {exc}") from None
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not m:
        return 0
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major


def install(progress: Callable[[str], None] | None = None, version: str = KAFKA_VERSION) -> str:
    """Fetch Apache Kafka ``version``'s jars into the cache once; return the libs folder."""
    say = progress or (lambda line: None)
    target = libs_dir(version)
    if installed(version):
        return target
    java = find_java()
    mvn = find_mvn()
    major = java_major(java)
    if major and major < 17:
        raise BrokerError(f"{java} is Java {major}: Apache Kafka {version} needs Java 17 or newer "
                          f"(Debian package {JAVA_PACKAGE!r})")
    home = os.path.dirname(target)
    os.makedirs(home, exist_ok=True)
    with open(os.path.join(home, ".install.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second installer waits here, then finds it done
        if installed(version):
            return target
        work = tempfile.mkdtemp(prefix=".install-", dir=home)
        try:
            _resolve(mvn, version, work, say)
            if os.path.isdir(target):  # a broken earlier folder (no server jar): replace it
                shutil.rmtree(target)
            os.rename(os.path.join(work, "libs"), target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    jars = os.listdir(target)
    size = sum(os.path.getsize(os.path.join(target, j)) for j in jars)
    say(f"kafka: {len(jars)} jars ({size / 2**20:.0f} MB) in {target}")
    return target


def _resolve(mvn: str, version: str, work: str, say: Callable[[str], None]) -> None:
    with open(os.path.join(work, "pom.xml"), "w") as fh:
        fh.write(pom(version))
    coords = f"org.apache.kafka:kafka_{KAFKA_SCALA}:{version}"
    say(f"kafka: resolving {coords} and its runtime dependencies with Maven (first time: up to a minute)")
    argv = [mvn, "-B", "--no-transfer-progress", "-f", os.path.join(work, "pom.xml"),
            "dependency:copy-dependencies", "-DincludeScope=runtime",
            f"-DoutputDirectory={os.path.join(work, 'libs')}"]
    t = time.monotonic()
    errors: list[str] = []
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          stdin=subprocess.DEVNULL, cwd=work) as proc:
        last_say = t
        copied = 0
        for line in proc.stdout:
            line = line.rstrip()
            if line.startswith("[ERROR]"):
                errors.append(line[7:].strip())
            elif "Copying " in line:
                copied += 1
            if time.monotonic() - last_say > 10:
                last_say = time.monotonic()
                say(f"kafka: still resolving ({time.monotonic() - t:.0f}s)")
        try:
            rc = proc.wait(MVN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = -1
    if rc != 0 or not os.path.isfile(server_jar(version, os.path.join(work, "libs"))):
        why = next((e for e in errors if e and not e.startswith("->") and "Re-run" not in e), f"exit code {rc}")
        raise BrokerError(f"mvn could not fetch {coords}: {why[:300]}")
    say(f"kafka: resolved in {time.monotonic() - t:.0f}s")


# -- configuration and commands (shared with the docker image) ---------------------------------------
def new_cluster_id() -> str:
    """A Kafka Uuid in its base64 form; like Kafka's own, never starting with '-' (a command-line flag)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def server_properties(port: int, controller_port: int, data_dir: str, host: str = "127.0.0.1",
                      advertised_host: str = "", advertised_port: int = 0, node_id: int = 1) -> str:
    """A single-node KRaft broker (combined broker and controller).

    Where it differs from Kafka's defaults, and why:
    - every internal topic has replication factor 1 (one node);
    - ``offsets.topic.num.partitions=1`` (default 50): the consumer-offsets topic is created at the first
      group join; 50 partitions cost that first join about a second on this machine, for no gain on one node;
    - ``group.initial.rebalance.delay.ms=0`` (default 3000), as Kafka's own sample config/server.properties
      sets it: otherwise every new group's first assignment waits 3 s.
    """
    adv_host = advertised_host or (host if host != "0.0.0.0" else "127.0.0.1")
    adv_port = advertised_port or port
    return "\n".join([
        "process.roles=broker,controller",
        f"node.id={node_id}",
        f"controller.quorum.voters={node_id}@{host if host != '0.0.0.0' else '127.0.0.1'}:{controller_port}",
        f"listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        f"advertised.listeners=PLAINTEXT://{adv_host}:{adv_port}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        f"log.dirs={data_dir}",
        "num.partitions=1",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=1",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        "",
    ])


def log4j_properties(level: str = "WARN") -> str:
    """log4j2 to stdout (stdout is the log file in the run folder), quiet by default;
    the lines that say the server started and which Kafka version it is ("Kafka version: 4.4.0") are kept."""
    return "\n".join([
        "status = warn",
        "appender.out.type = Console",
        "appender.out.name = STDOUT",
        "appender.out.layout.type = PatternLayout",
        "appender.out.layout.pattern = [%d] %p %m (%c)%n",
        f"rootLogger.level = {level}",
        "rootLogger.appenderRef.out.ref = STDOUT",
        "logger.started.name = kafka.server.KafkaRaftServer",
        "logger.started.level = INFO",
        "logger.version.name = org.apache.kafka.common.utils.internals.AppInfoParser",
        "logger.version.level = INFO",
        "logger.version3.name = org.apache.kafka.common.utils.AppInfoParser",
        "logger.version3.level = INFO",
        "",
    ])


def cds_archive(libs: str, java: str) -> str:
    """Where the class-data-sharing archive of the broker's classes lives, per JVM build (an archive made
    by another JVM is refused by the JVM, so the name carries a key of the libjvm it was made with)."""
    real = os.path.realpath(shutil.which(java) or java)
    libjvm = os.path.join(os.path.dirname(os.path.dirname(real)), "lib", "server", "libjvm.so")
    st = os.stat(libjvm if os.path.exists(libjvm) else real)
    key = hashlib.sha1(f"{real}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
    return os.path.join(os.path.dirname(libs), f"server-classes-{key}.jsa")


def cds_flags(archive: str, dump_to: str = "") -> tuple:
    """Use the archive if it is there; else, if ``dump_to`` is given, write one when the JVM exits."""
    if os.path.isfile(archive):
        return (f"-XX:SharedArchiveFile={archive}", "-Xshare:auto")
    return (f"-XX:ArchiveClassesAtExit={dump_to}",) if dump_to else ()


def _java_argv(main: str, heap: str, libs: str | None, log4j_path: str, java: str, extra: tuple = ()) -> list[str]:
    heap_flags = [f"-Xms{heap}", f"-Xmx{heap}"] if heap else []
    log_flags = [f"-Dlog4j2.configurationFile={log4j_path}"] if log4j_path else []
    return [java, *heap_flags, *JVM_FLAGS, *extra, *log_flags, "-cp", os.path.join(libs or libs_dir(), "*"), main]


def format_command(config_path: str, cluster_id: str, libs: str | None = None, log4j_path: str = "",
                   java: str = "java", jvm_extra: tuple = ()) -> list[str]:
    """``kafka-storage format``: writes meta.properties and the bootstrap metadata into log.dirs."""
    return _java_argv(STORAGE_TOOL, "", libs, log4j_path, java, tuple(jvm_extra) or ("-Xshare:auto",)) + [
        "format", "--config", config_path, f"--cluster-id={cluster_id}"]


def server_command(config_path: str, heap: str = "512m", libs: str | None = None, log4j_path: str = "",
                   java: str = "java", jvm_extra: tuple = ()) -> list[str]:
    """``kafka-server-start``: the broker in the foreground (its stdout is the log)."""
    return _java_argv(MAIN_CLASS, heap, libs, log4j_path, java, tuple(jvm_extra)) + [config_path]


def version_from_log(text: str) -> str:
    """The version the broker itself logged at start ("Kafka version: 4.4.0"), or ""."""
    m = re.search(r"Kafka version: (\S+)", text)
    return m.group(1) if m else ""


def check_heap(heap: str) -> str:
    """``--broker-heap`` as the JVM takes it (512m, 1g, ...)."""
    if not re.fullmatch(r"[1-9]\d*[kKmMgG]?", heap or ""):
        from testbed.errors import ConfigError
        raise ConfigError(f"--broker-heap {heap!r} is not allowed: use a JVM size such as 512m or 1g")
    return heap
