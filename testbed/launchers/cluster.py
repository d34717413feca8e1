"""Cluster launcher: ``--broker-nodes N`` (N > 1) as N broker nodes, each on a ``Node``, from the broker's
``ClusterRecipe`` (brokers/spec.py; each broker declares its own in brokers/<name>/cluster.py). Generic:
it names no broker.

    launch(cfg, run_id, run_dir, nodes=None, where="local") -> ClusterHandle

``nodes`` is one ``Node`` per broker node (testbed/launchers/nodes.py): ``[LOCAL] * N`` by default (every
node on this machine, on 127.0.0.1), or the hosts a placement gives (``--place broker=mq1,mq2,mq3``:
one ``RemoteNode`` per member; the list is dealt in turn when it is shorter than N). The extras a
recipe has (a discovery service beside the nodes, say) run on the nodes' hosts in turn. In three steps, so that every
member's plan knows every peer:

1. ports: each member's named ports picked free on its own node (the recipe's ``shared_ports`` once,
   the same number for every member: an Erlang port mapper that every node of a host shares);
2. plans: each member's ``Plan`` from ``MemberContext`` (its folder, ports and address, and the whole
   ``ClusterView``: every peer's address, ports and name, the cluster's shared secret);
3. start: folders and files written, steps run, helpers started, then the servers: all nodes together
   (``start="together"``: a quorum of voters must be up before any answers) or node 0 first and then
   the others together (``start="first"``: they join it); each must answer a real round trip at its own
   address; then the extras; then the recipe's ``form`` waits until the cluster is whole (every node
   joined, a leader elected) and says what it found.

``where="docker"``: the same plans as one container per member (testbed/launchers/cluster_docker.py),
on the host network. Every member's processes point into a private folder ``testbed-<name>-*`` with an
owner file, so the parent-death signal, the watchdog and the start-up sweep (lifeline.py, cleanup.py)
remove them however the run ends. On any failure, and on ``stop()``, every member is stopped.

The handle acts on the whole cluster for the ``*-broker`` faults (kill, pause, restart every node) and
on one node for the cluster faults (``kill_node``, ``pause_node``, ``restart_node`` ...); ``leader(topic)``
asks the broker itself which node leads the run's partition, queue or stream now.
"""
from __future__ import annotations

import os
import secrets
import signal
import sys
import threading
import time

import brokers
from brokers.base import Endpoint
from brokers.spec import ClusterView, MemberContext, Peer, cluster_refusal
from testbed.config import RunConfig
from testbed.errors import BrokerError, ConfigError
from testbed.launchers.base import BrokerHandle, ReadyProbe, impl_string, port_facts
from testbed.launchers.limits import parse_cpus
from testbed.launchers.nodes import LOCAL, Node

HELPER_READY_S = 10.0
STOP_GRACE_S = 3.0  # a cluster's data is throw-away: SIGTERM, then SIGKILL after this long (all at once)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def recipe_for(cfg: RunConfig):
    """(spec, impl, ClusterRecipe) of the run's broker, or a ConfigError saying why it has none."""
    spec = brokers.spec(cfg.broker)
    why = cluster_refusal(spec, cfg.broker_impl)
    if why:
        raise ConfigError(f"--broker-nodes {cfg.broker_nodes} is not possible: {why}")
    impl = spec.impl(cfg.broker_impl)
    return spec, impl, impl.cluster


