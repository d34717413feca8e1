"""Fault schedules: what goes wrong in a run, when, and for how long, on the run's clock.

A fault is written ``KIND[:REPLICA]@T[:D[:PARAM...]]`` (a ``--fault`` flag or a string in the YAML
``faults:`` list; a YAML mapping ``{kind, at, duration, replica, latency, jitter, rate}`` works too).
``T`` counts from the start of the offered load (the warm-up is part of the run), times take ``s`` or
``ms`` (a bare number is seconds).

    kill-broker@T                 SIGKILL the broker (docker kill); it stays down until a restart-broker
    restart-broker@T              start it again (same ports and data); a running broker is stopped first
    bounce-broker@T:D             kill, wait D, restart
    pause-broker@T:D              SIGSTOP for D, then SIGCONT (docker pause/unpause)
    kill-consumer:R@T             SIGKILL stage B replica R (0-based); the orchestrator starts it again
                                  after the consumer restart delay
    pause-consumer:R@T:D          SIGSTOP replica R for D
    net-delay@T:D:LAT             each direction between the stages and the broker delayed by LAT (20ms),
                                  so a request/reply round trip grows by 2 x LAT, as netem on loopback
    net-jitter@T:D:LAT[:JITTER]   delay uniform in LAT +/- JITTER (default JITTER = LAT)
    net-bandwidth@T:D:RATE        each direction capped at RATE (bit, kbit, mbit, gbit: 8mbit = 1 MB/s)
    net-reset@T                   drop every open connection (clients must reconnect)
    net-blackhole@T:D             connections stay open but pass nothing for D

On a cluster (``--broker-nodes N``, N > 1; refused on one node), one node at a time:

    kill-leader@T                 SIGKILL the node that leads the run's partition, queue or stream (or
                                  the primary of a primary/replica set) at T, asked of the broker then
    pause-leader@T:D              SIGSTOP that node for D, then SIGCONT
    bounce-leader@T:D             kill it, wait D, start it again (same ports and data)
    kill-node:K@T                 SIGKILL node K (0-based); it stays down
    pause-node:K@T:D              SIGSTOP node K for D
    bounce-node:K@T:D             kill node K, wait D, start it again
    (the *-broker kinds act on every node of a cluster at once)

On simulated hosts (``--hosts FILE``, testbed/hosts/):

    partition-host:NAME@T:D       host NAME's link down for D (every connection to and from it), then up

``parse`` checks each fault alone; ``Schedule.validate`` checks them together against the run
(overlaps on one target, faults past the run's end, replicas); ``Schedule.check_applies`` refuses a
schedule the run's broker and launcher cannot carry out. Every failure is a ``ConfigError`` with one
line naming the value and what is allowed.
"""
from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from testbed.errors import ConfigError

BROKER, CONSUMER, NETWORK = "broker", "consumer", "network"
LEADER, NODE = "leader", "node"  # one node of a cluster: the run's leader when the fault fires, or node K
HOST = "host"  # a simulated host (testbed/hosts/): its link
_HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
#: targets whose actions are the broker's (they run in order on the fault hook's broker thread)
BROKER_TARGETS = (BROKER, LEADER, NODE)


@dataclass(frozen=True)
class Kind:
    target: str            # broker, consumer or network
    window: bool           # takes a duration D
    params: tuple = ()     # names of the values after D; a trailing "?" marks an optional one
    help: str = ""


KINDS: dict[str, Kind] = {
    "kill-broker": Kind(BROKER, False, help="kill-broker@T"),
    "restart-broker": Kind(BROKER, False, help="restart-broker@T"),
    "bounce-broker": Kind(BROKER, True, help="bounce-broker@T:D"),
    "pause-broker": Kind(BROKER, True, help="pause-broker@T:D"),
    "kill-consumer": Kind(CONSUMER, False, help="kill-consumer:R@T"),
    "pause-consumer": Kind(CONSUMER, True, help="pause-consumer:R@T:D"),
    "net-delay": Kind(NETWORK, True, ("latency",), "net-delay@T:D:LAT (e.g. net-delay@10s:5s:20ms)"),
    "net-jitter": Kind(NETWORK, True, ("latency", "jitter?"),
                       "net-jitter@T:D:LAT[:JITTER] (e.g. net-jitter@10s:5s:20ms:10ms)"),
    "net-bandwidth": Kind(NETWORK, True, ("rate",), "net-bandwidth@T:D:RATE (e.g. net-bandwidth@10s:5s:8mbit)"),
    "net-reset": Kind(NETWORK, False, help="net-reset@T"),
    "net-blackhole": Kind(NETWORK, True, help="net-blackhole@T:D"),
    "kill-leader": Kind(LEADER, False, help="kill-leader@T"),
    "pause-leader": Kind(LEADER, True, help="pause-leader@T:D"),
    "bounce-leader": Kind(LEADER, True, help="bounce-leader@T:D"),
    "kill-node": Kind(NODE, False, help="kill-node:K@T"),
    "pause-node": Kind(NODE, True, help="pause-node:K@T:D"),
    "bounce-node": Kind(NODE, True, help="bounce-node:K@T:D"),
    "partition-host": Kind(HOST, True, help="partition-host:NAME@T:D (e.g. partition-host:mq@10s:3s)"),
}

