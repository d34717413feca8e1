#!/usr/bin/env bash
# Run the whole suite. pytest's "no tests ran" (exit 5) is a failure here too: a suite that ran
# nothing has proved nothing.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${VENV:-.venv}/bin/python
"$PY" -m pytest -ra "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "test.sh: pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
