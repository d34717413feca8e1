"""The stage workers of one run: stage A (one worker per camera stream) and the stage B replicas, as OS
processes (multiprocessing "spawn") or, with an in-process broker, as threads of the orchestrator.

Each worker is built from a plain description (``Worker``: slot, role, stream, replica, the address it
binds where it listens), so a later phase can start the same worker on another host. Slots: stage A's
streams first (0 .. streams-1), then the stage B replicas (streams + replica). Each worker has a name
("stage A", "stage A stream 1", "stage B replica 0", ...) and a one-way pipe of records
(testbed/harness/records.py). A stage B replica can be killed and started again under the same name and
slot mid-run (``kill_replica`` / ``restart_replica``): the new worker gets a fresh pipe, which the
collector picks up through ``Collector.replace``.

Where stage A binds the transport (an embedded broker whose spec says ``per_stream``), each stream binds
its own endpoint (the run's endpoint lists them, comma-separated: stream s takes the s-th) and every
replica connects to all of them. In a closed-loop run each stream's stage A listens on its own address
for the replicas' reports of finished messages (testbed/harness/completions.py).

Over hosts (``cluster``: testbed/hosts/): a worker whose ``on`` names a host runs there, started by the
host's agent (``cluster.worker``: the same loop functions, their records on a connection back to this
process instead of a pipe); the start and stop events and ``t0`` are then the cluster's control group,
which also sets the local ``multiprocessing`` ones the workers left here read.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import sys
import threading
import time
from dataclasses import dataclass

import brokers
from testbed.config import RunConfig
from testbed.launchers import lifeline
from testbed.load import closed_window

STOP_TIMEOUT_S = 15.0
#: GIL switch interval while stages run as threads: a stage waking from a sleep must not wait up to
#: Python's default 5 ms for a thread that holds the GIL (that wait would lengthen its service time).
THREAD_SWITCH_INTERVAL_S = 0.0002
LOCAL_HOST = "127.0.0.1"


@dataclass(frozen=True)
class Worker:
    """One stage worker as plain values."""

    slot: int
    role: str                 # "producer" (stage A) or "consumer" (stage B)
    stream: int = 0           # stage A: its camera stream
    replica: int = 0          # stage B: its replica index
    host: str = LOCAL_HOST    # the address it binds where it listens (closed loop's side channel)
    listen_port: int = 0      # stage A of a closed-loop run: its side channel's port
    on: str = ""              # the host it runs on (testbed/hosts/; "" = this machine)

    def name(self, streams: int) -> str:
        if self.role == "producer":
            return "stage A" if streams == 1 else f"stage A stream {self.stream}"
        return f"stage B replica {self.replica}"


def plan_workers(cfg: RunConfig, host: str = LOCAL_HOST) -> list[Worker]:
    """Every worker of the run, in slot order: the streams' stage A, then the replicas."""
    from testbed.launchers import free_port
    closed = bool(closed_window(cfg.arrival))
    out = [Worker(s, "producer", stream=s, host=host, listen_port=free_port(host) if closed else 0)
           for s in range(cfg.streams)]
    out += [Worker(cfg.streams + r, "consumer", replica=r, host=host) for r in range(cfg.replicas)]
    return out


def stream_endpoint(ep_d: dict, broker: str, stream: int) -> dict:
    """The endpoint stage A of ``stream`` uses: the s-th of a per-stream endpoint list (a transport that
    stage A binds), else the run's endpoint."""
    emb = brokers.spec(broker).embedded
    if emb is None or not emb.per_stream:
        return ep_d
    urls = ep_d["url"].split(",")
    return {**ep_d, "url": urls[stream]}


class _Shared:
    """A start-time cell for threads (processes use multiprocessing.Value)."""

    value = 0