#: default seconds between kill-consumer and the replica's restart (``--consumer-restart-s``)
CONSUMER_RESTART_S = 1.0

_NUMBER = r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+"
_TIME = re.compile(rf"^({_NUMBER})(s|ms)?$")
_DELAY = re.compile(rf"^({_NUMBER})(ms|s)$")
_RATE = re.compile(rf"^({_NUMBER})(bit|kbit|mbit|gbit)$")
_RATE_SCALE = {"bit": 1.0, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9}


def _fmt_s(seconds: float) -> str:
    if seconds and seconds < 1 and float(seconds * 1000).is_integer():
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"


def _fmt_rate(bits: float) -> str:
    for unit in ("gbit", "mbit", "kbit"):
        if bits >= _RATE_SCALE[unit] and (bits / _RATE_SCALE[unit]).is_integer():
            return f"{bits / _RATE_SCALE[unit]:g}{unit}"
    return f"{bits:g}bit"


@dataclass(frozen=True)
class Fault:
    """One fault. Times in seconds from the start of the load; ``duration_s`` is 0 for instant kinds."""

    kind: str
    at_s: float
    duration_s: float = 0.0
    replica: int | None = None
    latency_ms: int = 0        # net-delay, net-jitter: added to each direction
    jitter_ms: int = 0         # net-jitter: +/- around latency_ms
    rate_bps: float = 0.0      # net-bandwidth: bits per second, each direction
    node: int | None = None    # kill-node, pause-node, bounce-node: the cluster's node K
    host: str | None = None    # partition-host: the host's name in the hosts file

    @property
    def target(self) -> str:
        """What the fault acts on: ``broker``, ``consumer:R``, ``network``, ``leader`` or ``node:K``
        (faults on one target never overlap)."""
        t = KINDS[self.kind].target
        if t == CONSUMER:
            return f"{CONSUMER}:{self.replica}"
        if t == HOST:
            return f"{HOST}:{self.host}"
        return f"{NODE}:{self.node}" if t == NODE else t

    @property
    def end_s(self) -> float:
        return self.at_s + self.duration_s

    @property
    def needs_proxy(self) -> bool:
        return KINDS[self.kind].target == NETWORK

    def __str__(self) -> str:
        kind = KINDS[self.kind]
        head = self.kind + (f":{self.replica}" if self.replica is not None else "") + \
            (f":{self.node}" if self.node is not None else "") + (f":{self.host}" if self.host is not None else "")
        parts = [_fmt_s(self.at_s)]
        if kind.window:
            parts.append(_fmt_s(self.duration_s))
        if "latency" in kind.params:
            parts.append(f"{self.latency_ms}ms")
        if "jitter?" in kind.params:
            parts.append(f"{self.jitter_ms}ms")
        if "rate" in kind.params:
            parts.append(_fmt_rate(self.rate_bps))
        return f"{head}@{':'.join(parts)}"

    def to_dict(self) -> dict:
        """For run.json: the canonical spelling and the typed fields."""
        d = {"fault": str(self), "kind": self.kind, "target": self.target, "at_s": self.at_s,
             "duration_s": self.duration_s}
        if self.replica is not None:
            d["replica"] = self.replica
        if self.node is not None:
            d["node"] = self.node
        if self.host is not None:
            d["host"] = self.host
        if self.kind in ("net-delay", "net-jitter"):
            d["latency_ms"] = self.latency_ms
        if self.kind == "net-jitter":
            d["jitter_ms"] = self.jitter_ms
        if self.kind == "net-bandwidth":
            d["rate_bps"] = self.rate_bps
        return d


