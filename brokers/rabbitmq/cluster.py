"""RabbitMQ as a cluster (``--broker-nodes N``): N nodes joined into one cluster, the run's queue a quorum
queue with N members.

Each node is a private node as in brokers/rabbitmq/spec.py, with long node names on its own address
(``<cluster>-<i>@HOST``, ``RABBITMQ_USE_LONGNAME``) so that nodes on different hosts can name each other,
and every node of the cluster shares:
- one Erlang cookie, the cluster's secret (``-setcookie``: the nodes and our query node only);
- one port-mapper port: a private ``epmd`` on each host (a member of its own, the extra ``epmd``,
  started before the nodes, in the foreground; ``-start_epmd false`` on every node): Erlang
  distribution finds a node through the epmd of its host at the same port number. Nothing here ever runs ``rabbitmqctl``: a CLI started without
  ``ERL_EPMD_PORT`` would start a default epmd daemon that outlives everything.
Node 0 starts first; the others then start together and join it on their first boot (classic-config
peer discovery naming node 0; no ``stop_app`` / ``join_cluster`` round). The run's queue is a quorum
queue (``x-queue-type: quorum``, ``x-quorum-initial-group-size`` N: adapter options ``queue_type`` and
``quorum_size``), durable, persistent messages with publisher confirms in at-least-once: a confirm means
a majority of its members (Raft) have the message.

The queue's leader is asked of the cluster itself through a small hidden Erlang node (the extra
``query``: ``erl -hidden`` with the cookie, serving one line per request on a TCP port): ``leader QUEUE``
-> the Raft leader of the queue (``ra:members`` on the first node that answers), ``running`` -> the
nodes running. Formed: every node runs in one cluster.
"""
from __future__ import annotations

import functools
import os
import socket
import time

from brokers.spec import Binary, ClusterRecipe, ClusterView, Extra, LocalRecipe, MemberContext, Plan
from testbed.errors import BrokerError

EPMD = Binary("epmd", "epmd", "erlang-base")
ERL = Binary("erl", "erl", "erlang-base")


def node_name(view: ClusterView, peer) -> str:
    return f"{peer.name}@{peer.host}"


def _erl_ip(host: str) -> str:
    return "{" + host.replace(".", ",") + "}"