# -- one member ------------------------------------------------------------------------------------
class Member:
    """One member's processes on its Node: helpers first, the server last (as the local launcher's)."""

    def __init__(self, peer: Peer, recipe, node: Node, run_dir: str):
        self.peer, self.recipe, self.node, self.run_dir = peer, recipe, node, run_dir
        self.binaries: dict = {}
        self.tmp = ""
        self.plan = None
        self.helpers: list = []
        self.server = None
        self.restarts = 0
        self.cfg = None
        self.limits: dict = {}  # --broker-cpus as applied (run.json)
        tag = f"{peer.role}-{peer.index}" if peer.role else f"{recipe.server.name}-{peer.index}"
        self.tag = tag
        self.log_path = os.path.join(run_dir, f"broker-{tag}.log")

    @property
    def url(self) -> str:
        return self.recipe.url.format(host=self.peer.host, **self.peer.ports)

    def resolve(self) -> None:
        self.binaries = {b.name: self.node.resolve_binary(b) for b in (self.recipe.server, *self.recipe.helpers)}

    def make_dir(self, broker: str) -> None:
        self.tmp = self.node.make_dir(f"{broker}-{self.peer.role or 'node'}{self.peer.index}")

    def make_plan(self, view: ClusterView, cfg: RunConfig, run_id: str) -> None:
        self.cfg = cfg
        ctx = MemberContext("local", self.tmp, dict(self.peer.ports), self.binaries, cfg, run_id, _say,
                            advertised={}, host=self.peer.host, member=self.peer, cluster=view)
        self.plan = self.recipe.plan(ctx)

    def prepare(self) -> None:
        """Files, steps and helpers (each until it answers)."""
        self.node.write_plan(self.tmp, self.plan)
        for step in self.plan.steps:
            self.node.run_step(step, self.tmp)
        for h in self.plan.helpers:
            log = os.path.join(self.run_dir, f"broker-{h.name}-{self.peer.index}.log")
            proc = self.node.start_process(h.name, h.argv, log, env=h.env, cwd=self.tmp)
            self.helpers.append(proc)
            proc.wait_ready(lambda h=h: _ready_command(self.node, h), HELPER_READY_S, f" ({' '.join(h.ready_argv)})")

    def start(self) -> None:
        self.server = self.node.start_process(self.tag, self.plan.argv, self.log_path, env=self.plan.env,
                                              cwd=self.tmp, tmp_dir=None, stop_grace_s=self.recipe.stop_grace_s,
                                              on_exit=self.plan.on_exit)
        if self.cfg is not None and self.cfg.broker_cpus and not self.peer.role:
            self.node.apply_limits(self.cfg, self.server.pid, self.limits, self.log_path)  # every node pinned

    def wait_ready(self, spec, label: str, launcher: str, timeout_s: float) -> str:
        probe = ReadyProbe(spec, self.recipe, self.url, label, launcher)
        try:
            answer = self.server.wait_ready(probe, timeout_s, f" on {self.peer.host}:{next(iter(self.peer.ports.values()))} "
                                                              f"(log: {self.log_path})")
        finally:
            probe.close()
        if self.cfg is not None and self.cfg.broker_cpus and not self.peer.role:
            self.node.apply_limits(self.cfg, self.server.pid, self.limits)  # threads started while booting
        return answer

    def alive(self) -> bool:
        return self.server is not None and self.server.alive()

    @property
    def pid(self) -> int | None:
        try:
            return self.server.pid if self.server is not None else None
        except AttributeError:  # stopped: no process any more
            return None

    def kill(self) -> None:
        if self.server is not None:
            self.server.kill()

    def signal(self, sig: int) -> None:
        if self.server is not None and self.server.alive():
            self.server.signal(sig)

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)

    def restart_start(self) -> None:
        """Start the server again (same argv, ports, folder and log); a running one is stopped first."""
        old = self.server
        if old is not None:
            if old.alive():
                old.signal(signal.SIGCONT)
                old.signal(signal.SIGTERM)
                if not old.wait(min(old.stop_grace_s, STOP_GRACE_S)):
                    old.kill()
            old.stop(timeout_s=1.0)
        self.start()
        self.restarts += 1

    def sample(self) -> dict:
        return self.server.sample() if self.alive() else {}

    def terminate(self) -> None:
        """SIGTERM (and SIGCONT: a paused process cannot act on it), without waiting."""
        for p in (self.server, *self.helpers):
            if p is not None and p.alive():
                try:
                    p.signal(signal.SIGCONT)
                    p.signal(signal.SIGTERM)
                except OSError:
                    pass

    def stop(self, timeout_s: float = STOP_GRACE_S) -> None:
        for p in (self.server, *reversed(self.helpers)):
            if p is not None:
                p.stop(timeout_s=timeout_s)
        if self.tmp:
            self.node.remove_dir(self.tmp)
            self.tmp = ""

    def facts(self) -> dict:
        d = {"name": self.peer.name, "role": self.peer.role or "node", "index": self.peer.index,
             "host": self.peer.host, "pid": self.pid, **port_facts(self.peer.ports), "tmp_dir": self.tmp,
             "log": self.log_path}
        if self.node.name:
            d["on"] = self.node.name
        d.update({f"{h.name}_pid": h.pid for h in self.helpers})
        d.update(self.limits)
        return d


def _ready_command(node: Node, helper) -> None:
    if node.run_command(helper.ready_argv, env=helper.env) != 0:
        raise BrokerError(f"{helper.name} does not answer yet")