@dataclass(frozen=True)
class Event:
    """One action at one moment: what the orchestrator does at ``at_s`` for ``fault``.

    Actions: broker ``kill`` ``restart`` ``pause`` ``resume``; consumer ``kill`` ``restart`` ``pause``
    ``resume``; network ``add-toxics`` ``remove-toxics`` ``reset``; leader and node (one node of a
    cluster) ``kill`` ``restart`` ``pause`` ``resume``; host ``partition`` ``heal``."""

    at_s: float
    target: str
    action: str
    fault: Fault


_ENDS = ("restart", "resume", "remove-toxics", "heal")


@dataclass(frozen=True)
class Schedule:
    """The faults of one run, in time order."""

    faults: tuple[Fault, ...] = field(default_factory=tuple)

    def __bool__(self) -> bool:
        return bool(self.faults)

    def __iter__(self):
        return iter(self.faults)

    def __len__(self) -> int:
        return len(self.faults)

    @property
    def needs_proxy(self) -> bool:
        """True when a network fault needs the TCP proxy in front of the broker (otherwise keep it out)."""
        return any(f.needs_proxy for f in self.faults)

    @property
    def targets(self) -> set[str]:
        return {KINDS[f.kind].target for f in self.faults}

    def to_list(self) -> list[dict]:
        return [f.to_dict() for f in self.faults]

    def events(self, consumer_restart_s: float = CONSUMER_RESTART_S) -> list[Event]:
        """Every action in time order; at one moment, actions that end a fault come before those that
        start one (back-to-back faults on one target)."""
        out: list[Event] = []
        for f in self.faults:
            t = f.target
            if f.kind in ("kill-broker", "restart-broker", "kill-leader", "kill-node"):
                out.append(Event(f.at_s, t, f.kind.split("-")[0], f))
            elif f.kind in ("bounce-broker", "bounce-leader", "bounce-node"):
                out += [Event(f.at_s, t, "kill", f), Event(f.end_s, t, "restart", f)]
            elif f.kind in ("pause-broker", "pause-consumer", "pause-leader", "pause-node"):
                out += [Event(f.at_s, t, "pause", f), Event(f.end_s, t, "resume", f)]
            elif f.kind == "kill-consumer":
                out += [Event(f.at_s, t, "kill", f), Event(f.at_s + consumer_restart_s, t, "restart", f)]
            elif f.kind == "net-reset":
                out.append(Event(f.at_s, t, "reset", f))
            elif f.kind == "partition-host":
                out += [Event(f.at_s, t, "partition", f), Event(f.end_s, t, "heal", f)]
            else:
                out += [Event(f.at_s, t, "add-toxics", f), Event(f.end_s, t, "remove-toxics", f)]
        return sorted(out, key=lambda e: (e.at_s, e.action not in _ENDS))

    def validate(self, duration_s: float, replicas: int,
                 consumer_restart_s: float = CONSUMER_RESTART_S, nodes: int = 1) -> "Schedule":
        """Check the faults together against a run of ``duration_s`` seconds with ``replicas`` stage B
        replicas and a broker of ``nodes`` nodes. Returns self."""
        for f in self.faults:
            if f.node is not None and nodes > 1 and not 0 <= f.node < nodes:
                raise ConfigError(f"--fault {f}: node {f.node} is out of range: this run's cluster has {nodes} "
                                  f"nodes (use 0 to {nodes - 1})")
            if f.replica is not None and not 0 <= f.replica < replicas:
                allowed = "0" if replicas == 1 else f"0 to {replicas - 1}"
                raise ConfigError(f"--fault {f}: replica {f.replica} is out of range: this run has {replicas} "
                                  f"stage B replica{'s' if replicas != 1 else ''} (use {allowed})")
            if f.at_s >= duration_s:
                raise ConfigError(f"--fault {f}: starts at {_fmt_s(f.at_s)}, not before the run ends "
                                  f"(--duration {duration_s:g}): a fault must start within the run")
            end = f.at_s + consumer_restart_s if f.kind == "kill-consumer" else f.end_s
            if end > duration_s:
                what = "the replica's restart" if f.kind == "kill-consumer" else "it"
                raise ConfigError(f"--fault {f}: {what} ends at {_fmt_s(end)}, after the run ends "
                                  f"(--duration {duration_s:g}): shorten it or start it earlier")
        by_target: dict[str, list[Fault]] = {}
        for f in self.faults:
            by_target.setdefault(f.target, []).append(f)
        for target, faults in by_target.items():
            _check_target(target, faults, consumer_restart_s)
        return self

    def check_applies(self, launcher: str, capabilities, nodes: int = 1, hosts=None) -> "Schedule":
        """Refuse faults the run cannot carry out. ``launcher`` is the resolved one (``local``,
        ``docker``, ``external``, ``embedded``); ``capabilities`` the broker spec's (an object or a
        mapping with ``needs_server`` and ``in_process``); ``nodes`` the broker's (--broker-nodes);
        ``hosts`` the names of the run's simulated hosts (None: it has none). Returns self."""
        for f in self.faults:
            reason = refusal(f, launcher, capabilities, nodes, hosts)
            if reason:
                raise ConfigError(f"--fault {f} is not possible here: {reason}")
        return self


