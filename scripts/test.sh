#!/usr/bin/env bash
# Run the whole suite (`make test`; .ci/run calls it). Arguments go to pytest.
#
# Docker: the docker launcher and compose/ are tested against a real engine. When none answers, this
# starts the private one (`python -m testbed.brokers engine start`, as root) and stops it again on every
# exit: tests passed or failed, Ctrl-C, SIGTERM. An engine that answered before is left alone. Several
# test.sh at once share that engine: each holds a shared lock while it runs, and the last one out stops
# it if a test.sh started it. Where none can be started, the docker tests skip and the last line says
# how many and the command that runs them; TESTBED_REQUIRE_DOCKER=1 (.ci/run) makes them fail instead.
#
# pytest's "no tests ran" (exit 5) is a failure here too: a suite that ran nothing has proved nothing.
# The exit code is pytest's (5 -> 1; 130/143 when interrupted); stopping the engine never changes it.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${VENV:-.venv}/bin/python
STATE=${TESTBED_TEST_STATE:-/tmp}           # where the lock and the marker live (tests point it elsewhere)
USERS="$STATE/testbed-engine-users.lock"    # shared while a test.sh runs
MARK="$STATE/testbed-engine-by-test.sh"     # present: a test.sh started the private engine
engine() { "$PY" -m testbed.brokers engine "$@"; }
say() { echo "test.sh: $*" >&2; }

xml=$(mktemp "$STATE/testbed-test-XXXXXX.xml")
pid="" sig=""
exec 9>>"$USERS"
flock -s 9

cleanup() {
  rm -f "$xml"
  flock -u 9
  if flock -n -x 9; then  # no other test.sh uses the engine now
    if [ -e "$MARK" ]; then
      engine stop >/dev/null 2>&1 || say "could not stop the private Docker engine: python -m testbed.brokers engine stop"
      rm -f "$MARK"
    fi
    flock -u 9
  fi
}
trap cleanup EXIT
trap 'sig=130' INT  # Ctrl-C reaches pytest itself (our process group): a second SIGINT would cut its teardown
trap 'sig=143; [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null' TERM

why=""
if ! engine status >/dev/null 2>&1; then
  touch "$MARK"  # before the start: a start cut short is stopped at the exit too
  if out=$(engine start 2>"$xml.err"); then
    eval "$out"  # export DOCKER_HOST=...
  else
    why=$(tail -n 1 "$xml.err")
    say "no Docker engine, the docker tests will skip: ${why#testbed.brokers: error: }"
  fi
  rm -f "$xml.err"
fi
[ -n "$sig" ] && exit "$sig"

color=()
[ -t 1 ] && color=(--color=yes)
# in the background, so that a SIGTERM to this script is passed on at once; `trap - INT`: an asynchronous
# command would otherwise start with SIGINT ignored, and Ctrl-C would not stop pytest
( trap - INT; exec "$PY" -m pytest -ra "${color[@]}" --junitxml="$xml" "$@" ) &
pid=$!
wait "$pid"; rc=$?
while kill -0 "$pid" 2>/dev/null; do wait "$pid"; rc=$?; done  # a trapped signal interrupted the wait
[ -n "$sig" ] && exit "$sig"

if [ "$rc" -eq 5 ]; then
  say "pytest collected no tests"
  exit 1
fi
if [ -n "$why" ] && [ -s "$xml" ]; then
  skipped=$("$PY" - "$xml" <<'EOF'
import sys, xml.etree.ElementTree as ET
words = ("Docker engine answers", "docker SDK is not installed")
print(sum(1 for s in ET.parse(sys.argv[1]).iter("skipped") if any(w in (s.get("message") or "") for w in words)))
EOF
)
  [ "${skipped:-0}" -gt 0 ] && say "$skipped tests skipped for want of a Docker engine; run them as root" \
    "(make test starts a private engine then) or start one first: sudo $PY -m testbed.brokers engine start"
fi
exit "$rc"
