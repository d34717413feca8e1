"""A run over hosts (``--hosts FILE`` or ``--ray-address HEAD:PORT``, with ``--place``): what
testbed/orchestration/execute.py asks of the hosts, in one object.

    hr = HostsRun.open(cfg, say)   # the cluster: hosts up from the same file, else up for this run (and
                                   # removed after), or an existing Ray cluster; --place checked against it
    hr.broker_nodes()              # a launchers Node per broker node (--place broker=..., dealt in turn)
    hr.stream_nodes()              # stage A's Node per camera stream (a transport stage A binds)
    hr.workers(cfg)                # stages.Worker per stage worker, each with its host (``on``)
    hr.check()                     # HostDown naming a host whose Ray node died
    hr.convert(frames, messages)   # every record onto the orchestrator's clock (timeline.py)
    hr.columns(messages)           # summary.csv: hosts, clock_uncertainty_us
    hr.info(messages)              # run.json "hosts": the file, the placement, per host its clock figures
    hr.close()

A role left unplaced stays on this machine, but binds the orchestrator's address on the hosts' network
(``cluster.address``), not 127.0.0.1: a host cannot reach this machine's loopback.

Uncertainty: a latency between two timestamps stamped on hosts X and Y (stage A's and the replica's)
is known within u(X) + u(Y), each host's stated clock uncertainty (0 for this machine's own clock).
``clock_uncertainty_us`` is the worst of that over the messages; ``negative_latencies`` counts the
latencies (transit, e2e) below zero by more than their own message's bound: reported, never clamped.
"""
from __future__ import annotations

import time

import numpy as np

from testbed.hosts import timeline
from testbed.hosts.errors import HostDown
from testbed.hosts.placement import ROLES, Placement
from testbed.hosts.spec import check_place, load
from testbed.launchers.nodes import LocalNode

#: seconds between clock samples while a run goes (one at the start of the load, one after the stop)
CLOCK_INTERVAL_S = 2.0
#: a stage error in a run over hosts: how long to look whether a host died first (it is then what is named)
HOST_SETTLE_S = 1.0