class Stages:
    """Stage A's streams (slots 0 .. streams-1) and the stage B replicas (slot streams + replica)."""

    def __init__(self, cfg: RunConfig, endpoint, topic: str, workers: list[Worker] | None = None,
                 cluster=None, log_dir: str = ""):
        self.in_process = brokers.get(cfg.broker).in_process
        if self.in_process:
            self.start_evt, self.stop_evt, self.t0 = threading.Event(), threading.Event(), _Shared()
        else:
            self._ctx = mp.get_context("spawn")
            self.start_evt, self.stop_evt, self.t0 = self._ctx.Event(), self._ctx.Event(), self._ctx.Value("q", 0)
        self._local = (self.start_evt, self.stop_evt, self.t0)  # what the workers on this machine read
        self.cluster, self.log_dir = cluster, log_dir
        if cluster is not None:  # setting these tells the workers on hosts too (and sets the local ones)
            group = cluster.control(*self._local)
            self.start_evt, self.stop_evt, self.t0 = group.start_evt, group.stop_evt, group.t0
            self._group = group
        self._cfg_d, self._ep_d, self._topic = cfg.to_dict(), endpoint.__dict__.copy(), topic
        self.streams = cfg.streams
        self.plan = workers if workers is not None else plan_workers(cfg)
        #: closed loop: each stream's stage A side channel (host, port), by stream; () in open loop
        self.done_to = [(w.host, w.listen_port) for w in self.plan if w.role == "producer" and w.listen_port]
        self.workers, self.conns, self.names, self._writers = [], [], [], []
        self.expected_exit: set[int] = set()  # slots killed on purpose: not "exited unexpectedly"
        for wk in self.plan:
            self._add(*self._make(wk.slot), wk.name(self.streams))

    # -- building workers ---------------------------------------------------------------------------
    def _pipe(self):
        return mp.Pipe(duplex=False) if self.in_process else self._ctx.Pipe(duplex=False)

    def _make(self, slot: int):
        from testbed.harness import loops
        wk = self.plan[slot]
        if wk.on:
            return self._make_remote(wk)
        r, w = self._pipe()
        common = (*self._local, self.in_process)
        if wk.role == "producer":
            ep = stream_endpoint(self._ep_d, self._cfg_d["broker"], wk.stream)
            done_at = (wk.host, wk.listen_port) if wk.listen_port else None
            target = loops.producer_main
            args = (self._cfg_d, ep, self._topic, w, *common, wk.stream, done_at)
            name = "stage-A" if self.streams == 1 else f"stage-A-{wk.stream}"
        else:
            target = loops.consumer_main
            args = (self._cfg_d, self._ep_d, self._topic, wk.replica, w, *common, list(self.done_to))
            name = f"stage-B-{wk.replica}"
        if self.in_process:
            worker = threading.Thread(target=target, args=args, name=name, daemon=True)
        else:  # the process dies with the orchestrator, even a SIGKILLed one
            worker = self._ctx.Process(target=lifeline.run_child, args=(os.getpid(), target, *args), name=name,
                                       daemon=True)
        return worker, r, w

    def _make_remote(self, wk: Worker):
        """A worker on host ``wk.on`` (testbed/hosts/workers.py): (worker, its record stream, None)."""
        import json

        from testbed.hosts import wire
        common = [wire.CONN, wire.START_EVT, wire.STOP_EVT, wire.T0, False]
        ep_d = json.loads(json.dumps(self._ep_d, default=str))  # its arguments travel as JSON
        if wk.role == "producer":
            ep = stream_endpoint(ep_d, self._cfg_d["broker"], wk.stream)
            done_at = [wk.host, wk.listen_port] if wk.listen_port else None
            target, args = "testbed.harness.loops:producer_main", [self._cfg_d, ep, self._topic, *common, wk.stream,
                                                                    done_at]
        else:
            target = "testbed.harness.loops:consumer_main"
            args = [self._cfg_d, ep_d, self._topic, wk.replica, *common, [list(a) for a in self.done_to]]
        name = wk.name(self.streams)
        log = os.path.join(os.path.abspath(self.log_dir or "."), f"stage-{name.replace(' ', '-')}.log")
        worker = self.cluster.worker(wk.on, name, target, args, self._group, log_path=log)
        return worker, worker.conn, None

    def _add(self, worker, r, w, name) -> None:
        self.workers.append(worker)
        self.conns.append(r)
        self.names.append(name)
        self._writers.append(w)

    # -- life cycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        if self.in_process:
            self._switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(THREAD_SWITCH_INTERVAL_S)
        for wk in self.workers:
            wk.start()
        if not self.in_process:
            for w in self._writers:  # the child holds its own copy now (a worker on a host has none here)
                if w is not None:
                    w.close()

    def dead(self) -> list[str]:
        return [name for wk, name in zip(self.workers, self.names) if not wk.is_alive()]

    def unexpectedly_dead(self, stopped: set[int]) -> list[str]:
        """Workers that exited without saying they stopped and were not killed on purpose."""
        return [n for i, n in enumerate(self.names)
                if not self.workers[i].is_alive() and i not in stopped and i not in self.expected_exit]

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        self.stop_evt.set()
        deadline = time.monotonic() + timeout
        for wk in self.workers:
            wk.join(max(0.0, deadline - time.monotonic()))
        if not self.in_process:
            for wk in self.workers:
                _end(wk)
        elif getattr(self, "_switch_interval", None):
            sys.setswitchinterval(self._switch_interval)

    # -- one replica, mid-run (fault injection) -----------------------------------------------------
    def replica_slot(self, replica: int) -> int:
        slot = self.streams + replica
        if not 0 <= replica < len(self.workers) - self.streams:
            raise ValueError(f"no stage B replica {replica} (replicas 0..{len(self.workers) - self.streams - 1})")
        return slot

    def kill_replica(self, replica: int) -> None:
        """SIGKILL stage B replica ``replica`` (processes only); the run goes on without it."""
        if self.in_process:
            raise RuntimeError("stage B replicas of an in-process broker are threads: they cannot be killed")
        slot = self.replica_slot(replica)
        self.expected_exit.add(slot)
        wk = self.workers[slot]
        if wk.is_alive():
            wk.kill()
            wk.join(2)

    def restart_replica(self, replica: int):
        """Start a new stage B replica in the slot of ``replica`` (same name, same consumer name; it
        starts at once, the load's start event being set). Returns (slot, the new pipe's read end)."""
        slot = self.replica_slot(replica)
        old = self.workers[slot]
        if old.is_alive():
            self.kill_replica(replica)
        worker, r, w = self._make(slot)
        self.workers[slot], self.conns[slot], self._writers[slot] = worker, r, w
        self.expected_exit.discard(slot)
        worker.start()
        if not self.in_process and w is not None:
            w.close()
        return slot, r


def _end(wk) -> None:
    if wk.is_alive():
        wk.terminate()
        wk.join(2)
    if wk.is_alive():
        wk.kill()
        wk.join(2)
