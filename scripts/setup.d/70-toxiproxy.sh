#!/usr/bin/env bash
# Toxiproxy's server for network faults (net-delay, net-reset, ...): Go (Debian's golang-go, when `go`
# is missing and we are root on Debian), then the server built once from the Go module proxy into
# ~/.cache/testbed/toxiproxy-<version>/ (testbed/faults/toxiproxy_bin.py; a second run is instant).
# Set-up never fails here: without Go or the module proxy it prints a WARNING, and runs with a network
# fault and the proxy tests then fail with a line saying what to do (they never skip silently).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${VENV:-.venv}/bin/python
say() { printf 'setup: %s\n' "$*" >&2; }

if "$PY" -m testbed.faults.toxiproxy_bin --check >/dev/null 2>&1; then
  exit 0
fi
if ! command -v go >/dev/null && [ ! -x /usr/local/go/bin/go ] && [ ! -x /usr/lib/go/bin/go ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing Debian package golang-go (builds the Toxiproxy server)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends golang-go >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null; apt-get install -y -q --no-install-recommends golang-go >/dev/null; } \
      || say "WARNING: could not install golang-go"
  fi
fi
start=$(date +%s)
if out=$("$PY" -m testbed.faults.toxiproxy_bin 2>&1); then
  say "toxiproxy server ready: $out ($(( $(date +%s) - start )) s)"
else
  say "WARNING: toxiproxy server not built: ${out#error: }; network faults and tests/test_proxy.py will fail"
fi
exit 0