class HostsRun:
    def __init__(self, cfg, cluster):
        self.cfg, self.cluster = cfg, cluster
        self.placement = Placement.of(cfg.place, cluster)
        self._local = LocalNode(cluster.address)

    @classmethod
    def open(cls, cfg, say=None) -> "HostsRun":
        from testbed.hosts.cluster import connect, open_hosts
        cluster = open_hosts(load(cfg.hosts), say=say) if cfg.hosts else connect(cfg.ray_address)
        try:
            check_place(cfg.place, cluster.spec, "--place")
        except BaseException:
            cluster.close()
            raise
        return cls(cfg, cluster)

    @property
    def address(self) -> str:
        """The orchestrator's address on the hosts' network."""
        return self.cluster.address

    # -- where things run ---------------------------------------------------------------------------
    def node(self, host: str | None):
        """The launchers Node of ``host`` (its agent), or this machine bound to ``address`` (None)."""
        return self.cluster.node(host) if host else self._local

    def broker_nodes(self) -> list:
        n = max(1, self.cfg.broker_nodes)
        return [self.node(self.placement.broker_host(i)) for i in range(n)]

    def broker_address(self) -> str:
        return self.node(self.placement.broker_host(0)).address

    def stream_nodes(self) -> list:
        return [self.node(self.placement.stage_a_host(s)) for s in range(self.cfg.streams)]

    def workers(self, cfg) -> list:
        """Every stage worker in slot order (stages.plan_workers's layout), each on its host."""
        from testbed.load import closed_window
        from testbed.orchestration.stages import Worker
        closed = bool(closed_window(cfg.arrival))
        out = []
        for s in range(cfg.streams):
            h = self.placement.stage_a_host(s)
            node = self.node(h)
            port = node.free_ports(("done",))["done"] if closed else 0
            out.append(Worker(s, "producer", stream=s, host=node.address, listen_port=port, on=h or ""))
        for r in range(cfg.replicas):
            h = self.placement.replica_host(r)
            out.append(Worker(cfg.streams + r, "consumer", replica=r, host=self.node(h).address, on=h or ""))
        return out

    # -- while it runs ------------------------------------------------------------------------------
    def check(self, settle_s: float = 0.0) -> None:
        """``HostDown`` naming the first host whose Ray node is gone; with ``settle_s``, keep looking that
        long (a stage that lost its broker may say so before Ray has noticed the host is gone)."""
        deadline = time.monotonic() + settle_s
        while True:
            self.cluster.check()
            if time.monotonic() >= deadline:
                return
            time.sleep(0.1)

    def start_clocks(self) -> None:
        self.cluster.start_clocks(CLOCK_INTERVAL_S)

    def stop_clocks(self) -> None:
        self.cluster.stop_clocks()

    def partition(self, host: str) -> None:
        self.cluster.partition(host)

    def heal(self, host: str) -> None:
        self.cluster.heal(host)

    def close(self) -> None:
        self.cluster.close()

    # -- records ------------------------------------------------------------------------------------
    def _a_clocks(self):
        return self.placement.a_clocks(self.cfg.streams)

    def convert(self, frames: np.ndarray, messages: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frame and message records with every timestamp on the orchestrator's clock."""
        a = self._a_clocks()
        return (timeline.convert_frames(frames, a),
                timeline.convert_messages(messages, a, self.placement.b_clocks(self.cfg.replicas)))

    def convert_done(self, done: dict, per_stream: dict) -> dict:
        """Stage A's done record with its ``ack_bins`` (10 ms bins of stage A's clock) on ours, each
        stream's by its own host's clock (``per_stream``: stream -> that stream's done record)."""
        if not done or done.get("ack_bins") is None:
            return done
        from testbed.analysis.availability import ACK_BIN_NS
        bins = set()
        for s, d in (per_stream or {0: done}).items():
            if d.get("ack_bins") is None:
                continue
            ns = np.asarray(d["ack_bins"], dtype=np.int64) * ACK_BIN_NS
            clock = self.placement.clock(self.placement.stage_a_host(int(s)))
            bins.update(int(b) for b in np.asarray(clock.to_orchestrator(ns)) // ACK_BIN_NS)
        return {**done, "ack_bins": sorted(bins)}

    def _unc_ns(self, host: str | None) -> float:
        return 0.0 if host is None else float(self.cluster.hosts[host].clock.fit().uncertainty_ns)

    def bounds_ns(self, messages: np.ndarray) -> np.ndarray:
        """Per message, the bound of a latency between its stage A's clock and its replica's."""
        ua = np.array([self._unc_ns(self.placement.stage_a_host(s)) for s in range(self.cfg.streams)])
        ub = np.array([self._unc_ns(self.placement.replica_host(r)) for r in range(self.cfg.replicas)])
        if not len(messages):
            return np.zeros(0)
        st = messages["stream"].astype(np.int64) % len(ua) if "stream" in messages.dtype.names else 0
        rp = np.minimum(messages["replica"].astype(np.int64), len(ub) - 1)
        return ua[st] + ub[rp]

    def uncertainty_us(self, messages: np.ndarray) -> float:
        b = self.bounds_ns(messages)
        if not len(b):
            ua = max(self._unc_ns(self.placement.stage_a_host(s)) for s in range(self.cfg.streams))
            ub = max(self._unc_ns(self.placement.replica_host(r)) for r in range(self.cfg.replicas))
            return round((ua + ub) / 1e3, 3)
        return round(float(b.max()) / 1e3, 3)

    def placed(self) -> str:
        """summary.csv's ``hosts``: the placement as --place gives it ("" when nothing is placed)."""
        return " ".join(f"{r}={','.join(self.placement.place[r])}" for r in ROLES if r in self.placement.place)

    def columns(self, messages: np.ndarray) -> dict:
        return {"hosts": self.placed(), "clock_uncertainty_us": self.uncertainty_us(messages)}

    def info(self, messages: np.ndarray) -> dict:
        """run.json's ``hosts``."""
        c = self.cluster
        workers = {}
        for s in range(self.cfg.streams):
            workers["stage A" if self.cfg.streams == 1 else f"stage A stream {s}"] = \
                self.placement.stage_a_host(s) or ""
        for r in range(self.cfg.replicas):
            workers[f"stage B replica {r}"] = self.placement.replica_host(r) or ""
        for k in range(max(1, self.cfg.broker_nodes)):
            workers["broker" if self.cfg.broker_nodes <= 1 else f"broker node {k}"] = \
                self.placement.broker_host(k) or ""
        return {
            "file": self.cfg.hosts, "ray": c.spec.ray, "ray_address": c.ray_address, "simulated": c.simulated,
            "brought_up_for_this_run": bool(c.owned), "orchestrator_address": c.address,
            "spec": c.spec.to_dict(), "placement": self.placement.describe(), "workers": workers,
            "clocks": c.clock_report(),
            "clock_method": "Cristian/NTP exchanges on a UDP socket to each host's agent: per sample the fastest "
                            "of 24 intersected; offset and drift fitted over the samples (start, every "
                            f"{CLOCK_INTERVAL_S:g} s, end); uncertainty = worst sample's half-width plus its "
                            "distance from the fit (docs/hosts.md)",
            "clock_uncertainty_us": self.uncertainty_us(messages),
            "negative_latencies": timeline.negative(messages, self.bounds_ns(messages)) if len(messages) else {},
            "dead_hosts": c.dead_hosts(),
        }


__all__ = ["HostsRun", "HostDown"]
