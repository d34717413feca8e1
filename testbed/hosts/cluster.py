"""Hosts, up and down: the object a run (or ``python -m testbed.hosts``) holds while it uses them.

    cluster = hosts.open_hosts(spec)      # the run's way in: hosts already up from the same file, else up
    cluster = hosts.up(spec)              # simulated: bridge, namespaces, Ray head + a node per host
    cluster = hosts.connect(address, spec)  # an existing Ray cluster (its nodes advertise testbed_host:NAME)
    cluster.hosts["gpu1"]                 # Host: name, address, agent, clock (ClockMap), node (RemoteNode)
    cluster.address                       # the orchestrator's address on the hosts' network
    cluster.close()                       # agents and driver gone; hosts this object brought up removed

Bringing simulated hosts up: the sweep of dead runs' leftovers first; a state file (state.py) written
before anything is made and tracked by this process's watchdog (lifeline.py: removed if we die, however
we die); the bridge (under the machine-wide lock, so two bring-ups never pick one subnet), the
namespaces, the Ray nodes, this process as the driver, one agent per host, a first clock sample of each.
Any failure or Ctrl-C on the way removes what was made. ``persistent`` (``python -m testbed.hosts up``):
the Ray nodes do not die with us, and once up the hosts are handed over (the state says so, the
watchdog forgets them) to stay up until ``down``.
"""
from __future__ import annotations

import atexit
import os
import secrets
import threading
from dataclasses import dataclass

from testbed.errors import ConfigError
from testbed.hosts import netns, ray_nodes, teardown
from testbed.hosts.clock import KEY_BYTES, ClockMap
from testbed.hosts.errors import HostDown, HostError
from testbed.hosts.handle import AgentHandle
from testbed.hosts.listener import StageListener
from testbed.hosts.remote_node import RemoteNode
from testbed.hosts.spec import HostSpec, HostsSpec
from testbed.hosts.state import State, all_states, lock, new_state
from testbed.hosts.workers import ControlGroup, RemoteWorker
from testbed.launchers import lifeline


@dataclass
class Host:
    name: str
    address: str
    agent: AgentHandle
    clock: ClockMap
    node: RemoteNode
    spec: HostSpec | None = None
    netns: str = ""


class Cluster:
    def __init__(self, spec: HostsSpec, ray, address: str, hosts: dict, state: State | None = None,
                 owned: bool = False, ray_address: str = ""):
        self.spec, self.ray, self.address, self.hosts = spec, ray, address, hosts
        self.state, self.owned, self.ray_address = state, owned, ray_address
        self._listener: StageListener | None = None
        self._closed = False
        self._lock = threading.Lock()
        if owned:
            atexit.register(self.close)

    @property
    def simulated(self) -> bool:
        return self.state is not None

    def host(self, name: str) -> Host:
        try:
            return self.hosts[name]
        except KeyError:
            raise ConfigError(f"there is no host {name!r}: the hosts are {', '.join(self.hosts)}") from None

    def node(self, name: str) -> RemoteNode:
        """Where the launchers start a broker on host ``name`` (``local.start(..., node=)``)."""
        return self.host(name).node

    # -- stages ---------------------------------------------------------------------------------------
    @property
    def listener(self) -> StageListener:
        """Where the run's stage processes on hosts connect (made on first use, one per cluster object)."""
        with self._lock:
            if self._listener is None:
                self._listener = StageListener(self.address)
            return self._listener

    def control(self, local_start=None, local_stop=None, local_t0=None) -> ControlGroup:
        return ControlGroup(local_start, local_stop, local_t0)

    def worker(self, host: str, name: str, target: str, args, control: ControlGroup,
               log_path: str | None = None) -> RemoteWorker:
        """A stage process to start on ``host``: ``target`` ("module:function") with JSON ``args``."""
        return RemoteWorker(self.host(host), self.listener, control, name, target, args, log_path)

    # -- network faults (simulated) -------------------------------------------------------------------
    def partition(self, name: str) -> None:
        netns.partition(self._host_state(name))

    def heal(self, name: str) -> None:
        netns.heal(self._host_state(name))

    def _host_state(self, name: str):
        if self.state is None:
            raise ConfigError(f"host {name}: partitions are for simulated hosts (a real host's link is not ours)")
        self.host(name)
        return self.state.host(name)

    # -- clocks ---------------------------------------------------------------------------------------
    def start_clocks(self, interval_s: float = 2.0) -> None:
        for h in self.hosts.values():
            h.clock.start(interval_s)

    def stop_clocks(self, final: bool = True) -> None:
        for h in self.hosts.values():
            h.clock.stop(final)

    def clock_report(self) -> dict:
        """host -> run.json's clock figures (clock_offset_ns, clock_drift_ppm, clock_uncertainty_us, ...)."""
        return {n: {"address": h.address, **h.clock.report()} for n, h in self.hosts.items()}

    # -- health ---------------------------------------------------------------------------------------
    def dead_hosts(self) -> list[str]:
        return [n for n, h in self.hosts.items() if h.agent.dead]

    def check(self) -> None:
        """HostDown naming the first host whose agent is gone (its Ray node died)."""
        for n, h in self.hosts.items():
            if h.agent.dead:
                raise HostDown(n, h.agent.dead)
            h.agent.stage_exits()  # a cheap look; an agent found dead is marked

    # -- the end --------------------------------------------------------------------------------------
    def close(self) -> list[str]:
        """Agents stopped (what they started with them), the driver gone; hosts we brought up removed."""
        if self._closed:
            return []
        self._closed = True
        lines = []
        for h in self.hosts.values():
            h.clock.close()
        for h in self.hosts.values():
            if not h.agent.dead:
                try:
                    lines += h.agent.call("shutdown", timeout_s=30)
                except Exception:  # noqa: BLE001 - gone: what it started died with it
                    pass
            h.agent.kill()
        if self._listener is not None:
            self._listener.close()
        ray_nodes.disconnect()
        if self.owned and self.state is not None:
            with lock():
                lines += teardown.remove(self.state, force=True)
            lifeline.untrack_hosts(self.state.path)
        return lines

    down = close

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- the ways in ----------------------------------------------------------------------------------------
def open_hosts(spec: HostsSpec, ray_address: str = "", say=None) -> Cluster:
    """A run's hosts: an existing cluster (``ray_address`` or ``ray: HEAD:PORT``); simulated hosts already
    up from the same file (``python -m testbed.hosts up``); else simulated hosts brought up for this run
    (``close()`` removes them)."""
    if ray_address or not spec.simulated:
        return connect(ray_address or spec.ray, spec if spec.hosts else None)
    kept = up_state(spec)
    if kept is not None:
        return attach(kept, spec)
    return up(spec, say=say)


