"""What a broker is, as data: the spec every broker folder declares in ``brokers/<name>/spec.py``.

The launchers, the infra CLI, the docs tables and the conformance suite read only this; none of them
names a broker. One recipe starts a broker both ways: the local launcher runs a ``Plan`` as private
processes in a temporary folder, the docker launcher runs the same ``Plan`` (same argv, environment,
config files, steps) inside a container built from ``Image``.

    BrokerSpec      name, client package (pip extra), capabilities, implementations, test settings
      Capabilities  needs_server, in_process, redelivers, competing_consumers, reports_backlog,
                    dispatch (shared | round_robin | partition), delivery (at-most-once, at-least-once),
                    window_option (an option that turns shared dispatch into dealing: ``dispatch_for``),
                    ack_modes and ack_default (how stage B's acks can be sent: ``--ack``)
      Embedded      transports with no server: the URL a run gets, the --broker-url schemes it takes
      Impl          one implementation of the protocol (kafka: apache, tansu): label, pinned version,
                    LocalRecipe, Image, capabilities where they differ
        LocalRecipe   server binary (and helpers such as a private epmd), named free ports, URL,
                      plan(ctx) -> Plan, readiness probe, version probe, start/stop timeouts
        Image         official and local image names, how the local one is built
        ClusterRecipe --broker-nodes N: one node's LocalRecipe (its plan given a MemberContext: its own
                      Context plus the ClusterView, every Peer's address, ports and name), the URL
                      clients get, Extras beside the nodes, the forming step, the leader probe, the
                      adapter options a cluster sets and what replication means (testbed/launchers/
                      cluster.py carries it out; brokers/<name>/cluster.py holds each broker's)
      Testing       settings the conformance suite runs with (short timeouts, a dead URL, ...)
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from testbed.errors import ConfigError

DISPATCH = ("shared", "round_robin", "partition")
DELIVERY = ("at-most-once", "at-least-once")
#: how stage B's acknowledgements can be sent (``--ack``; docs/brokers.md "Ack modes" says what each risks):
#: one per message, each waited for; one per batch, waited for; or sent without waiting for anything
ACK_MODES = ("per-message", "per-batch", "async")
#: what run.json records as the ack mode of a broker that has no acknowledgements
NO_ACK = "none"


@dataclass(frozen=True)
class Capabilities:
    needs_server: bool = True
    in_process: bool = False
    redelivers: bool = False
    competing_consumers: bool = True
    reports_backlog: bool = False
    dispatch: str = "shared"
    delivery: tuple[str, ...] = ("at-most-once",)
    #: an adapter option holding each consumer's window of unacknowledged deliveries (a prefetch count):
    #: with a window above 1 the broker sends each consumer messages in turn while its window has room,
    #: so several consumers are dealt work (round_robin) instead of taking it from one shared queue
    window_option: str = ""
    #: the ``--ack`` modes the adapter implements (ACK_MODES); () = no acknowledgements at all
    ack_modes: tuple[str, ...] = ()
    #: the mode a run gets without ``--ack``: the safest the broker has ("" where it has none)
    ack_default: str = ""

    def __post_init__(self):
        if self.dispatch not in DISPATCH:
            raise ValueError(f"dispatch {self.dispatch!r}: use one of {', '.join(DISPATCH)}")
        if not set(self.delivery) <= set(DELIVERY):
            raise ValueError(f"delivery {self.delivery!r}: use {', '.join(DELIVERY)}")
        if not set(self.ack_modes) <= set(ACK_MODES):
            raise ValueError(f"ack_modes {self.ack_modes!r}: use {', '.join(ACK_MODES)}")
        if not (self.ack_default in self.ack_modes if self.ack_modes else not self.ack_default):
            raise ValueError(f"ack_default {self.ack_default!r}: one of ack_modes {self.ack_modes!r} "
                             "(\"\" when there are none)")


@dataclass(frozen=True)
class Binary:
    """A program a recipe starts, and where it comes from (the error when it is missing says so)."""

    name: str                 # short name: the log file is broker-<name>.log
    path: str                 # on PATH, or an absolute path, on this machine
    package: str              # what provides it (a Debian package name, or a PyPI wheel)
    hint: str = ""            # how to install it; default: apt-get install <package>
    container_path: str = ""  # the same program inside the image (default: basename of path)
    find: Callable[[], str] | None = None  # where a lookup on PATH is not how it is found

    def install_hint(self) -> str:
        return self.hint or (f"install the Debian package {self.package!r} (apt-get install {self.package}) "
                             "or run `make setup`")

    def in_container(self) -> str:
        return self.container_path or self.path.rsplit("/", 1)[-1]


@dataclass
class Context:
    """What a recipe's ``plan`` is given: where it runs and what was picked for it."""

    where: str                 # "local" or "docker"
    dir: str                   # private folder (local: a temporary folder; docker: one in the container)
    ports: dict[str, int]      # the recipe's named ports, all free on 127.0.0.1
    binaries: dict[str, str]   # Binary.name -> the program to run (resolved here, or in the image)
    cfg: object                # the RunConfig (heap, ...)
    run_id: str = ""
    log: Callable[[str], None] = print  # progress lines (stderr)
    #: named port -> the port clients must be told instead (a proxy in front of the broker): a broker
    #: that advertises its own address (metadata after bootstrap) advertises this one
    advertised: dict[str, int] = field(default_factory=dict)
    #: the address the broker binds and clients reach it at: 127.0.0.1, or a (simulated) host's own
    #: address when the broker is placed on a host (testbed/hosts/); recipes never write a literal address
    host: str = "127.0.0.1"

    @property
    def port(self) -> int:
        return next(iter(self.ports.values()))


