#!/usr/bin/env bash
# Set-up for a fresh machine (Debian, Python 3.10+): system packages, a virtual environment with
# every extra, and what the local broker launchers need. Idempotent: a second call takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

say() { printf 'setup: %s\n' "$*" >&2; }

# 1. System packages the local launchers start (never touching a system instance: the testbed starts
#    its own private processes on free ports). chromium: tests/test_html_page.py opens report.html in it.
APT_PACKAGES="redis-server redis-sentinel rabbitmq-server nats-server chromium"
missing=""
for p in $APT_PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing Debian packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    # policy-rc.d: never start the packages' system services; the testbed runs private instances.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
    apt-get install -y -q --no-install-recommends $missing >/dev/null
    rm -f /usr/sbin/policy-rc.d
  else
    say "WARNING: Debian packages missing:$missing (need root and apt-get); their brokers' tests will fail"
  fi
fi

# 2. The virtual environment, reinstalled only when pyproject.toml changes.
stamp="$VENV/.setup-$(cat pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  [ -x "$VENV/bin/python" ] || { say "creating $VENV"; "$PYTHON" -m venv "$VENV"; }
  say "installing Python packages into $VENV (the first time takes several minutes: torch is large)"
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
  "$VENV/bin/python" -m pip install -q --progress-bar off -e ".[all,dev]"
  rm -f "$VENV"/.setup-*
  touch "$stamp"
fi
# 3. Further steps, one file per area (e.g. fetching Apache Kafka's jars), in name order.
for step in scripts/setup.d/*.sh; do
  [ -e "$step" ] || continue
  VENV="$VENV" bash "$step"
done
say "ready ($VENV)"
