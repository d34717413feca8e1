"""The Ray cluster of simulated hosts, and the driver's connection to any Ray cluster.

Simulated: a head in the root namespace bound to the bridge's address, no CPUs of its own (nothing but
the driver lands there), and one worker node per host, started inside the host's network namespace
and a time namespace of its own (the host's ``clock_offset_s``: every process of the host reads its
monotonic clock that far from ours), advertising ``testbed_host:<name>`` (one unit) and the host's CPUs.
Every node is ``ray start --block`` in a session of its own: stopping a node ends every process of that
session (Ray's daemons; its worker processes, which Ray puts in process groups of their own but not in
sessions of their own), by process id, never ``ray stop`` (which would stop every Ray on the machine).
Token authentication is on (``RAY_AUTH_MODE=token``, the token in a root-only file,
``RAY_AUTH_TOKEN_PATH``): a process without the token cannot use the cluster. Ray 2.60 binds its gRPC
servers on every address of the namespace it runs in (checked here: ``*:PORT``); the token is what
keeps others out of the head's. Usage statistics are off.

An existing cluster (``ray: HEAD:PORT`` or ``--ray-address``): the orchestrator connects as a driver
(with the user's token where the cluster asks for one) and checks that each host it needs has a node
advertising ``testbed_host:<name>``.
"""
from __future__ import annotations

import ctypes
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time

from testbed.errors import ConfigError
from testbed.hosts.errors import HostError
from testbed.hosts.state import start_time

RESOURCE = "testbed_host:"
NAMESPACE = "testbed"  # the Ray namespace of our actors
OBJECT_STORE_BYTES = 80 * 1024 * 1024  # Ray sizes it from the machine's memory otherwise (GBs per node)
NODE_READY_S = 90.0
READY_LINE = "block forever"  # what `ray start --block` logs once the node runs
STOP_GRACE_S = 0.3  # Ray keeps nothing we need: its reaper itself SIGKILLs after 1 s
CLONE_NEWTIME = 0x00000080
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_libc = ctypes.CDLL(None, use_errno=True)


def ray_executable() -> str:
    here = os.path.join(os.path.dirname(sys.executable), "ray")
    found = here if os.access(here, os.X_OK) else shutil.which("ray")
    if not found:
        raise ConfigError("hosts need Ray: pip install -e '.[hosts]' (ray==2.60.0)")
    return found


def require_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("hosts need Ray: pip install -e '.[hosts]' (ray==2.60.0)") from None
    return ray


def write_token(path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32))


def node_env(token_path: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": token_path, "RAY_USAGE_STATS_ENABLED": "0",
                "PYTHONPATH": os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)})
    return env


def time_namespace(offset_ns: int):
    """A ``preexec_fn`` part: the child enters a new time namespace whose monotonic (and boot-time) clock
    is ``offset_ns`` from ours when it execs (unshare(1) takes whole seconds only)."""
    secs, nsecs = divmod(int(offset_ns), 1_000_000_000)

    def enter() -> None:
        if _libc.unshare(CLONE_NEWTIME) != 0:
            os._exit(90)
        fd = os.open("/proc/self/timens_offsets", os.O_WRONLY)
        try:
            os.write(fd, f"monotonic {secs} {nsecs}\nboottime {secs} {nsecs}\n".encode())
        finally:
            os.close(fd)
    return enter


def _preexec(parts):
    parts = [p for p in parts if p is not None]

    def run() -> None:
        for p in parts:
            p()
    return run if parts else None


def start_node(argv: list[str], log_path: str, env: dict, offset_ns: int = 0, fate_share: bool = True,
               netns: str = "") -> subprocess.Popen:
    """``ray start --block ...`` as a session of its own, in ``netns`` and a time namespace of
    ``offset_ns`` when given; with ``fate_share``, it gets the parent-death signal (its reaper then ends
    its session's daemons)."""
    from testbed.launchers import lifeline
    parts = [time_namespace(offset_ns) if offset_ns else None,
             lifeline.die_with_parent() if fate_share else None]
    cmd = (["ip", "netns", "exec", netns] if netns else []) + argv
    log = open(log_path, "ab")
    try:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd="/", start_new_session=True, preexec_fn=_preexec(parts))
    finally:
        log.close()


def head_argv(address: str, port: int, ray_dir: str) -> list[str]:
    return [ray_executable(), "start", "--head", "--block", "--node-ip-address", address, "--port", str(port),
            "--num-cpus", "0", "--num-gpus", "0", "--include-dashboard=false", "--disable-usage-stats",
            "--object-store-memory", str(OBJECT_STORE_BYTES), "--temp-dir", ray_dir,
            "--dashboard-port", str(_free_local_port()), "--include-log-monitor=false"]


