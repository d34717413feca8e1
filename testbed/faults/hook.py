"""The fault schedule carried out on a running run: a ``RunHook`` (testbed/orchestration/execute.py).

``FaultHook(schedule, consumer_restart_s)`` turns each ``Event`` into an action when the run's clock
(from the start of the load) reaches it:

    broker    kill (SIGKILL / docker kill), restart (same ports and data, until it answers again),
              pause / resume (SIGSTOP / SIGCONT, docker pause / unpause): ``run.handle``
    consumer  kill / restart (``run.kill_replica`` / ``run.restart_replica``), pause / resume
              (SIGSTOP / SIGCONT of the replica's process)
    network   add-toxics / remove-toxics / reset on the run's private Toxiproxy (``NetworkFaults``),
              which stands between the stages and the broker only in runs with a network fault
    leader    one node of a cluster (``--broker-nodes``): the node leading the run's topic when the
              fault fires, asked of the broker (``run.handle.leader(topic)``), then kill / restart /
              pause / resume of that node (``kill_node`` ...); the node chosen is in the log and faults.csv
    node      node K of a cluster: the same actions on node K
    host      a simulated host (``partition-host``): its link down, then up (``run.partition_host`` /
              ``run.heal_host``); the broker is not sampled meanwhile (a call to a cut-off host would hang)

A broker restart can take seconds (a JVM), so broker actions run in order on a thread of their own
and the orchestrator keeps reading the stages' records meanwhile; the others are quick and run on the
orchestrator's tick. While a broker fault is on (and until the broker answers again) the orchestrator
does not sample the broker's own figures (a paused broker would hold the call).

``log`` holds one entry per action (planned and actual time, how long the action took, its error);
``windows()`` gives each fault's actual start and end on the run's clock (end: the broker answers
again, the replica was started again, the toxics were removed), which the recovery figures start from.
``on_stop`` undoes what is still in force: a paused broker or replica is resumed, toxics are removed,
the proxy is stopped.
"""
from __future__ import annotations

import dataclasses
import os
import queue
import signal
import threading
import time

from testbed.errors import BrokerError
from testbed.faults.schedule import BROKER, BROKER_TARGETS, CONSUMER, HOST, LEADER, NETWORK, NODE, Event, Fault, \
    Schedule, parse_all

JOIN_S = 120.0
LEADER_ASK_S = 3.0  # a leader fault asks the broker for the leader for at most this long


