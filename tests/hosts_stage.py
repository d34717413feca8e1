"""A stage-like loop for the hosts tests: started on a simulated host (testbed/hosts/child.py), it talks
to the orchestrator as the stage loops do (records.Reporter chunks, the start/stop events, t0)."""
from __future__ import annotations

import os
import time

from testbed.harness import records

STEP_NS = 1_000_000


def stream(conn, start_evt, stop_evt, t0, tag: str):
    """READY, then once started one frame record a millisecond (intended = t0 + i ms, on this host's
    clock; start/end/published when it ran), shipped in chunks; DONE and STOPPED once stopped."""
    rep = records.Reporter(conn, records.FRAME_DTYPE, records.FRAMES)
    rep.send_json(records.READY, {"role": "producer", "pid": os.getpid(), "tag": tag,
                                  "ready_ns": time.monotonic_ns()})
    while not start_evt.wait(0.05):
        if stop_evt.is_set():
            return
    start0 = t0.value
    rep.send_json(records.FAILED, {"t0_seen": start0, "started_ns": time.monotonic_ns()})
    i = 0
    while not stop_evt.is_set():
        intended = start0 + i * STEP_NS
        delay = intended - time.monotonic_ns()
        if delay > 0:
            time.sleep(delay / 1e9)
        now = time.monotonic_ns()
        rep.add(_frame(frame_id=i, first_seq=i, n=1, intended=intended, start=now, end=now, published=now))
        rep.maybe_flush(now)
        i += 1
    rep.flush()
    rep.send_json(records.DONE, {"frames": i, "sent": i})
    rep.send_json(records.STOPPED, {"role": "producer"})
    conn.close()


def _frame(**fields) -> tuple:
    """A frame record's row in the layout of records.FRAME_DTYPE (fields not given are 0)."""
    return tuple(fields.get(name, 0) for name in records.FRAME_DTYPE.names)


def sleeper(conn, start_evt, stop_evt, t0):
    """READY, then nothing until killed (pause/kill tests)."""
    records.Reporter(conn, records.FRAME_DTYPE, records.FRAMES).send_json(records.READY, {"pid": os.getpid()})
    while True:
        time.sleep(1)