def up_state(spec: HostsSpec | None = None) -> State | None:
    """The hosts left up by ``python -m testbed.hosts up`` (of ``spec``'s content, when given)."""
    from testbed.hosts.state import digest
    for s in all_states():
        if s.persistent and (spec is None or s.digest == digest(spec.to_dict())):
            return s
    return None


def up(spec: HostsSpec, persistent: bool = False, say=None) -> Cluster:
    """Bring simulated hosts up (root); see the module's docstring."""
    if not spec.simulated:
        raise ConfigError(f"hosts file {spec.path or ''}: ray = {spec.ray}: those hosts are an existing cluster's; "
                          "nothing to bring up")
    netns.require_root()
    ray_nodes.require_ray()
    ray_nodes.ray_executable()
    say = say or (lambda line: None)
    for line in teardown.sweep():
        say(f"swept: {line}")
    with lock():
        st = new_state(spec.to_dict(), spec.path)
        netns.plan(st, spec.hosts)
        st.token_path = os.path.join(os.path.dirname(st.path), f"{st.id}.token")
        st.save()
        lifeline.track_hosts(st.path)
        try:
            netns.create_bridge(st)
            st.ray_address = f"{st.bridge_address}:{_free_port(st.bridge_address)}"
            st.save()
        except BaseException:
            teardown.remove(st, force=True)
            raise
    cluster = None
    try:
        netns.create_hosts(st)
        say(f"network: bridge {st.bridge} {st.bridge_address} ({st.subnet}), "
            + ", ".join(f"{n} {st.host(n).address}" for n in st.hosts))
        _start_nodes(st, persistent)
        say(f"Ray: head {st.ray_address}, a node per host")
        cluster = attach(st, spec, owned=not persistent)
        if persistent:
            st.persistent = True
            st.save()
            lifeline.untrack_hosts(st.path)
        return cluster
    except BaseException:
        if cluster is not None:
            cluster.owned = False
            cluster.close()
        ray_nodes.disconnect()
        with lock():
            teardown.remove(st, force=True)
        lifeline.untrack_hosts(st.path)
        raise


def _free_port(address: str) -> int:
    from testbed.launchers.base import free_port
    return free_port(address)