def refusal(fault: Fault, launcher: str, capabilities, nodes: int = 1, hosts=None) -> str | None:
    """Why ``fault`` cannot apply to this broker, launcher, number of broker nodes and simulated hosts
    (``hosts``: their names, None when the run has none), or None."""
    needs_server = bool(_cap(capabilities, "needs_server"))
    in_process = bool(_cap(capabilities, "in_process"))
    target = KINDS[fault.kind].target
    if target == HOST:
        if hosts is None:
            return ("partition-host needs simulated hosts (--hosts FILE with ray: simulated): the testbed cuts a "
                    "simulated host's own link, never a real machine's")
        if fault.host not in hosts:
            hint = difflib.get_close_matches(fault.host, list(hosts), n=1)
            did = f" (did you mean {hint[0]!r}?)" if hint else ""
            return f"there is no host {fault.host!r}{did}; the hosts are {', '.join(hosts)}"
        return None
    if target in (LEADER, NODE):
        if nodes < 2:
            what = "no leader to lose" if target == LEADER else "no other node to carry on"
            return (f"{fault.kind} needs a cluster (--broker-nodes 2 or more): a single broker node has {what}; "
                    "use the *-broker kinds")
        target = BROKER  # and whatever a broker fault needs
    if target == BROKER:
        if in_process or not needs_server or launcher == "embedded":
            return "this transport has no broker process to kill or pause (broker faults need a broker server)"
        if launcher == "external":
            return ("the broker is external (--launcher external): the testbed never kills, pauses or restarts "
                    "a broker it did not start; use --launcher local or docker")
        if launcher not in ("local", "docker"):
            return f"launcher {launcher!r} cannot stop or restart its broker (use local or docker)"
    elif target == CONSUMER:
        if in_process:
            return "the stages of an in-process transport are threads of one process, which cannot be killed alone"
    elif target == NETWORK:
        if in_process or not needs_server or launcher == "embedded":
            return "this transport has no broker connection to put a network proxy in front of"
        if nodes > 1:
            return ("the network proxy stands in front of one broker address, and a cluster's clients reach "
                    "every node: network faults are for a single node (--broker-nodes 1)")
    return None


def _cap(capabilities, name: str):
    if isinstance(capabilities, Mapping):
        return capabilities.get(name, False)
    return getattr(capabilities, name, False)


def _check_target(target: str, faults: list[Fault], consumer_restart_s: float) -> None:
    """Faults on one target: no overlaps; the broker's kill/restart order makes sense."""
    faults = sorted(faults, key=lambda f: f.at_s)
    down: Fault | None = None       # kill-broker with no restart yet, or kill-node (it stays down)
    prev: Fault | None = None
    prev_end = -math.inf
    for f in faults:
        if down is not None and down.kind == "kill-node":
            raise ConfigError(f"--fault {f} comes after --fault {down}: node {down.node} is down from "
                              f"{_fmt_s(down.at_s)} to the end of the run (bounce-node:{down.node}@T:D kills it "
                              "and starts it again)")
        if down is not None:
            if f.kind != "restart-broker":
                raise ConfigError(f"--fault {f} overlaps --fault {down}: the broker is down from "
                                  f"{_fmt_s(down.at_s)} until a restart-broker (add one before {_fmt_s(f.at_s)})")
            if f.at_s == down.at_s:
                raise ConfigError(f"--fault {f} is at the same moment as --fault {down}: restart later "
                                  f"(or use bounce-broker@T:D)")
            down, prev, prev_end = None, f, f.at_s
            continue
        if prev is not None and (f.at_s < prev_end or f.at_s == prev.at_s):
            raise ConfigError(f"--fault {f} overlaps --fault {prev} on the same {target.split(':')[0]}"
                              f"{' replica ' + target.split(':')[1] if ':' in target else ''}: "
                              f"faults on one target must not overlap (start it at {_fmt_s(prev_end)} or later)")
        if f.kind in ("kill-broker", "kill-node"):
            down = f
        prev = f
        prev_end = f.at_s + consumer_restart_s if f.kind == "kill-consumer" else f.end_s


