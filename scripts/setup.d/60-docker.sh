#!/usr/bin/env bash
# Docker for the docker launcher and compose/: Debian's docker.io (the engine), docker-compose (v1; v2's
# `docker compose` is used where installed) and debootstrap (the local images' base), when root on
# Debian. Set-up never starts an engine (`python -m testbed.brokers engine start` and .ci/run do), but
# where one answers it builds the local broker images now, so no test or first run waits for them
# (cached: seconds when they exist; about a minute and a half on a fresh machine).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${VENV:-.venv}/bin/python
say() { printf 'setup: %s\n' "$*" >&2; }

missing=""
for p in docker.io docker-compose debootstrap; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing Debian packages for docker:$missing"
    export DEBIAN_FRONTEND=noninteractive
    # policy-rc.d: never start the system docker service; the testbed runs its own private engine.
    had_policy=0; [ -e /usr/sbin/policy-rc.d ] && had_policy=1
    [ "$had_policy" = 1 ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; }
    apt-get install -y -q --no-install-recommends $missing >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null; apt-get install -y -q --no-install-recommends $missing >/dev/null; }
    [ "$had_policy" = 1 ] || rm -f /usr/sbin/policy-rc.d
  else
    say "WARNING: Debian packages missing:$missing (need root and apt-get); docker tests will skip"
  fi
fi

if "$PY" -m testbed.brokers engine status >/dev/null 2>&1; then
  start=$(date +%s)
  if "$PY" -m testbed.brokers images --build >/dev/null; then
    say "docker images ready ($(( $(date +%s) - start )) s)"
  elif [ "${TESTBED_REQUIRE_DOCKER:-}" = 1 ]; then
    say "ERROR: building the docker images failed (see above)"; exit 1
  else
    say "WARNING: building the docker images failed (see above); the docker launcher will try again"
  fi
else
  say "no Docker engine answers: images not built (python -m testbed.brokers engine start, then make setup)"
fi
