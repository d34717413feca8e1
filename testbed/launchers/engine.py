"""The Docker engine the docker launcher talks to: find one that answers, or start a private one.

Where an engine is looked for, in order:

    $DOCKER_HOST                     what the user exported (the docker CLI and SDK read it too)
    unix:///var/run/docker.sock      the system engine of a laptop or lab server
    unix:///run/testbed-docker/docker.sock   ours, started by `python -m testbed.brokers engine start`

Why a private engine: the machines this testbed is developed on have no running engine, and the
system ``docker.service`` must not be touched (other people's containers live there on a shared
server). ``engine start`` runs a ``dockerd`` of our own, with its own data-root, exec-root, socket and
pidfile, so it can be started and stopped without affecting anything else. It runs with
``--iptables=false --ip6tables=false --bridge=none`` because without them dockerd does not come up on
these VMs (../shared/DOCKER.md); containers then use the host network, which is what the launcher
wants anyway (brokers bound to 127.0.0.1, as with the local launcher).

    python -m testbed.brokers engine status   # which engine answers, its version; exit 1 if none
    python -m testbed.brokers engine start    # root + Debian: apt docker.io docker-compose if missing,
                                              # start ours, print `export DOCKER_HOST=...`
    python -m testbed.brokers engine stop     # stop ours (never a system or user engine)
"""
from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time

from testbed.errors import BrokerError
from testbed.launchers.base import log_tail

PRIVATE_DIR = os.environ.get("TESTBED_DOCKER_DIR", "/run/testbed-docker")
PRIVATE_SOCK = os.path.join(PRIVATE_DIR, "docker.sock")
PRIVATE_HOST = f"unix://{PRIVATE_SOCK}"
PRIVATE_PID = os.path.join(PRIVATE_DIR, "docker.pid")
PRIVATE_DATA = os.environ.get("TESTBED_DOCKER_DATA", "/var/lib/testbed-docker")
PRIVATE_LOG = os.path.join(PRIVATE_DATA + ".log")
LOCK_PATH = "/tmp/testbed-docker-engine.lock"
DEFAULT_HOST = "unix:///var/run/docker.sock"
APT_PACKAGES = ("docker.io", "docker-compose")

_found: tuple[str, str] | None | bool = False  # False: not looked yet; None: none answers


def candidates() -> list[str]:
    """Engine addresses to try, in order, without duplicates."""
    out = []
    for host in (os.environ.get("DOCKER_HOST", ""), DEFAULT_HOST, PRIVATE_HOST):
        if host and host not in out:
            out.append(host)
    return out


def ping(host: str, timeout_s: float = 2.0) -> str | None:
    """The engine's version if one answers at ``host`` within ``timeout_s``, else None."""
    if host.startswith("unix://") and not os.path.exists(host[len("unix://"):]):
        return None  # nothing there: do not pay for a client
    try:
        import docker
    except ImportError:
        return None
    try:
        client = docker.DockerClient(base_url=host, timeout=timeout_s)
        try:
            return client.version().get("Version", "?")
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - any failure means "does not answer"
        return None


def find(refresh: bool = False) -> tuple[str, str] | None:
    """(address, version) of the first engine that answers; cached for the process (``refresh``)."""
    global _found
    if _found is False or refresh:
        _found = None
        for host in candidates():
            version = ping(host)
            if version:
                _found = (host, version)
                break
    return _found or None


def no_engine_reason() -> str:
    """Why no engine can be had here, in one line (for errors and test skips)."""
    tried = ", ".join(candidates())
    why = _cannot_start_reason()
    hint = f"none can be started here: {why}" if why else \
        "start one with `python -m testbed.brokers engine start`"
    return f"no Docker engine answers (tried {tried}); {hint}"


def client(timeout_s: float = 60.0):
    """A docker SDK client for the engine that answers, or BrokerError with the reason."""
    import docker
    found = find()
    if not found:
        raise BrokerError(no_engine_reason())
    return docker.DockerClient(base_url=found[0], timeout=timeout_s)


def env_for_tools() -> dict:
    """Environment for the docker / docker-compose CLIs so they reach the engine we found."""
    found = find()
    env = dict(os.environ)
    if found:
        env["DOCKER_HOST"] = found[0]
    return env


# -- the private engine -------------------------------------------------------------------------
def _is_debian() -> bool:
    return os.path.exists("/etc/debian_version") and shutil.which("apt-get") is not None


def _cannot_start_reason() -> str:
    """Empty when ``start`` can work here; else why not."""
    if shutil.which("dockerd"):
        return "" if os.geteuid() == 0 else "dockerd needs root (run `engine start` as root)"
    if os.geteuid() != 0:
        return "dockerd is not installed and installing it needs root (apt-get install docker.io)"
    if not _is_debian():
        return "dockerd is not installed and this is not Debian (install Docker Engine yourself)"
    return ""


