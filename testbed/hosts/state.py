"""What simulated hosts exist, written down before they are made: a state file per set of hosts.

Every name we give the machine starts with ``PREFIX`` and a four-hex-digit id (``tbh1a2b``): the bridge
``tbh1a2bbr``, a network namespace ``tbh1a2b-<host>`` per host, its veth pair ``tbh1a2br<i>`` (bridge
side) / ``tbh1a2bn<i>`` (namespace side), the Ray folder ``/tmp/tbh-1a2b``. The state file
``/run/testbed-hosts/<id>.json`` (root only) lists them, the Ray nodes' session leaders (pid and
start time) and the owner: the process that brought them up (pid and start time), or ``persistent``
once ``python -m testbed.hosts up`` has handed them over to stay up. It is written before anything is
made and updated as things are made, so whoever finds it with its owner dead (the owner's watchdog, the
next start's sweep: teardown.py) knows what to remove, whatever point the owner died at.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, field

PREFIX = "tbh"
STATE_DIR = "/run/testbed-hosts"
RAY_DIR_PREFIX = "/tmp/tbh-"
LOCK = "lock"


def start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot ("" if there is none): with the pid it names
    one process (pids are reused)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def alive(pid: int, started: str) -> bool:
    """Whether the process ``pid`` that started at ``started`` still runs (not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] not in ("Z", "X") and fields[19] == started


@dataclass
class Names:
    """Every name a set of simulated hosts gives the machine, from its id."""

    id: str

    @property
    def stem(self) -> str:
        return f"{PREFIX}{self.id}"

    @property
    def bridge(self) -> str:
        return f"{self.stem}br"

    def netns(self, host: str) -> str:
        return f"{self.stem}-{host}"

    def veth_bridge_side(self, index: int) -> str:
        return f"{self.stem}r{index}"

    def veth_host_side(self, index: int) -> str:
        return f"{self.stem}n{index}"

    @property
    def ray_dir(self) -> str:
        return f"{RAY_DIR_PREFIX}{self.id}"


def is_ours(name: str) -> str | None:
    """The id in a name we gave (a link, a namespace, a folder), or None when it is not ours."""
    for head in (PREFIX, os.path.basename(RAY_DIR_PREFIX)):
        if name.startswith(head) and len(name) >= len(head) + 4:
            ident = name[len(head):len(head) + 4]
            if all(c in "0123456789abcdef" for c in ident):
                return ident
    return None


@dataclass
class HostState:
    name: str
    index: int
    netns: str
    address: str
    veth_bridge_side: str
    veth_host_side: str
    cpus: int = 1
    clock_offset_ns: int = 0
    link_mbit: float | None = None


@dataclass
class State:
    id: str
    spec: dict                     # the hosts file's content (HostsSpec.to_dict)
    spec_path: str = ""
    digest: str = ""               # of the content: "the same file" means the same hosts
    owner_pid: int = 0
    owner_start: str = ""
    persistent: bool = False       # handed over by `python -m testbed.hosts up`: stays up until `down`
    created: str = ""              # wall-clock time, for people reading `status`
    subnet: str = ""
    bridge: str = ""
    bridge_address: str = ""
    hosts: dict = field(default_factory=dict)    # name -> HostState as a dict
    ray_address: str = ""                        # HEAD:PORT on the bridge
    ray_dir: str = ""
    token_path: str = ""
    nodes: dict = field(default_factory=dict)    # "head" / host name -> {"pid": .., "start": ..}

    @property
    def path(self) -> str:
        return state_path(self.id)

    @property
    def names(self) -> Names:
        return Names(self.id)

    def host(self, name: str) -> HostState:
        return HostState(**self.hosts[name])

    def owner_alive(self) -> bool:
        return bool(self.owner_pid) and alive(self.owner_pid, self.owner_start)

    def live(self) -> bool:
        """Kept (handed over to stay up, or its owner still runs): nobody but its owner or `down` removes it."""
        return self.persistent or self.owner_alive()

    def save(self) -> None:
        os.makedirs(STATE_DIR, mode=0o700, exist_ok=True)
        tmp = f"{self.path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(asdict(self), fh, indent=1)
        os.replace(tmp, self.path)


def digest(spec_dict: dict) -> str:
    return hashlib.sha256(json.dumps(spec_dict, sort_keys=True).encode()).hexdigest()[:16]


def state_path(ident: str) -> str:
    return os.path.join(STATE_DIR, f"{ident}.json")


def read(path: str) -> State | None:
    try:
        with open(path) as fh:
            data = json.load(fh)
        return State(**data)
    except (OSError, ValueError, TypeError):
        return None


def all_states() -> list[State]:
    try:
        files = sorted(f for f in os.listdir(STATE_DIR) if f.endswith(".json"))
    except OSError:
        return []
    return [s for s in (read(os.path.join(STATE_DIR, f)) for f in files) if s is not None]


def new_state(spec_dict: dict, spec_path: str) -> State:
    """A new id (no state, link, namespace or folder has it) and its state, owned by this process;
    the caller saves it (under ``lock()``) before making anything."""
    taken = {s.id for s in all_states()} | set(existing_ids())
    while True:
        ident = secrets.token_hex(2)
        if ident not in taken:
            break
    return State(id=ident, spec=spec_dict, spec_path=os.path.abspath(spec_path) if spec_path else "",
                 digest=digest(spec_dict), owner_pid=os.getpid(), owner_start=start_time(os.getpid()),
                 created=time.strftime("%Y-%m-%d %H:%M:%S"), ray_dir=Names(ident).ray_dir)


def existing_ids() -> dict[str, list[str]]:
    """id -> what of ours the machine has with that id (links, namespaces, Ray folders), from a listing of
    /sys/class/net, /run/netns and /tmp (no process is started)."""
    found: dict[str, list[str]] = {}
    for folder, kind in (("/sys/class/net", "link"), ("/run/netns", "netns"),
                         (os.path.dirname(RAY_DIR_PREFIX), "dir")):
        try:
            entries = os.listdir(folder)
        except OSError:
            continue
        for e in entries:
            if kind == "dir" and not e.startswith(os.path.basename(RAY_DIR_PREFIX)):
                continue
            if kind != "dir" and not e.startswith(PREFIX):
                continue
            ident = is_ours(e)
            if ident:
                found.setdefault(ident, []).append(f"{kind} {os.path.join(folder, e) if kind == 'dir' else e}")
    return found


@contextlib.contextmanager
def lock():
    """One bring-up or teardown at a time on this machine (ids, subnets and sweeps do not race)."""
    os.makedirs(STATE_DIR, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(STATE_DIR, LOCK), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