# -- the handle ------------------------------------------------------------------------------------
class ClusterHandle(BrokerHandle):
    """A running cluster: ``members`` (nodes first, in index order, then the extras)."""

    def __init__(self, endpoint: Endpoint, members: list, view: ClusterView, recipe, spec, impl, launcher: str,
                 timeout_s: float):
        super().__init__(endpoint)
        self.members, self.view, self.recipe = members, view, recipe
        self.spec, self.impl, self.launcher, self.timeout_s = spec, impl, launcher, timeout_s
        self.nodes = [m for m in members if not m.peer.role]
        self._probe = None
        self._probe_lock = threading.Lock()
        self._stopped = False

    @property
    def size(self) -> int:
        return len(self.nodes)

    def node_name(self, k: int) -> str:
        return self.nodes[k].peer.name

    def sample(self) -> dict:
        """CPU% and RSS summed over the nodes' servers (the extras are not the broker)."""
        out: dict = {}
        for m in self.nodes:
            for k, v in m.sample().items():
                out[k] = round(out.get(k, 0.0) + v, 1)
        return out

    def pids(self) -> list[int]:
        return [m.pid for m in self.nodes if m.pid]

    # -- the whole cluster (kill-broker, pause-broker, bounce-broker, restart-broker) ------------------
    def signal(self, sig: int) -> None:
        for m in self.nodes:
            m.signal(sig)

    def pause(self) -> None:
        for m in self.nodes:
            m.pause()

    def resume(self) -> None:
        for m in self.nodes:
            m.resume()

    def kill(self) -> None:
        for m in self.nodes:
            m.kill()

    def restart(self) -> None:
        """Every node started again (those still running are stopped first), together; returns once
        each answers."""
        for m in self.nodes:
            m.restart_start()
        for m in self.nodes:
            m.wait_ready(self.spec, self.impl.impl_label(), self.launcher, self.timeout_s)
        self.endpoint.extra["restarts"] = self.endpoint.extra.get("restarts", 0) + 1

    # -- one node (kill-node, bounce-node, the leader faults) -----------------------------------------
    def _node(self, k: int):
        if not 0 <= k < len(self.nodes):
            raise BrokerError(f"node {k} is not a node of this cluster (0 to {len(self.nodes) - 1})")
        return self.nodes[k]

    def kill_node(self, k: int) -> None:
        self._node(k).kill()

    def pause_node(self, k: int) -> None:
        self._node(k).pause()

    def resume_node(self, k: int) -> None:
        self._node(k).resume()

    def restart_node(self, k: int) -> None:
        """Node ``k`` started again on its ports and data; returns once it answers."""
        m = self._node(k)
        m.restart_start()
        m.wait_ready(self.spec, self.impl.impl_label(), self.launcher, self.timeout_s)
        self.endpoint.extra.setdefault("node_restarts", {})[str(k)] = m.restarts

    def node_alive(self, k: int) -> bool:
        return self._node(k).alive()

    def leader(self, topic: str) -> int | None:
        """The node that leads ``topic`` now, asked of the broker (None: none does, or no answer)."""
        if self.recipe.leader is None:
            return None
        with self._probe_lock:
            try:
                if self._probe is None:
                    self._probe = self.recipe.leader(self.view)
                return self._probe(topic)
            except Exception:  # noqa: BLE001 - no answer now (a node down, an election under way): the
                return None    # probe reconnects itself next time (it is closed only at the end)

    def _close_probe(self) -> None:
        probe, self._probe = self._probe, None
        close = getattr(probe, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # noqa: BLE001
                pass

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        with self._probe_lock:
            self._close_probe()
        stop_members(self.members)


def stop_members(members: list) -> None:
    """Every member stopped: extras first, all signalled at once, then each waited for (briefly)."""
    order = [m for m in members if m.peer.role] + [m for m in reversed(members) if not m.peer.role]
    for m in order:
        m.terminate()
    deadline = time.monotonic() + STOP_GRACE_S
    for m in order:
        m.stop(timeout_s=max(0.1, deadline - time.monotonic()))


# -- launch ----------------------------------------------------------------------------------------
def launch(cfg: RunConfig, run_id: str, run_dir: str, nodes: list[Node] | None = None,
           where: str = "local") -> ClusterHandle:
    """Start the run's broker as a cluster of ``cfg.broker_nodes`` nodes (see the module docstring)."""
    spec, impl, recipe = recipe_for(cfg)
    if impl.check is not None:
        impl.check(cfg)
    if cfg.broker_cpus:
        parse_cpus(cfg.broker_cpus)
    n = cfg.broker_nodes
    placed = list(nodes) if nodes else [LOCAL]
    node_of = [placed[i % len(placed)] for i in range(n)]
    if where == "docker":
        from testbed.launchers.cluster_docker import make_members
        members, view = make_members(cfg, run_id, run_dir, recipe, plan_peers(recipe, [LOCAL] * n), _say)
    else:
        members, view = _local_members(cfg, run_id, run_dir, recipe, node_of)
    timeout = recipe.node.start_timeout_s * (1 + (n - 1) / 2)
    label = impl.impl_label()
    try:
        for m in members:
            m.make_plan(view, cfg, run_id)
        for m in members:
            m.prepare()
        node_members = [m for m in members if not m.peer.role]
        before = {x.role for x in recipe.extras if x.before}
        first_extras = [m for m in members if m.peer.role in before]
        for m in first_extras:  # what the nodes need first (a port mapper)
            m.start()
        for m in first_extras:
            m.wait_ready(spec, "", where, m.recipe.start_timeout_s)
        waves = [node_members] if recipe.start == "together" else [node_members[:1], node_members[1:]]
        answer = ""
        for wave in waves:
            for m in wave:
                m.start()
            for m in wave:
                got = m.wait_ready(spec, label, where, timeout)
                answer = answer or got
        extras = [m for m in members if m.peer.role and m.peer.role not in before]
        for m in extras:
            m.start()
        for m in extras:
            m.wait_ready(spec, "", where, m.recipe.start_timeout_s)
        formed = recipe.form(view, _say) if recipe.form is not None else {}
        first = node_members[0]
        log_text = first.read_log() if hasattr(first, "read_log") else first.node.read_text(first.log_path)
        label = impl_string(impl, recipe.node, answer, first.binaries.get(recipe.node.server.name, ""),
                            log_text if recipe.node.version else "")
    except FileNotFoundError as exc:
        stop_members(members)
        raise BrokerError(f"{exc.filename} could not be started: {recipe.node.server.install_hint()}") from None
    except BaseException:
        stop_members(members)
        raise
    url = recipe.url(view)
    extra = {"nodes": n, "replication": recipe.replication(n, cfg), "pid": node_members[0].pid,
             "members": [m.facts() for m in members], **(formed or {})}
    options = {**{k: str(v) for k, v in recipe.options(n, cfg).items()}, **cfg.broker_opt}  # as config sets them
    ep = Endpoint(cfg.broker, url, options, label, where, extra)
    return ClusterHandle(ep, members, view, recipe, spec, impl, where, timeout)


def plan_peers(recipe, node_of: list[Node]) -> list[tuple[Peer, object, Node]]:
    """Every member (nodes, then extras) with its ports picked free on its node: distinct among the
    members on one address, the recipe's ``shared_ports`` one number for all. (peer, its recipe, node)."""
    n = len(node_of)
    prefix = f"tb{secrets.token_hex(3)}"
    taken: dict[str, set] = {}
    shared: dict[str, int] = {}
    hosts = list(dict.fromkeys(node.address for node in node_of))
    first_of = [next(node for node in node_of if node.address == h) for h in hosts]
    roles = [("", recipe.node, node_of)]
    for x in recipe.extras:
        roles.append((x.role, x.recipe, first_of if x.per_host else [node_of[i % n] for i in range(x.count(n))]))
    out = []
    for role, member_recipe, on in roles:
        for i, node in enumerate(on):
            own = tuple(p for p in member_recipe.ports if p not in recipe.shared_ports)
            ports = _distinct_ports(node, own, taken.setdefault(node.address, set()))
            for name in member_recipe.ports:
                if name in recipe.shared_ports:
                    if name not in shared:
                        shared[name] = _distinct_ports(node, (name,), taken[node.address])[name]
                    ports[name] = shared[name]
            ports = {name: ports[name] for name in member_recipe.ports}
            name = f"{prefix}-{role}-{i}" if role else f"{prefix}-{i}"
            out.append((Peer(role, i, node.address, ports, name, node.name), member_recipe, node))
    return out


def _local_members(cfg: RunConfig, run_id: str, run_dir: str, recipe, node_of: list[Node]):
    """Members with their ports picked on their nodes, binaries found, folders made."""
    members: list[Member] = []
    try:
        for peer, member_recipe, node in plan_peers(recipe, node_of):
            m = Member(peer, member_recipe, node, run_dir)
            m.resolve()
            members.append(m)
        for m in members:
            m.make_dir(cfg.broker)
    except BaseException:
        for m in members:
            if m.tmp:
                m.node.remove_dir(m.tmp)
        raise
    view = ClusterView([m.peer for m in members], secrets.token_hex(16), cfg, run_id, "local", _say)
    return members, view


def _distinct_ports(node: Node, names: tuple, taken: set) -> dict:
    """Free ports on ``node`` for ``names``, none already given to another member on the same address."""
    while True:
        ports = node.free_ports(names) if names else {}
        if not set(ports.values()) & taken:
            taken.update(ports.values())
            return ports