@dataclass
class Step:
    """A command run to completion before the server starts (e.g. formatting its storage)."""

    name: str
    argv: list[str]
    timeout_s: float = 60.0


@dataclass
class Helper:
    """A process started before the server and kept for its lifetime (e.g. a private epmd)."""

    name: str
    argv: list[str]
    ready_argv: list[str]       # exits 0 once the helper serves (run until it does)
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Plan:
    """One start of a broker: the same for a local process and a container."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)   # path relative to Context.dir -> text
    dirs: tuple[str, ...] = ()                            # folders under Context.dir to create
    steps: list[Step] = field(default_factory=list)
    helpers: list[Helper] = field(default_factory=list)
    facts: dict = field(default_factory=dict)             # recorded in run.json's broker.launch
    on_exit: Callable[[int | None], None] | None = None   # local: after the server exited (its code)


@dataclass(frozen=True)
class LocalRecipe:
    server: Binary
    plan: Callable[[Context], Plan]
    url: str                                # e.g. "redis://{host}:{port}/0" (named ports, the bind address)
    ports: tuple[str, ...] = ("port",)      # the first is the one clients use
    helpers: tuple[Binary, ...] = ()
    #: extra readiness round trip (url, impl) -> callable returning the impl string, with close();
    #: None: the adapter's own (connect + server_impl)
    probe: Callable | None = None
    #: (binary or "", log text) -> the version the server says it is, or "" (then the pinned one)
    version: Callable[[str, str], str] | None = None
    #: progress -> what it fetched: one-time downloads the recipe needs (`python -m testbed.brokers install`)
    install: Callable[[Callable[[str], None]], str] | None = None
    start_timeout_s: float = 30.0
    stop_grace_s: float = 10.0


@dataclass(frozen=True)
class Image:
    """The image a container of this implementation runs, and how the local one is built."""

    key: str                  # images table key (what `python -m testbed.brokers images` lists)
    official: str             # pinned official image
    local: str                # ours, built from Debian packages on the shared base (or FROM scratch)
    upstream: str             # the version both run
    packages: tuple[str, ...] = ()   # Debian packages of the local image
    env_var: str = ""         # compose/ reads the image from this variable (default: the official one)
    package_version: str = ""  # what apt must install (default: upstream)
    post: str = ""            # shell appended to the install RUN line
    #: fetch -> (Dockerfile lines after the install, {context path: bytes or a file to copy})
    build: Callable[[bool], tuple[str, dict]] | None = None
    scratch: bool = False     # FROM scratch (one static binary) instead of the Debian base


@dataclass(frozen=True)
class Testing:
    """How the conformance suite runs this broker (shorter timeouts than a real run wants)."""

    options: dict = field(default_factory=dict)   # --broker-opt values for every adapter the suite makes
    redelivery_timeout_s: float = 30.0
    dead_url: str = ""                             # "{port}": a free port where nothing listens
    #: url -> the same url with a wrong password, where the broker has credentials
    wrong_credentials: Callable[[str], str] | None = None
    known_gaps: dict = field(default_factory=dict)  # test name -> reason (strict xfail)


@dataclass(frozen=True)
class Impl:
    name: str = ""                  # --broker-impl value ("" where a broker has one implementation)
    label: str = ""                 # broker_impl, "{version}" filled in; "" = what the server says
    version: str = ""               # the pinned version
    local: LocalRecipe | None = None
    image: Image | None = None
    capabilities: Capabilities | None = None   # where this implementation differs from the broker
    testing: Testing | None = None
    check: Callable[[object], None] | None = None  # cfg -> raise ConfigError before anything starts
    #: run flags (RunConfig fields) that only some implementations use and this one's recipe reads, e.g.
    #: ("broker_heap",); testbed/broker_flags.py warns that such a flag is ignored where it is not listed
    flags: tuple[str, ...] = ()
    #: how --broker-nodes N > 1 builds a replicated cluster of this implementation (ClusterRecipe below);
    #: None: refused, with ``no_cluster`` as the reason
    cluster: ClusterRecipe | None = None
    no_cluster: str = ""

    def impl_label(self, version: str = "") -> str:
        return self.label.format(version=version or self.version) if self.label else ""


# -- clusters (--broker-nodes N): testbed/launchers/cluster.py carries these out -------------------
@dataclass(frozen=True)
class Peer:
    """One member of a cluster as the others, the cluster's URL and its probes see it (fixed before any
    member starts: every member's ports are picked on its node first)."""

    role: str                  # "" = one of the broker's nodes; else the Extra's role ("sentinel", ...)
    index: int                 # within its role, from 0
    host: str                  # the address it binds and is reached at (its node's)
    ports: dict                # its recipe's named ports
    name: str                  # unique within the cluster (a node name, a server name)
    node: str = ""             # the Node it runs on ("" = this machine; a host's name when placed)


