"""The leader of a cluster's run topic, sampled once a second: a ``RunHook`` (execute.py) for runs with
``--broker-nodes`` above 1.

The orchestrator's tick asks at most once a second; the question goes to a thread of its own (see
``ClusterHandle.leader``: the broker's own API, its cluster recipe says which), so a node that is paused or down never holds the orchestrator's loop. Each
answer is kept with the moment it was asked; at the end each second's answer goes into that second's
broker figures (timeseries.csv ``broker_leader``: the node's index, empty when none was named), from
which the summary's ``leader_changes`` is counted (testbed/analysis/availability.py).
"""
from __future__ import annotations

import threading
import time

INTERVAL_NS = 1_000_000_000


class LeaderWatch:
    def __init__(self):
        self.samples: list[tuple[int, int | None]] = []  # (monotonic ns when asked, node index or None)
        self._handle = None
        self._topic = ""
        self._next = 0
        self._want = threading.Event()
        self._quit = threading.Event()
        self._thread: threading.Thread | None = None

    def on_start(self, run) -> None:
        if getattr(run.handle, "leader", None) is None:
            return  # not a cluster (a caller's handle without a leader probe)
        self._handle, self._topic = run.handle, run.topic
        self._next = run.state.t0
        self._thread = threading.Thread(target=self._loop, name="leader-watch", daemon=True)
        self._thread.start()

    def on_tick(self, run, now_ns: int) -> None:
        if self._thread is not None and now_ns >= self._next:
            self._next += INTERVAL_NS * max(1, (now_ns - self._next) // INTERVAL_NS + 1)
            self._want.set()  # a sample still under way skips this one

    def _loop(self) -> None:
        while not self._quit.is_set():
            if not self._want.wait(0.1):
                continue
            self._want.clear()
            asked = time.monotonic_ns()
            self.samples.append((asked, self._handle.leader(self._topic)))

    def on_stop(self, run) -> None:
        if self._thread is None:
            return
        self._quit.set()
        self._thread.join(5.0)
        t0 = run.state.t0
        for asked, k in list(self.samples):
            sec = int((asked - t0) // INTERVAL_NS)
            if sec >= 0:
                run.state.samples.setdefault(sec, {})["broker_leader"] = "" if k is None else k