def worker_argv(head: str, address: str, host: str, cpus: int, temp_dir: str) -> list[str]:
    """A host's node; ``temp_dir`` its own (nodes started at once in one folder race for socket names)."""
    return [ray_executable(), "start", "--block", "--address", head, "--node-ip-address", address,
            "--num-cpus", str(cpus), "--num-gpus", "0", "--resources", json.dumps({RESOURCE + host: 1}),
            "--object-store-memory", str(OBJECT_STORE_BYTES), "--disable-usage-stats", "--temp-dir", temp_dir,
            "--include-log-monitor=false"]


def _free_local_port() -> int:
    from testbed.launchers.base import free_port
    return free_port("127.0.0.1")


def wait_started(procs: dict, logs: dict, timeout_s: float = NODE_READY_S) -> None:
    """Until every node's ``ray start`` says it runs; one line naming a node that exits or is late."""
    deadline = time.monotonic() + timeout_s
    pending = dict(procs)
    while pending:
        for name, p in list(pending.items()):
            text = _tail(logs[name], 20000)
            if READY_LINE in text:
                del pending[name]
            elif p.poll() is not None:
                raise HostError(f"the Ray node of {name} exited during start-up (code {p.returncode}): "
                                f"{_last_lines(text)} (log: {logs[name]})")
        if pending and time.monotonic() > deadline:
            name = next(iter(pending))
            raise HostError(f"the Ray node of {name} did not start within {timeout_s:g}s (log: {logs[name]})")
        if pending:
            time.sleep(0.1)


def _tail(path: str, n: int) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - n))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _last_lines(text: str, k: int = 3) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-k:])


def session_members(sid: int) -> list[int]:
    """Live processes of session ``sid`` (zombies, already dead, left out)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] not in ("Z", "X") and int(fields[3]) == sid:
                out.append(int(entry))
    return out


def stop_sessions(nodes: dict, grace_s: float = STOP_GRACE_S) -> list[str]:
    """End the sessions of the recorded nodes ({name: {"pid", "start"}}): SIGTERM to every member, SIGKILL
    after ``grace_s``. A leader that is gone leaves its session's id to its members (the kernel reuses no
    id still in use); a leader with the same pid and another start time is someone else's: left alone."""
    sids = {}
    for name, n in nodes.items():
        pid, started = int(n.get("pid", 0)), str(n.get("start", ""))
        now = start_time(pid)
        if not pid or (now and now != started):
            continue
        sids[name] = pid
    done = []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for name, sid in sids.items():
            for p in session_members(sid):
                try:
                    os.kill(p, sig)
                except ProcessLookupError:
                    pass
        if sig == signal.SIGTERM:
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline and any(session_members(s) for s in sids.values()):
                time.sleep(0.05)
    for name, sid in sids.items():
        done.append(f"Ray node {name} (session {sid})")
    return done


# -- the driver ---------------------------------------------------------------------------------------
def connect(address: str, node_ip: str | None = None, token_path: str | None = None):
    """This process as a driver of the cluster at ``address`` (our own token file, or the user's token
    where they set one: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token)."""
    ray = require_ray()
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    if token_path:
        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ["RAY_AUTH_TOKEN_PATH"] = token_path
        os.environ.pop("RAY_AUTH_TOKEN", None)
    _reload_auth()
    if ray.is_initialized():
        ray.shutdown()
    kwargs = {"_node_ip_address": node_ip} if node_ip else {}
    try:
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level="ERROR",
                 include_dashboard=False, **kwargs)
    except Exception as exc:  # noqa: BLE001 - Ray's own errors are long: one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise HostError(f"cannot connect to the Ray cluster at {address}: {first}") from None
    return ray


def _reload_auth() -> None:
    """Ray caches the authentication mode and token per process: read them again (a process may be the
    driver of several clusters in turn, each with its own token)."""
    try:
        from ray._raylet import AuthenticationTokenLoader, Config
        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    except (ImportError, AttributeError):
        pass


def disconnect() -> None:
    try:
        import ray
    except ImportError:
        return
    if ray.is_initialized():
        ray.shutdown()


def advertised_hosts(ray) -> dict[str, dict]:
    """host name -> {"address", "cpus", "node_id"} for every live node with a ``testbed_host:NAME``."""
    out = {}
    for n in ray.nodes():
        if not n.get("Alive"):
            continue
        res = n.get("Resources", {})
        for key in res:
            if key.startswith(RESOURCE):
                out[key[len(RESOURCE):]] = {"address": n.get("NodeManagerAddress", ""),
                                            "cpus": int(res.get("CPU", 0)), "node_id": n.get("NodeID", "")}
    return out


def wait_hosts(ray, names, timeout_s: float = 30.0) -> dict[str, dict]:
    """Until every host in ``names`` has a live node; one line naming those missing."""
    deadline = time.monotonic() + timeout_s
    while True:
        have = advertised_hosts(ray)
        missing = [n for n in names if n not in have]
        if not missing:
            return have
        if time.monotonic() > deadline:
            raise HostError(f"no Ray node advertises {', '.join(RESOURCE + m for m in missing)} "
                            f"(the cluster's hosts: {', '.join(sorted(have)) or 'none'})")
        time.sleep(0.2)