class FaultHook:
    """Carries out a fault schedule on one run (see the module docstring)."""

    def __init__(self, schedule: Schedule, consumer_restart_s: float = 1.0):
        self.schedule = schedule
        self.events = schedule.events(consumer_restart_s)
        self.next = 0
        self.t0 = 0
        self.log: list[dict] = []
        self.net = None                 # NetworkFaults, in runs with a network fault
        self.proxy_info: dict = {}
        self.broker_busy = 0            # broker actions queued or running (sampling is off meanwhile)
        self._paused_broker = False
        self._down = False              # killed, not restarted yet
        self._paused_replicas: set[int] = set()
        self._paused_nodes: set[int] = set()
        self._partitioned: set[str] = set()  # hosts whose link is down now
        #: where the broker is and where the proxy listens (a run over hosts: the broker's host address and
        #: the orchestrator's address on the hosts' network, so stages on hosts reach the proxy)
        self.broker_host = "127.0.0.1"
        self.listen_host = "127.0.0.1"
        self._node_of: dict[str, int] = {}  # fault -> the node its actions act on (a leader fault: chosen at its start)
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._log_path: str | None = None

    @classmethod
    def from_config(cls, cfg, run_dir: str = "") -> "FaultHook":
        hook = cls(parse_all(cfg.faults), cfg.consumer_restart_s)
        hook._log_path = os.path.join(run_dir, "toxiproxy.log") if run_dir else None
        return hook

    # -- RunHook ------------------------------------------------------------------------------------
    def ports_hook(self):
        """For the launcher (``PORTS_HOOK``): in a run with a network fault, the proxy is made as soon
        as the broker's ports are picked, so a broker that advertises its address (in metadata)
        advertises the proxy's and clients never bypass it."""
        if not self.schedule.needs_proxy:
            return None

        def make(ports: dict) -> dict:
            from testbed.faults.proxy import NetworkFaults
            name, port = next(iter(ports.items()))
            if self.net is None:
                self.net = NetworkFaults(f"{self.broker_host}:{port}", log_path=self._log_path,
                                         listen_host=self.listen_host)
            return {name: self.net.proxy.port}
        return make

    def on_broker(self, run, stack) -> None:
        """After the broker started, before the stages: the proxy in front of it (network faults)."""
        if not self.schedule.needs_proxy:
            return
        from testbed.faults.proxy import NetworkFaults
        ep = run.handle.endpoint
        if self.net is None:  # a launcher that did not ask (or a broker handle given by the caller)
            self.net = NetworkFaults(ep.url, log_path=os.path.join(run.state.run_dir, "toxiproxy.log"),
                                     listen_host=self.listen_host)
        stack.callback(self.net.stop)
        run.stage_endpoint = dataclasses.replace(ep, url=self.net.address_for(ep.url), extra=dict(ep.extra))
        self.proxy_info = self.net.info()

    def on_start(self, run) -> None:
        self.t0 = run.state.t0
        if any(KIND_TARGET(e) in BROKER_TARGETS for e in self.events):
            self._queue = queue.Queue()
            self._thread = threading.Thread(target=self._broker_worker, args=(run,), name="faults-broker",
                                            daemon=True)
            self._thread.start()

    def on_tick(self, run, now_ns: int) -> None:
        while self.next < len(self.events) and now_ns >= self.t0 + int(self.events[self.next].at_s * 1e9):
            ev = self.events[self.next]
            self.next += 1
            if KIND_TARGET(ev) in BROKER_TARGETS:
                with self._lock:
                    self.broker_busy += 1
                run.broker_faulted = True
                self._queue.put(ev)
            else:
                self._do(run, ev)

    def on_stop(self, run) -> None:
        if self._queue is not None:
            self._queue.put(None)
            self._thread.join(JOIN_S)
        if self._paused_broker:
            self._try(run.handle.resume)
        for k in list(self._paused_nodes):
            self._try(lambda k=k: run.handle.resume_node(k))
        for r in list(self._paused_replicas):
            self._try(lambda r=r: _signal_replica(run, r, signal.SIGCONT))
        for name in list(self._partitioned):
            self._try(lambda name=name: run.heal_host(name))
        if self.net is not None:
            for f in list(self.net._active):
                self._try(lambda f=f: self.net.end(f))

    # -- actions ------------------------------------------------------------------------------------
    def _broker_worker(self, run) -> None:
        while True:
            ev = self._queue.get()
            if ev is None:
                return
            try:
                self._do(run, ev)
            finally:
                with self._lock:
                    self.broker_busy -= 1
                    if self._broker_clear():
                        run.broker_faulted = False
                if ev.action == "restart" or (KIND_TARGET(ev) in (LEADER, NODE) and ev.action == "kill"
                                              and not getattr(run.admin, "reconnects_itself", False)):
                    # the admin client's node may be the one that went (a paused one comes back as it was:
                    # closing a client of a paused node would wait for its heartbeat to time out)
                    run.reconnect_admin = True

    def _broker_clear(self) -> bool:
        """No fault in force that would make a call to the broker hang."""
        return not (self.broker_busy or self._paused_broker or self._down or self._paused_nodes or self._partitioned)

    def _do(self, run, ev: Event) -> None:
        started = time.monotonic_ns()
        error = ""
        try:
            self._act(run, ev)
        except Exception as exc:  # noqa: BLE001 - recorded; the run goes on
            error = " ".join(str(exc).split())[:300] or type(exc).__name__
        done = time.monotonic_ns()
        entry = {"fault": str(ev.fault), "kind": ev.fault.kind, "target": ev.target,
                 "action": ev.action, "planned_s": round(ev.at_s, 3),
                 "at_s": round((started - self.t0) / 1e9, 3), "done_s": round((done - self.t0) / 1e9, 3),
                 "took_s": round((done - started) / 1e9, 3), "error": error}
        if str(ev.fault) in self._node_of:
            k = self._node_of[str(ev.fault)]
            entry["node"] = k
            name = getattr(run.handle, "node_name", None)
            if name is not None:
                entry["node_name"] = name(k)
        self.log.append(entry)

    def _act(self, run, ev: Event) -> None:
        kind, action, f = KIND_TARGET(ev), ev.action, ev.fault
        if kind == BROKER:
            h = run.handle
            if action == "kill":
                self._down = True
                h.kill()
            elif action == "restart":
                h.restart()
                self._down = False
            elif action == "pause":
                h.pause()
                self._paused_broker = True
            elif action == "resume":
                h.resume()
                self._paused_broker = False
        elif kind == CONSUMER:
            if action == "kill":
                run.kill_replica(f.replica)
            elif action == "restart":
                run.restart_replica(f.replica)
            elif action == "pause":
                _signal_replica(run, f.replica, signal.SIGSTOP)
                self._paused_replicas.add(f.replica)
            elif action == "resume":
                _signal_replica(run, f.replica, signal.SIGCONT)
                self._paused_replicas.discard(f.replica)
        elif kind == NETWORK:
            if action in ("add-toxics", "reset"):
                self.net.apply(f)
            else:
                self.net.end(f)
        elif kind == HOST:
            if action == "partition":
                self._partitioned.add(f.host)
                run.broker_faulted = True
                run.partition_host(f.host)
            else:
                run.heal_host(f.host)
                self._partitioned.discard(f.host)
                with self._lock:
                    if self._broker_clear():
                        run.broker_faulted = False
        elif kind in (LEADER, NODE):
            h = run.handle
            key = str(f)
            if key not in self._node_of:  # the fault's first action picks the node
                self._node_of[key] = f.node if kind == NODE else self._leader(run)
            k = self._node_of[key]
            if action == "kill":
                h.kill_node(k)
            elif action == "restart":
                h.restart_node(k)
            elif action == "pause":
                h.pause_node(k)
                self._paused_nodes.add(k)
            elif action == "resume":
                h.resume_node(k)
                self._paused_nodes.discard(k)

    @staticmethod
    def _leader(run) -> int:
        """The node leading the run's topic now, asked of the broker (retried briefly: an answer may be
        on its way after an earlier fault)."""
        ask = getattr(run.handle, "leader", None)
        if ask is None:
            raise BrokerError("this broker is not a cluster: there is no leader to find")
        deadline = time.monotonic() + LEADER_ASK_S
        while True:
            k = ask(run.topic)
            if k is not None:
                return k
            if time.monotonic() > deadline:
                raise BrokerError(f"no node leads {run.topic} now (the broker named none within {LEADER_ASK_S:g}s)")
            time.sleep(0.1)

    @staticmethod
    def _try(fn) -> None:
        try:
            fn()
        except Exception:  # noqa: BLE001 - undoing at the end: best effort
            pass

    # -- what happened ------------------------------------------------------------------------------
    def windows(self) -> list[dict]:
        """Per fault, in schedule order: its actual start and end (seconds on the run's clock) and
        whether every action worked."""
        out = []
        for f in self.schedule:
            acts = [e for e in self.log if e["fault"] == str(f)]
            if not acts:
                continue
            start = min(a["at_s"] for a in acts)
            end = max(a["done_s"] for a in acts)
            if f.kind == "kill-broker":
                end = None  # down until a restart-broker (a fault of its own)
            w = {"fault": str(f), "kind": f.kind, "target": f.target, "start_s": start, "end_s": end,
                 "error": "; ".join(a["error"] for a in acts if a["error"])}
            node = next((a["node"] for a in acts if "node" in a), None)
            if node is not None:  # which node of the cluster it acted on (a leader fault: the leader then)
                w["node"] = node
            out.append(w)
        return out

    def info(self) -> dict:
        """For run.json."""
        d = {"schedule": self.schedule.to_list(), "events": self.log}
        if self.proxy_info:
            d["proxy"] = self.proxy_info
        return d


def KIND_TARGET(ev: Event) -> str:  # noqa: N802 - reads as a constant lookup
    return ev.target.split(":")[0]


def _signal_replica(run, replica: int, sig: int) -> None:
    wk = run.stages.workers[run.stages.replica_slot(replica)]
    if wk.pid is not None and wk.is_alive():
        if hasattr(wk, "signal"):  # a replica on a host: its agent signals it there
            wk.signal(sig)
        else:
            os.kill(wk.pid, sig)


__all__ = ["FaultHook", "Fault"]
