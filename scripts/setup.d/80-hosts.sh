#!/usr/bin/env bash
# Simulated hosts (testbed/hosts/, docs/hosts.md): ip and tc (iproute2) for the bridge, namespaces, veths
# and tbf links, unshare/setpriv (util-linux) and pgrep (procps), when root on Debian. Ray itself is the
# `hosts` extra (pyproject.toml), installed with the others. Idempotent: a look at dpkg when all is there.
set -euo pipefail
say() { printf 'setup: %s\n' "$*" >&2; }

missing=""
for p in iproute2 util-linux procps; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing Debian packages for simulated hosts:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends $missing >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null; apt-get install -y -q --no-install-recommends $missing >/dev/null; }
  else
    say "WARNING: Debian packages missing:$missing (need root and apt-get); the simulated-hosts tests will skip"
  fi
fi
