"""The local images of the kafka broker: Apache Kafka (the jars ``dist`` fetches, on Debian's Java) and
tansu (its static binary, ``FROM scratch``).

The Apache Kafka image also has an entry point that reads ``KAFKA_*`` variables as the official
``apache/kafka`` image does (``KAFKA_LISTENERS`` -> ``listeners``, ``__`` -> ``_``, ``___`` -> ``-``) and
formats its KRaft storage with ``CLUSTER_ID`` on first start: compose/kafka.yml drives both images that
way. The docker launcher does not use it: it runs the spec's plan (the local launcher's commands).
"""
from __future__ import annotations

import os
import shlex
import sys

from brokers.kafka import dist
from testbed.errors import BrokerError

KAFKA_IN_IMAGE = "/opt/kafka"
LIBS_IN_IMAGE = f"{KAFKA_IN_IMAGE}/libs"
KAFKA_CONFIG = "/tmp/kafka-config/server.properties"  # written at each start, from the environment


def kafka_env(port: int, controller_port: int, heap: str) -> dict:
    """``dist.server_properties`` as the ``KAFKA_*`` variables both kafka images read (compose/kafka.yml)."""
    env = {"CLUSTER_ID": dist.new_cluster_id(), "KAFKA_HEAP_OPTS": f"-Xms{heap} -Xmx{heap}"}
    props = dist.server_properties(port, controller_port, "/tmp/kraft-combined-logs")
    for line in props.splitlines():
        key, sep, value = line.partition("=")
        if not sep or line.startswith("#"):
            continue
        name = key.strip().replace("_", "__").replace("-", "___").replace(".", "_").upper()
        env[f"KAFKA_{name}"] = value.strip()
    return env


def kafka_entrypoint() -> str:
    """server.properties from ``KAFKA_*`` variables (the official image's convention), then dist's own
    format and server commands."""
    log4j = f"{KAFKA_IN_IMAGE}/log4j2.properties"
    fmt = [shlex.quote(a) for a in dist.format_command(KAFKA_CONFIG, "CID", LIBS_IN_IMAGE, log4j)]
    fmt = ['--cluster-id="${CLUSTER_ID:-5L6g3nShT-eMCtK--X86sw}"' if a == "--cluster-id=CID" else a for a in fmt]
    srv = [shlex.quote(a) for a in dist.server_command(KAFKA_CONFIG, "", LIBS_IN_IMAGE, log4j)]
    srv.insert(1, '${KAFKA_HEAP_OPTS:--Xms512m -Xmx512m}')
    return f"""#!/bin/sh
# KRaft single node from KAFKA_* variables, as the official apache/kafka image reads them.
set -e
props={KAFKA_CONFIG}
mkdir -p "$(dirname "$props")"
: > "$props"
env | grep '^KAFKA_' | grep -v -e '^KAFKA_HEAP_OPTS=' -e '^KAFKA_OPTS=' -e '^KAFKA_JVM_PERFORMANCE_OPTS=' \\
    -e '^KAFKA_LOG4J_OPTS=' -e '^KAFKA_GC_LOG_OPTS=' | while IFS='=' read -r name value; do
  key=$(printf '%s' "${{name#KAFKA_}}" | tr 'A-Z' 'a-z' | sed 's/___/-/g; s/__/@/g; s/_/./g; s/@/_/g')
  printf '%s=%s\\n' "$key" "$value" >> "$props"
done
grep -q '^log.dirs=' "$props" || echo 'log.dirs=/tmp/kraft-combined-logs' >> "$props"
{' '.join(fmt)} >/dev/null
exec {' '.join(srv)}
"""


def apache_build(fetch: bool) -> tuple[str, dict]:
    """(Dockerfile lines after the Java install, context files): the pinned jars, log4j config, entry point."""
    if not dist.installed():  # fetched once into the cache, as the local launcher does
        if not fetch:
            raise BrokerError("Apache Kafka's jars are not fetched yet (python -m testbed.brokers install kafka)")
        dist.install(progress=lambda line: print(line, file=sys.stderr, flush=True))
    libs = dist.libs_dir()
    files: dict = {"testbed-kafka.sh": kafka_entrypoint().encode(),
                   "log4j2.properties": dist.log4j_properties().encode()}
    for name in sorted(os.listdir(libs)):
        if name.endswith(".jar"):
            files[f"libs/{name}"] = os.path.join(libs, name)
    tail = f"""LABEL testbed.kafka_jars={len(files) - 2}
COPY libs {LIBS_IN_IMAGE}
COPY testbed-kafka.sh log4j2.properties {KAFKA_IN_IMAGE}/
RUN chmod 755 {KAFKA_IN_IMAGE}/testbed-kafka.sh && ls {LIBS_IN_IMAGE} | grep -q '^kafka_.*-{dist.KAFKA_VERSION}.jar$'
ENTRYPOINT ["{KAFKA_IN_IMAGE}/testbed-kafka.sh"]
"""
    return tail, files


def tansu_build(fetch: bool) -> tuple[str, dict]:
    from brokers.kafka import tansu
    return 'COPY tansu /tansu\nENTRYPOINT ["/tansu"]\n', {"tansu": tansu.binary()}