@dataclass
class ClusterView:
    """Every member of one cluster, before any starts: what each member's plan, the cluster's URL, its
    forming step and its leader probe are given."""

    peers: list                # Peer, the nodes first (index order), then the extras
    secret: str                # shared by the members of this cluster only (an Erlang cookie, an id)
    cfg: object                # the RunConfig
    run_id: str = ""
    where: str = "local"       # "local" (processes on Nodes) or "docker" (containers)
    log: Callable[[str], None] = print

    @property
    def nodes(self) -> list:
        return [p for p in self.peers if not p.role]

    @property
    def size(self) -> int:
        return len(self.nodes)

    def role(self, name: str) -> list:
        return [p for p in self.peers if p.role == name]

    def node_index(self, host: str, port: int, port_name: str = "") -> int | None:
        """The node that binds ``host:port`` (its first named port, or ``port_name``), or None."""
        for p in self.nodes:
            if p.host == host and (p.ports.get(port_name) if port_name else next(iter(p.ports.values()))) == port:
                return p.index
        return None


@dataclass
class MemberContext(Context):
    """A cluster member's ``Context``: its own folder, ports and address, and the whole cluster."""

    member: Peer | None = None
    cluster: ClusterView | None = None


@dataclass(frozen=True)
class Extra:
    """Processes a cluster runs beside its nodes (Redis: the Sentinels), started after the nodes answer
    (``before``: before the nodes start, e.g. a port mapper they register with); extra ``i`` runs on node
    ``i mod N``'s host, or (``per_host``) one on each host that has nodes, on its first node."""

    role: str
    recipe: LocalRecipe        # its plan is given a MemberContext; url/probe say when it answers
    count: Callable[[int], int] = lambda nodes: 1
    before: bool = False
    per_host: bool = False


@dataclass(frozen=True)
class ClusterRecipe:
    """How ``--broker-nodes N`` (N > 1) builds a replicated cluster: N nodes from ``node`` (one per Node,
    so a later placement puts each on its own host), what clients are given, and what the testbed asks
    the broker itself (the leader of the run's partition / queue / stream)."""

    node: LocalRecipe          # one broker node: its plan is given a MemberContext (every peer known)
    url: Callable[[ClusterView], str]                  # the endpoint clients get (every node, or discovery)
    #: (nodes, cfg) -> the summary's ``replication`` column: what replication means for this broker here
    replication: Callable[[int, object], str]
    #: (nodes, cfg) -> adapter options a cluster of this size sets (an explicit --broker-opt wins)
    options: Callable[[int, object], dict] = lambda nodes, cfg: {}
    extras: tuple[Extra, ...] = ()
    #: named ports that every member has the same number for (picked once, free on node 0's host):
    #: a port mapper every node of a host shares (the members find each other through it)
    shared_ports: tuple[str, ...] = ()
    #: "together": every node starts at once (a quorum must be up before any node answers);
    #: "first": node 0 first, then the others together once it answers (they join it)
    start: str = "together"
    #: after every member answers: (view, log) -> facts for run.json, once the cluster is whole (all
    #: nodes joined, a leader elected); raises BrokerError with one line if it does not become whole
    form: Callable[[ClusterView, Callable[[str], None]], dict] | None = None
    #: view -> a probe: ``probe(topic) -> index of the node leading the run's partition / queue / stream
    #: (Redis: the primary)``, or None when none does now; ``probe.close()``. Asked through the broker's
    #: own API, from the orchestrator (once a second, and when a leader fault fires)
    leader: Callable[[ClusterView], object] | None = None
    form_timeout_s: float = 60.0


