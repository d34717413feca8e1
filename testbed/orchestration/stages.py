"""The stage workers of one run: stage A and the stage B replicas, as OS processes (multiprocessing
"spawn") or, with an in-process broker, as threads of the orchestrator.

Each worker has a name ("stage A", "stage B replica 0", ...), a slot index and a one-way pipe of records
(testbed/harness/records.py). A stage B replica can be killed and started again under the same name and
slot mid-run (``kill_replica`` / ``restart_replica``): the new worker gets a fresh pipe, which the
collector picks up through ``Collector.replace``.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import sys
import threading
import time

import brokers
from testbed.config import RunConfig
from testbed.launchers import lifeline

STOP_TIMEOUT_S = 15.0
#: GIL switch interval while stages run as threads: a stage waking from a sleep must not wait up to
#: Python's default 5 ms for a thread that holds the GIL (that wait would lengthen its service time).
THREAD_SWITCH_INTERVAL_S = 0.0002


class _Shared:
    """A start-time cell for threads (processes use multiprocessing.Value)."""

    value = 0


class Stages:
    """Stage A (slot 0) and the stage B replicas (slot 1 + replica)."""

    def __init__(self, cfg: RunConfig, endpoint, topic: str):
        self.in_process = brokers.get(cfg.broker).in_process
        if self.in_process:
            self.start_evt, self.stop_evt, self.t0 = threading.Event(), threading.Event(), _Shared()
        else:
            self._ctx = mp.get_context("spawn")
            self.start_evt, self.stop_evt, self.t0 = self._ctx.Event(), self._ctx.Event(), self._ctx.Value("q", 0)
        self._cfg_d, self._ep_d, self._topic = cfg.to_dict(), endpoint.__dict__.copy(), topic
        self.workers, self.conns, self.names, self._writers = [], [], [], []
        self.expected_exit: set[int] = set()  # slots killed on purpose: not "exited unexpectedly"
        self._add(*self._make(0), "stage A")
        for i in range(cfg.replicas):
            self._add(*self._make(1 + i), f"stage B replica {i}")

    # -- building workers ---------------------------------------------------------------------------
    def _pipe(self):
        return mp.Pipe(duplex=False) if self.in_process else self._ctx.Pipe(duplex=False)

    def _make(self, slot: int):
        from testbed.harness import loops
        r, w = self._pipe()
        common = (self.start_evt, self.stop_evt, self.t0, self.in_process)
        if slot == 0:
            target, args, name = loops.producer_main, (self._cfg_d, self._ep_d, self._topic, w, *common), "stage-A"
        else:
            replica = slot - 1
            target = loops.consumer_main
            args, name = (self._cfg_d, self._ep_d, self._topic, replica, w, *common), f"stage-B-{replica}"
        if self.in_process:
            worker = threading.Thread(target=target, args=args, name=name, daemon=True)
        else:  # the process dies with the orchestrator, even a SIGKILLed one
            worker = self._ctx.Process(target=lifeline.run_child, args=(os.getpid(), target, *args), name=name,
                                       daemon=True)
        return worker, r, w

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
            for w in self._writers:  # the child holds its own copy now
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
        slot = 1 + replica
        if not 0 <= replica < len(self.workers) - 1:
            raise ValueError(f"no stage B replica {replica} (replicas 0..{len(self.workers) - 2})")
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
        if not self.in_process:
            w.close()
        return slot, r


def _end(wk) -> None:
    if wk.is_alive():
        wk.terminate()
        wk.join(2)
    if wk.is_alive():
        wk.kill()
        wk.join(2)
