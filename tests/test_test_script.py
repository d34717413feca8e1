"""scripts/test.sh (`make test`) and the Docker engine, as .ci/run wants them: started when none answers
and stopped on every exit path (pass, fail, "no tests ran", SIGTERM), an engine that answered before
left alone, the last of several test.sh stops it, and without one a closing line with the count of
docker tests skipped and the command that runs them; the exit code is pytest's (5 -> 1).

The script's control flow runs for real (bash, flock, signals); the interpreter it calls is a shim that
records each call and answers as an engine and pytest would: starting a real dockerd for each case would
take the machine's engine from under other tests (the real path is what .ci/run runs)."""
import fcntl
import os
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SHIM = r"""#!/usr/bin/env bash
echo "$*" >> "$SHIM_LOG"
if [ "$1" = "-m" ] && [ "$2" = "testbed.brokers" ]; then
  case "$4" in
    status) exit "$SHIM_STATUS";;
    start) if [ "$SHIM_START_OK" = 1 ]; then echo "export DOCKER_HOST=unix:///shim.sock"; exit 0; fi
           echo "testbed.brokers: error: no Docker engine answers; dockerd needs root" >&2; exit 1;;
    stop) exit 0;;
  esac
fi
if [ "$1" = "-m" ] && [ "$2" = "pytest" ]; then
  for a in "$@"; do case "$a" in --junitxml=*) xml=${a#--junitxml=};; esac; done
  echo "pytest sees DOCKER_HOST=${DOCKER_HOST:-}" >> "$SHIM_LOG"
  cases=""
  for i in $(seq 1 "$SHIM_SKIPS"); do
    cases="$cases<testcase name=\"d$i\"><skipped message=\"no Docker engine answers (tried x)\"/></testcase>"
  done
  echo "<testsuites><testsuite>$cases<testcase name=\"o\"><skipped message=\"other\"/></testcase></testsuite></testsuites>" > "$xml"
  echo "pytest pid $$" >> "$SHIM_LOG"
  exec "$SHIM_REAL" -c 'import sys, time; time.sleep(float(sys.argv[1])); sys.exit(int(sys.argv[2]))' \
    "$SHIM_SLEEP" "$SHIM_RC"
fi
exec "$SHIM_REAL" "$@"
"""


@pytest.fixture
def shim(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    py = venv / "bin" / "python"
    py.write_text(SHIM)
    py.chmod(0o755)
    state = tmp_path / "state"
    state.mkdir()
    log = tmp_path / "calls.log"

    def start(status=1, start_ok=1, rc=0, skips=0, sleep=0):
        env = {**os.environ, "VENV": str(venv), "TESTBED_TEST_STATE": str(state), "SHIM_LOG": str(log),
               "SHIM_STATUS": str(status), "SHIM_START_OK": str(start_ok), "SHIM_RC": str(rc),
               "SHIM_SKIPS": str(skips), "SHIM_SLEEP": str(sleep), "SHIM_REAL": sys.executable}
        env.pop("DOCKER_HOST", None)
        log.write_text("")
        return subprocess.Popen(["bash", os.path.join(ROOT, "scripts", "test.sh"), "-q"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True,  # its own process group, as a terminal's job
                                # SIGINT's default: a job started in the background inherits it ignored
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    def run(**kw):
        p = start(**kw)
        out, err = p.communicate(timeout=60)
        return p.returncode, calls(), err

    def calls():
        return [line for line in log.read_text().splitlines()]

    return type("Shim", (), {"start": staticmethod(start), "run": staticmethod(run), "calls": staticmethod(calls),
                             "state": state, "mark": state / "testbed-engine-by-test.sh"})


def engine_calls(calls):
    return [c.split()[-1] for c in calls if c.startswith("-m testbed.brokers engine")]


@pytest.mark.parametrize("rc, want", [(0, 0), (1, 1), (5, 1)])
def test_no_engine_one_is_started_and_stopped_whatever_pytest_says(shim, rc, want):
    code, calls, err = shim.run(rc=rc)
    assert code == want, err
    assert engine_calls(calls) == ["status", "start", "stop"]
    assert "pytest sees DOCKER_HOST=unix:///shim.sock" in calls  # the tests reach the engine started
    assert not shim.mark.exists()
    assert ("collected no tests" in err) == (rc == 5)


def test_an_engine_that_answers_is_left_alone(shim):
    code, calls, err = shim.run(status=0)
    assert code == 0 and engine_calls(calls) == ["status"]


@pytest.mark.parametrize("how, want", [("term", 143), ("ctrl-c", 130)])
def test_a_signal_stops_pytest_and_the_engine(shim, how, want):
    p = shim.start(sleep=30)
    deadline = time.monotonic() + 20
    while not any(c.startswith("pytest pid") for c in shim.calls()):
        assert time.monotonic() < deadline and p.poll() is None
        time.sleep(0.05)
    pytest_pid = int(next(c for c in shim.calls() if c.startswith("pytest pid")).split()[-1])
    if how == "term":
        p.send_signal(signal.SIGTERM)  # to the script alone: it passes it on
    else:
        os.killpg(p.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole job
    p.communicate(timeout=20)
    assert p.returncode == want
    assert engine_calls(shim.calls()) == ["status", "start", "stop"]
    assert not os.path.exists(f"/proc/{pytest_pid}") or open(f"/proc/{pytest_pid}/stat").read().split()[2] == "Z"


def test_the_last_test_sh_out_stops_the_engine(shim):
    with open(shim.state / "testbed-engine-users.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_SH)  # another test.sh is still running tests on the engine
        code, calls, _ = shim.run()
        assert code == 0 and engine_calls(calls) == ["status", "start"] and shim.mark.exists()
    code, calls, _ = shim.run(status=0)  # the other one, finishing: the engine it used was started by us
    assert code == 0 and engine_calls(calls) == ["status", "stop"] and not shim.mark.exists()


def test_without_an_engine_the_last_line_counts_the_docker_tests_skipped(shim):
    code, calls, err = shim.run(start_ok=0, skips=3)
    assert code == 0, err
    last = err.strip().splitlines()[-1]
    assert "3 tests skipped for want of a Docker engine" in last, err
    assert "testbed.brokers engine start" in last and "make test" in last
    assert "dockerd needs root" in err  # why, said before the tests