def _start_nodes(st: State, persistent: bool) -> None:
    from testbed.hosts.state import start_time
    os.makedirs(st.ray_dir, mode=0o700, exist_ok=True)
    ray_nodes.write_token(st.token_path)
    env = ray_nodes.node_env(st.token_path)
    host, port = st.ray_address.rsplit(":", 1)
    logs = {"head": os.path.join(st.ray_dir, "node-head.log")}
    procs = {"head": ray_nodes.start_node(ray_nodes.head_argv(host, int(port), st.ray_dir), logs["head"], env,
                                          fate_share=not persistent)}
    st.nodes["head"] = {"pid": procs["head"].pid, "start": start_time(procs["head"].pid)}
    st.save()
    ray_nodes.wait_started({"head": procs["head"]}, logs)
    for name in st.hosts:
        h = st.host(name)
        logs[name] = os.path.join(st.ray_dir, f"node-{name}.log")
        temp = os.path.join(st.ray_dir, f"n{h.index}")  # short: Ray's socket paths must stay under 108 bytes
        procs[name] = ray_nodes.start_node(ray_nodes.worker_argv(st.ray_address, h.address, name, h.cpus, temp),
                                           logs[name],
                                           env, offset_ns=h.clock_offset_ns, fate_share=not persistent,
                                           netns=h.netns)
        st.nodes[name] = {"pid": procs[name].pid, "start": start_time(procs[name].pid)}
    st.save()
    ray_nodes.wait_started({n: p for n, p in procs.items() if n != "head"}, logs)


def attach(st: State, spec: HostsSpec | None = None, owned: bool = False) -> Cluster:
    """This process as the driver of simulated hosts that are up (``st``), with agents and clocks of its own."""
    from testbed.hosts.spec import parse
    spec = spec or parse(st.spec, st.spec_path)
    netns.require_root()
    ray = ray_nodes.connect(st.ray_address, node_ip=st.bridge_address, token_path=st.token_path)
    try:
        ray_nodes.wait_hosts(ray, list(st.hosts))
        hosts = _hosts(ray, {n: st.host(n).address for n in st.hosts}, spec)
        for n, h in hosts.items():
            h.netns = st.host(n).netns
    except BaseException:
        ray_nodes.disconnect()
        raise
    return Cluster(spec, ray, st.bridge_address, hosts, st, owned, st.ray_address)


def connect(address: str, spec: HostsSpec | None = None) -> Cluster:
    """This process as a driver of an existing Ray cluster; the hosts of ``spec`` (or, without one, every
    ``testbed_host:NAME`` the cluster advertises) must each have a node; one line naming those missing."""
    from testbed.hosts.spec import ADDRESS
    if not ADDRESS.match(address):
        raise ConfigError(f"--ray-address {address!r} is not allowed: write HEAD:PORT (e.g. 10.0.0.5:6379)")
    ray = ray_nodes.connect(address)
    try:
        have = ray_nodes.advertised_hosts(ray)
        if spec is None:
            if not have:
                raise ConfigError(f"the Ray cluster at {address} has no node advertising a testbed_host:NAME "
                                  "resource: start each with ray start --resources '{\"testbed_host:NAME\": 1}'")
            spec = HostsSpec(address, {n: HostSpec(n, max(1, have[n]["cpus"])) for n in sorted(have)}, "")
        missing = [n for n in spec.hosts if n not in have]
        if missing:
            raise ConfigError(f"the Ray cluster at {address} has no node for host(s) {', '.join(missing)} "
                              f"(no testbed_host:NAME resource); it has: {', '.join(sorted(have)) or 'none'}")
        short = [n for n, h in spec.hosts.items() if have[n]["cpus"] < h.cpus]
        if short:
            n = short[0]
            raise ConfigError(f"host {n} wants cpus: {spec.hosts[n].cpus}, its Ray node has {have[n]['cpus']}")
        hosts = _hosts(ray, {n: None for n in spec.hosts}, spec)
        me = ray.util.get_node_ip_address()
    except BaseException:
        ray_nodes.disconnect()
        raise
    return Cluster(spec, ray, me, hosts, None, False, address)


def _hosts(ray, addresses: dict, spec: HostsSpec) -> dict[str, Host]:
    key = secrets.token_bytes(KEY_BYTES)
    agents = AgentHandle.create_many(ray, addresses, key)
    hosts = {}
    try:
        for n, a in agents.items():
            clock = ClockMap(n, a.address, a.clock_port, key)
            hosts[n] = Host(n, a.address, a, clock, RemoteNode(a), spec.hosts.get(n))
            clock.sample()
    except OSError as exc:
        for h in hosts.values():
            h.clock.close()
        for a in agents.values():
            a.kill()
        raise HostError(str(exc)) from None
    return hosts