def _private_pid() -> int | None:
    """The pid of our private dockerd if it runs (checked against its command line)."""
    try:
        with open(PRIVATE_PID) as fh:
            pid = int(fh.read().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmd = fh.read().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if any(PRIVATE_SOCK.encode() in part for part in cmd) else None


def install(progress=print) -> None:
    """apt-get install docker.io docker-compose (root, Debian), never starting the system service."""
    missing = [p for p in APT_PACKAGES if subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True).stdout.find("ok installed") < 0]
    if not missing:
        return
    why = _cannot_start_reason() if not shutil.which("dockerd") else ""
    if os.geteuid() != 0 or not _is_debian():
        raise BrokerError(why or f"cannot install {' '.join(missing)}: needs root on Debian")
    progress(f"engine: installing Debian packages {' '.join(missing)} (apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    policy = "/usr/sbin/policy-rc.d"
    had_policy = os.path.exists(policy)
    try:
        if not had_policy:  # keep apt from starting the system docker.service
            with open(policy, "w") as fh:
                fh.write("#!/bin/sh\nexit 101\n")
            os.chmod(policy, 0o755)
        r = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
                           env=env, capture_output=True, text=True)
        if r.returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
            r = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
                               env=env, capture_output=True, text=True)
    finally:
        if not had_policy:
            try:
                os.remove(policy)
            except OSError:
                pass
    if r.returncode != 0:
        last = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["?"]
        raise BrokerError(f"apt-get install {' '.join(missing)} failed: {last[0]}")


def start(timeout_s: float = 60.0, progress=print) -> str:
    """Make sure an engine answers; start our private one if none does. Returns its DOCKER_HOST."""
    found = find(refresh=True)
    if found:
        return found[0]
    why = _cannot_start_reason()
    if why:
        raise BrokerError(no_engine_reason())
    install(progress)
    dockerd = shutil.which("dockerd")
    if not dockerd:
        raise BrokerError("dockerd not found after installing docker.io")
    os.makedirs(PRIVATE_DIR, exist_ok=True)
    with open(LOCK_PATH, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two callers at once start one engine
        if not _private_pid():
            for stale in (PRIVATE_SOCK, PRIVATE_PID):
                try:
                    os.remove(stale)
                except OSError:
                    pass
            argv = [dockerd, "--iptables=false", "--ip6tables=false", "--bridge=none",
                    "--storage-driver=overlay2", "--data-root", PRIVATE_DATA, "--exec-root", PRIVATE_DIR,
                    "-H", PRIVATE_HOST, "--pidfile", PRIVATE_PID]
            progress(f"engine: starting a private dockerd ({PRIVATE_HOST}, data in {PRIVATE_DATA}, "
                     f"log {PRIVATE_LOG})")
            with open(PRIVATE_LOG, "ab") as log:
                proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True)  # outlives this command, on purpose
        else:
            proc = None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            version = ping(PRIVATE_HOST)
            if version:
                global _found
                _found = (PRIVATE_HOST, version)
                return PRIVATE_HOST
            if proc is not None and proc.poll() is not None:
                raise BrokerError(f"dockerd exited during start-up (code {proc.returncode}); "
                                  f"last log lines: {_log_tail()}")
            time.sleep(0.25)
        if proc is not None:
            os.killpg(proc.pid, signal.SIGTERM)
        raise BrokerError(f"dockerd did not answer within {timeout_s:g}s; last log lines: {_log_tail()}")


def stop(timeout_s: float = 30.0) -> bool:
    """Stop our private dockerd (and the containers it runs). False when it was not running."""
    pid = _private_pid()
    if not pid:
        return False
    for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    if fh.read().split(")")[-1].split()[0] == "Z":
                        break
            except OSError:
                break
            time.sleep(0.1)
        if not os.path.exists(f"/proc/{pid}"):
            break
    netns = os.path.join(PRIVATE_DIR, "netns", "default")
    if os.path.ismount(netns):  # dockerd leaves its host-netns bind mount in our exec-root
        subprocess.run(["umount", netns], capture_output=True)
    global _found
    _found = False
    return True


def _log_tail(lines: int = 3) -> str:
    return log_tail(PRIVATE_LOG, lines, window=4096)


def cli(action: str) -> int:
    say = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    if action == "status":
        found = find(refresh=True)
        if not found:
            print(no_engine_reason())
            return 1
        host, version = found
        ours = " (ours, private)" if host == PRIVATE_HOST else ""
        print(f"engine {version} answers at {host}{ours}")
        return 0
    if action == "start":
        host = start(progress=say)
        version = find()[1]
        say(f"engine: {version} answers at {host}")
        print(f"export DOCKER_HOST={host}")
        return 0
    if action == "stop":
        if stop():
            say(f"engine: stopped the private dockerd ({PRIVATE_HOST})")
        else:
            say("engine: no private dockerd of ours runs (a system or user engine is never stopped)")
        return 0
    raise BrokerError(f"engine {action!r}: allowed: status, start, stop")