# -- parsing --------------------------------------------------------------------------------------
def parse(text: str) -> Fault:
    """One ``KIND[:R]@T[:D[:PARAM...]]`` string."""
    if not isinstance(text, str):
        raise ConfigError(f"fault {text!r} is not allowed: write it as KIND@T, e.g. bounce-broker@10s:2s")
    spec = text.strip()
    head, at, rest = spec.partition("@")
    name, _, replica_text = head.partition(":")
    name = name.strip().lower()
    if name not in KINDS:
        hint = difflib.get_close_matches(name, list(KINDS), n=1)
        did = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(f"--fault {text!r}: unknown fault kind {name!r}{did}; use one of {', '.join(KINDS)}")
    kind = KINDS[name]
    if not at or not rest:
        raise ConfigError(f"--fault {text!r} needs a time: write {kind.help}")
    replica = node = host = None
    if kind.target == CONSUMER:
        if not replica_text:
            raise ConfigError(f"--fault {text!r} needs a replica: write {kind.help} (R counts from 0)")
        if not replica_text.isdigit():
            raise ConfigError(f"--fault {text!r}: replica {replica_text!r} is not allowed: "
                              f"it must be a whole number >= 0 ({kind.help})")
        replica = int(replica_text)
    elif kind.target == HOST:
        if not replica_text:
            raise ConfigError(f"--fault {text!r} needs a host: write {kind.help}")
        if not _HOST_NAME.match(replica_text):
            raise ConfigError(f"--fault {text!r}: host {replica_text!r} is not allowed: a host name is 1-32 "
                              f"letters, digits, '-' or '_' ({kind.help})")
        host = replica_text
    elif kind.target == NODE:
        if not replica_text:
            raise ConfigError(f"--fault {text!r} needs a node: write {kind.help} (K counts from 0)")
        if not replica_text.isdigit():
            raise ConfigError(f"--fault {text!r}: node {replica_text!r} is not allowed: "
                              f"it must be a whole number >= 0 ({kind.help})")
        node = int(replica_text)
    elif replica_text:
        raise ConfigError(f"--fault {text!r}: {name} takes no replica; write {kind.help}")
    values = rest.split(":")
    required = 1 + int(kind.window) + sum(1 for p in kind.params if not p.endswith("?"))
    most = 1 + int(kind.window) + len(kind.params)
    if not required <= len(values) <= most:
        raise ConfigError(f"--fault {text!r} has {len(values)} value{'s' if len(values) != 1 else ''} after "
                          f"'@': write {kind.help}")
    at_s = parse_time(values[0], f"--fault {text!r}: time")
    duration_s = 0.0
    if kind.window:
        duration_s = parse_time(values[1], f"--fault {text!r}: duration")
        if duration_s <= 0:
            raise ConfigError(f"--fault {text!r}: duration {values[1]!r} is not allowed: it must be > 0")
    extra = dict(zip((p.rstrip("?") for p in kind.params), values[1 + int(kind.window):]))
    return _build(text, name, at_s, duration_s, replica, extra, node, host)


def _build(text: str, name: str, at_s: float, duration_s: float, replica, extra: Mapping, node=None,
           host=None) -> Fault:
    latency_ms = jitter_ms = 0
    rate_bps = 0.0
    if "latency" in extra:
        latency_ms = parse_delay_ms(extra["latency"], f"--fault {text!r}: latency", minimum=1)
    if name == "net-jitter":
        jitter_ms = latency_ms if extra.get("jitter") in (None, "") else \
            parse_delay_ms(extra["jitter"], f"--fault {text!r}: jitter", minimum=1)
        if jitter_ms > latency_ms:
            raise ConfigError(f"--fault {text!r}: jitter {jitter_ms}ms is not allowed: at most the latency "
                              f"({latency_ms}ms), so no delay is negative")
    if "rate" in extra:
        rate_bps = parse_rate(extra["rate"], f"--fault {text!r}: rate")
    return Fault(name, at_s, duration_s, replica, latency_ms, jitter_ms, rate_bps, node, host)