@dataclass(frozen=True)
class Embedded:
    """A transport with no server process: what a run's endpoint is."""

    url: str                          # "{run_id}" and "{port}" (a free port) are filled in
    impl: Callable[[], str]
    url_schemes: tuple[str, ...] = ()  # --broker-url taken with these schemes (the launcher is then external)
    #: stage A binds the endpoint: each camera stream (--streams) binds one of its own, so the run's URL
    #: lists one per stream, comma-separated (stream s binds the s-th; every consumer connects to all)
    per_stream: bool = False


@dataclass(frozen=True)
class BrokerSpec:
    name: str
    summary: str
    capabilities: Capabilities
    client: str = ""                 # PyPI package of the client library
    extra: str = ""                  # pip extra that installs it (pip install -e .[extra])
    url_form: str = ""               # what --broker-url looks like
    #: --broker-url schemes the adapter takes ("redis://", ...); () = the ones url_form names
    url_schemes: tuple[str, ...] = ()
    impls: tuple[Impl, ...] = ()
    embedded: Embedded | None = None
    testing: Testing = field(default_factory=Testing)
    #: --broker-opt table; None: the adapter's own ``OPTIONS``
    options: dict | None = None
    #: --delivery mode -> the --broker-opt values it sets (an explicit --broker-opt wins); server-side
    #: settings a mode needs are in the recipe's plan (``ctx.cfg.delivery``)
    delivery_options: dict = field(default_factory=dict)

    @property
    def needs_server(self) -> bool:
        return self.capabilities.needs_server

    def schemes(self) -> tuple[str, ...]:
        """The --broker-url schemes this broker takes: an embedded transport's, else ``url_schemes`` or
        those ``url_form`` names (() = any)."""
        if self.embedded is not None:
            return self.embedded.url_schemes
        return self.url_schemes or tuple(dict.fromkeys(m.lower() + "://" for m in
                                                       re.findall(r"([A-Za-z][A-Za-z0-9+.-]*)://", self.url_form)))

    def impl_names(self) -> list[str]:
        return [i.name for i in self.impls if i.name]

    def impl(self, name: str = "") -> Impl:
        """The implementation ``--broker-impl name`` picks (the first one by default)."""
        if not self.impls:
            raise ConfigError(f"broker {self.name!r} needs no server: there is nothing to start")
        name = (name or "").lower()
        if not name or len(self.impls) == 1 and not self.impls[0].name:
            return self.impls[0]
        for impl in self.impls:
            if impl.name == name:
                return impl
        raise ConfigError(f"--broker-impl {name!r} is not allowed for {self.name}: use one of "
                          f"{', '.join(self.impl_names())}")

    def caps(self, impl: str = "") -> Capabilities:
        if self.impls:
            own = self.impl(impl).capabilities
            if own is not None:
                return own
        return self.capabilities

    def dispatch_for(self, impl: str = "", options: dict | None = None) -> str:
        """How this broker hands messages to several consumers with these adapter options: the declared
        ``dispatch``, except that a ``window_option`` above 1 (its adapter default when not given) deals."""
        caps = self.caps(impl)
        if caps.dispatch != "shared" or not caps.window_option:
            return caps.dispatch
        opts = options or {}
        if caps.window_option in opts:
            raw = opts[caps.window_option]
        else:
            import brokers  # the adapter's default; imported here: brokers/ imports this module
            raw = brokers.get(self.name).OPTIONS[caps.window_option].default
        try:
            window = int(raw)
        except (TypeError, ValueError):
            return caps.dispatch
        return "round_robin" if window != 1 else "shared"

    def testing_for(self, impl: str = "") -> Testing:
        if self.impls:
            own = self.impl(impl).testing
            if own is not None:
                return own
        return self.testing


def cluster_refusal(spec: BrokerSpec, impl: str = "") -> str:
    """Why ``spec`` (implementation ``impl``) cannot run as a cluster, or "" when it can."""
    if not spec.needs_server:
        return f"{spec.name} has no broker to replicate (--broker-nodes above 1 needs a broker with a server)"
    chosen = spec.impl(impl)
    if chosen.cluster is None:
        which = f"{spec.name} ({chosen.name})" if chosen.name else spec.name
        return f"{which} cannot run as a cluster: {chosen.no_cluster or 'its spec has no cluster recipe'}"
    return ""


def with_name(spec: BrokerSpec, name: str) -> BrokerSpec:
    return replace(spec, name=name)

