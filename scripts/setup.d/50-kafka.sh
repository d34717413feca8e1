#!/usr/bin/env bash
# Apache Kafka for the local launcher: Java (to run it) and Maven (to fetch its jars from Maven Central),
# then the jars themselves, cached under ~/.cache/testbed/kafka-<version>/libs (a second run is instant).
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${VENV:-.venv}
say() { printf 'setup: %s\n' "$*" >&2; }

missing=""
command -v java >/dev/null || missing="$missing default-jre-headless"
command -v mvn >/dev/null || missing="$missing maven"
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing Debian packages for Apache Kafka:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends $missing >/dev/null
  else
    say "WARNING: java/mvn missing (Debian packages:$missing; need root and apt-get); Kafka's tests will fail"
    exit 0
  fi
fi
"$VENV/bin/python" -m testbed.brokers install kafka >/dev/null