def parse_time(value, what: str) -> float:
    """Seconds from ``10s``, ``500ms`` or a bare number of seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        m = _TIME.match(str(value).strip().lower())
        if not m:
            raise ConfigError(f"{what} {value!r} is not allowed: use seconds with a unit, e.g. 10s or 500ms")
        seconds = float(m.group(1)) / (1000.0 if m.group(2) == "ms" else 1.0)
    if not (seconds >= 0 and math.isfinite(seconds)):
        raise ConfigError(f"{what} {value!r} is not allowed: it must be a number of seconds >= 0")
    return seconds


def parse_delay_ms(value, what: str, minimum: int = 0) -> int:
    """Whole milliseconds from ``20ms`` or ``0.02s`` (the proxy delays in whole milliseconds)."""
    m = _DELAY.match(str(value).strip().lower())
    if not m:
        raise ConfigError(f"{what} {value!r} is not allowed: use a delay with a unit, e.g. 20ms or 0.5s")
    ms = float(m.group(1)) * (1000.0 if m.group(2) == "s" else 1.0)
    if not ms.is_integer() or ms < minimum:
        raise ConfigError(f"{what} {value!r} is not allowed: it must be a whole number of milliseconds "
                          f">= {minimum}ms")
    return int(ms)


def parse_rate(value, what: str) -> float:
    """Bits per second from ``8mbit``, ``512kbit`` (the proxy limits in whole kB/s: at least 8kbit)."""
    m = _RATE.match(str(value).strip().lower())
    if not m:
        raise ConfigError(f"{what} {value!r} is not allowed: use bits per second with a unit, e.g. 8mbit, "
                          f"512kbit or 1gbit")
    bps = float(m.group(1)) * _RATE_SCALE[m.group(2)]
    if bps < 8000:
        raise ConfigError(f"{what} {value!r} is not allowed: it must be at least 8kbit (1 kB/s)")
    return bps


_MAPPING_KEYS = ("kind", "at", "duration", "replica", "node", "host", "latency", "jitter", "rate")


def parse_entry(entry) -> Fault:
    """One YAML ``faults:`` entry: a string, or a mapping {kind, at, duration, replica, latency, jitter, rate}."""
    if isinstance(entry, str):
        return parse(entry)
    if not isinstance(entry, Mapping):
        raise ConfigError(f"faults: entry {entry!r} is not allowed: write a string such as "
                          f"'bounce-broker@10s:2s' or a mapping with kind and at")
    for key in entry:
        if key not in _MAPPING_KEYS:
            hint = difflib.get_close_matches(str(key), _MAPPING_KEYS, n=1)
            did = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(f"faults: entry {dict(entry)!r}: unknown key {key!r}{did}; "
                              f"use {', '.join(_MAPPING_KEYS)}")
    if "kind" not in entry or "at" not in entry:
        raise ConfigError(f"faults: entry {dict(entry)!r} needs kind and at (e.g. kind: bounce-broker, at: 10s)")
    kind = str(entry["kind"]).strip().lower()
    head = kind + (f":{entry['replica']}" if "replica" in entry else "") + \
        (f":{entry['node']}" if "node" in entry else "") + (f":{entry['host']}" if "host" in entry else "")
    values = [entry["at"]]
    if "duration" in entry:
        values.append(entry["duration"])
    spec = KINDS.get(kind)
    if spec is not None:
        for p in spec.params:
            key = p.rstrip("?")
            if key in entry:
                values.append(entry[key])
        for key in ("duration", "latency", "jitter", "rate"):
            wanted = spec.window if key == "duration" else any(p.rstrip("?") == key for p in spec.params)
            if key in entry and not wanted:
                raise ConfigError(f"faults: entry {dict(entry)!r}: {kind} takes no {key}; write {spec.help}")
    text = f"{head}@{':'.join(_yaml_value(v) for v in values)}"
    return parse(text)


def _yaml_value(v) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, (int, float)):
        return f"{v!r}"
    return str(v)


def parse_all(entries: Iterable) -> Schedule:
    """Flags (strings) or YAML entries into a time-ordered ``Schedule`` (each fault checked alone)."""
    if entries is None:
        return Schedule()
    if isinstance(entries, (str, Mapping)):
        entries = [entries]
    if not isinstance(entries, Iterable):
        raise ConfigError(f"faults: {entries!r} is not allowed: give a list of faults")
    faults = [parse_entry(e) for e in entries]
    return Schedule(tuple(sorted(faults, key=lambda f: f.at_s)))