def node_plan(ctx: MemberContext, config: str = "") -> Plan:
    view, me = ctx.cluster, ctx.member
    d = ctx.dir
    amqp, dist, epmd = ctx.ports["amqp"], ctx.ports["dist"], ctx.ports["epmd"]
    name = node_name(view, me)
    path = lambda rel: os.path.join(d, rel)  # noqa: E731
    conf = config.format(host=ctx.host, port=amqp)
    if me.index:  # join node 0 on the first boot (a restart finds its cluster in its own data)
        conf += ("cluster_formation.peer_discovery_backend = classic_config\n"
                 f"cluster_formation.classic_config.nodes.1 = {node_name(view, view.nodes[0])}\n"
                 "cluster_formation.randomized_startup_delay_range.min = 0\n"
                 "cluster_formation.randomized_startup_delay_range.max = 0\n")
    env = {
        "HOME": d, "ERL_EPMD_PORT": str(epmd), "ERL_EPMD_ADDRESS": ctx.host,
        "RABBITMQ_NODENAME": name, "RABBITMQ_USE_LONGNAME": "true",
        "RABBITMQ_NODE_IP_ADDRESS": ctx.host, "RABBITMQ_NODE_PORT": str(amqp), "RABBITMQ_DIST_PORT": str(dist),
        "RABBITMQ_MNESIA_BASE": path("mnesia"), "RABBITMQ_LOG_BASE": path("log"), "RABBITMQ_LOGS": "-",
        "RABBITMQ_CONFIG_FILE": path("rabbitmq.conf"), "RABBITMQ_ADVANCED_CONFIG_FILE": path("advanced.config"),
        "RABBITMQ_CONF_ENV_FILE": path("rabbitmq-env.conf"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": path("enabled_plugins"), "RABBITMQ_PID_FILE": path("rabbitmq.pid"),
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": f"-start_epmd false -setcookie {view.secret} "
                                              f"-kernel inet_dist_use_interface {_erl_ip(ctx.host)}",
    }
    return Plan(argv=[ctx.binaries["rabbitmq"]], env=env, dirs=("mnesia", "log"),
                files={"rabbitmq.conf": conf, "enabled_plugins": "[].\n", "rabbitmq-env.conf": ""},
                facts={"node": name, "dist_port": dist, "epmd_port": epmd})


def epmd_plan(ctx: MemberContext) -> Plan:
    """The host's port mapper, in the foreground, at the cluster's one port number (a member of its own,
    so that a node killed, or its container, leaves it serving the others)."""
    return Plan(argv=[ctx.binaries["epmd"], "-port", str(ctx.ports["epmd"]), "-address", ctx.host],
                env={"HOME": ctx.dir})


def _tcp_probe(url_: str, impl: str):
    host, port = url_.split("://", 1)[1].rsplit(":", 1)

    def probe() -> str:
        socket.create_connection((host, int(port)), 1.0).close()
        return "epmd"
    return probe


#: the query node's program (erl -eval): one request per line on a TCP port, one answer line each
QUERY = r"""
Nodes = [%(nodes)s],
{ok, LS} = gen_tcp:listen(%(port)d, [binary, {packet, line}, {active, false}, {reuseaddr, true}, {ip, %(ip)s}]),
Ask = fun(N, Q) ->
  case rpc:call(N, rabbit_amqqueue, lookup, [{resource, <<"/">>, queue, Q}], 1000) of
    {ok, AQ} ->
      case rpc:call(N, amqqueue, get_pid, [AQ], 1000) of
        {RaName, _} when is_atom(RaName) ->
          case rpc:call(N, ra, members, [{RaName, N}, 800], 1500) of
            {ok, _, {_, Leader}} -> {ok, Leader};
            Other -> {error, Other}
          end;
        Other -> {error, Other}
      end;
    Other -> {error, Other}
  end
end,
Leader = fun F([], _, Last) -> io_lib:format("none ~0p~n", [Last]);
             F([N | Rest], Q, _) -> case Ask(N, Q) of {ok, L} -> io_lib:format("leader ~s~n", [L]);
                                                       E -> F(Rest, Q, E) end end,
Running = fun R([]) -> "running 0\n";
              R([N | Rest]) -> case rpc:call(N, rabbit_nodes, all_running, [], 1000) of
                                 L when is_list(L) -> io_lib:format("running ~b~n", [length(L)]);
                                 _ -> R(Rest) end end,
Handle = fun(Line) ->
  case string:lexemes(string:trim(binary_to_list(Line)), " ") of
    ["ping"] -> "pong\n";
    ["leader", Q] -> Leader(Nodes, list_to_binary(Q), none);
    ["running"] -> Running(Nodes);
    _ -> "error\n"
  end
end,
Serve = fun S(Sock) ->
  case gen_tcp:recv(Sock, 0) of
    {ok, Line} -> gen_tcp:send(Sock, Handle(Line)), S(Sock);
    _ -> gen_tcp:close(Sock)
  end
end,
Accept = fun A() ->
  case gen_tcp:accept(LS) of
    {ok, Sock} ->
      Pid = spawn(fun() -> receive go -> Serve(Sock) end end),
      ok = gen_tcp:controlling_process(Sock, Pid),
      Pid ! go,
      A();
    _ -> A()
  end
end,
Accept().
"""


def query_plan(ctx: MemberContext) -> Plan:
    view = ctx.cluster
    nodes = ",".join(f"'{node_name(view, p)}'" for p in view.nodes)
    program = QUERY % {"nodes": nodes, "port": ctx.ports["port"], "ip": _erl_ip(ctx.host)}
    argv = [ctx.binaries["erl"], "-name", f"{ctx.member.name}@{ctx.host}", "-hidden", "-noshell", "-noinput",
            "-setcookie", view.secret, "-start_epmd", "false", "-kernel", "inet_dist_use_interface",
            _erl_ip(ctx.host), "-eval", program]
    return Plan(argv=argv, env={"HOME": ctx.dir, "ERL_EPMD_PORT": str(ctx.ports["epmd"]),
                                "ERL_EPMD_ADDRESS": ctx.host})


def url(view: ClusterView) -> str:
    """Every node's AMQP URL, comma-separated (the adapter connects to the first that answers)."""
    return ",".join(f"amqp://guest:guest@{p.host}:{p.ports['amqp']}/%2F" for p in view.nodes)


class Query:
    """A line-per-request client of the query node."""

    def __init__(self, host: str, port: int, timeout_s: float = 5.0):
        self.addr, self.timeout_s = (host, port), timeout_s
        self.sock = None
        self.buf = b""

    def ask(self, line: str) -> str:
        try:
            if self.sock is None:
                self.sock = socket.create_connection(self.addr, self.timeout_s)
                self.sock.settimeout(self.timeout_s)
            self.sock.sendall(line.encode() + b"\n")
            while b"\n" not in self.buf:
                chunk = self.sock.recv(4096)
                if not chunk:
                    raise BrokerError("the query node closed the connection")
                self.buf += chunk
        except BaseException:
            self.close()
            raise
        answer, _, self.buf = self.buf.partition(b"\n")
        return answer.decode("utf-8", "replace").strip()

    def close(self) -> None:
        sock, self.sock, self.buf = self.sock, None, b""
        if sock is not None:
            sock.close()


def _query(view: ClusterView) -> Query:
    q = view.role("query")[0]
    return Query(q.host, q.ports["port"])


def _query_probe(url_: str, impl: str):
    host, port = url_.split("://", 1)[1].rsplit(":", 1)

    def probe() -> str:
        q = Query(host, int(port), 2.0)
        try:
            if q.ask("ping") != "pong":
                raise BrokerError("the query node does not answer")
        finally:
            q.close()
        return "erl"
    return probe


def form(view: ClusterView, log) -> dict:
    """Until every node runs in one cluster (as the first node that answers sees it)."""
    q = _query(view)
    deadline = time.monotonic() + 60.0
    last = ""
    try:
        while time.monotonic() < deadline:
            try:
                last = q.ask("running")
                if last == f"running {view.size}":
                    return {"formed": f"{view.size} nodes running in one cluster",
                            "node_names": [node_name(view, p) for p in view.nodes]}
            except Exception as exc:  # noqa: BLE001 - not yet
                last = " ".join(str(exc).split())
            time.sleep(0.25)
    finally:
        q.close()
    raise BrokerError(f"rabbitmq: the {view.size} nodes did not form one cluster within 60s ({last})")


class LeaderProbe:
    """``probe(queue)`` -> the index of the node whose Raft member leads the run's quorum queue."""

    def __init__(self, view: ClusterView):
        self.by_name = {node_name(view, p): p.index for p in view.nodes}
        self.q = _query(view)

    def __call__(self, topic: str) -> int | None:
        answer = self.q.ask(f"leader {topic}")
        if answer.startswith("leader "):
            return self.by_name.get(answer.split(" ", 1)[1])
        return None

    def close(self) -> None:
        self.q.close()


def cluster(server: Binary, start_timeout_s: float, config: str) -> ClusterRecipe:
    """The recipe; ``config`` is each node's rabbitmq.conf (the single node's: brokers/rabbitmq/spec.py)."""
    return ClusterRecipe(
        node=LocalRecipe(server=server, plan=functools.partial(node_plan, config=config), ports=("amqp", "dist", "epmd"),
                         url="amqp://guest:guest@{host}:{amqp}/%2F", start_timeout_s=start_timeout_s,
                         stop_grace_s=5.0),
        url=url,
        replication=lambda n, cfg: f"quorum queue, {n} members (Raft: a confirm means a majority has it)",
        options=lambda n, cfg: {"queue_type": "quorum", "quorum_size": str(n)},
        extras=(Extra("epmd", LocalRecipe(server=EPMD, plan=epmd_plan, ports=("epmd",), url="tcp://{host}:{epmd}",
                                          probe=_tcp_probe, start_timeout_s=10.0, stop_grace_s=1.0),
                      before=True, per_host=True),
                Extra("query", LocalRecipe(server=ERL, plan=query_plan, ports=("port", "epmd"),
                                           url="tcp://{host}:{port}", probe=_query_probe, start_timeout_s=30.0,
                                           stop_grace_s=1.0))),
        shared_ports=("epmd",), start="first", form=form, leader=LeaderProbe)
