"""What travels on a stage's connection besides its records (testbed/harness/records.py).

A stage process on a host connects back to the orchestrator (``multiprocessing.connection``, the run's
authkey: only the run's peers get in) and says who it is: ``HELLO`` + JSON ``{"worker": id, "pid": ..}``.
From then on the connection carries, one way, the stage's record chunks exactly as the local pipe does,
and the other way ``CONTROL`` + JSON messages: ``{"t0": ns}`` (the load's start, on the host's clock),
``{"start": true}``, ``{"stop": true}``. Only bytes: ``send_bytes``/``recv_bytes``, never a pickle.

A stage's arguments are JSON; the placeholders below stand for what only the stage's own process can
make: its connection and its control objects (``start_evt``, ``stop_evt``, ``t0``), as the stage loops
take them (testbed/harness/loops.py).
"""
from __future__ import annotations

import json

HELLO = b"H"
CONTROL = b"C"
CONN = {"$": "conn"}
START_EVT = {"$": "start_evt"}
STOP_EVT = {"$": "stop_evt"}
T0 = {"$": "t0"}
PLACEHOLDERS = ("conn", "start_evt", "stop_evt", "t0")


def control(**fields) -> bytes:
    return CONTROL + json.dumps(fields).encode()


def hello(worker: str, pid: int) -> bytes:
    return HELLO + json.dumps({"worker": worker, "pid": pid}).encode()


def parse_json(chunk: bytes, tag: bytes) -> dict | None:
    """The JSON after ``tag``, or None when the chunk is something else."""
    if chunk[:1] != tag:
        return None
    try:
        out = json.loads(chunk[1:] or b"{}")
    except ValueError:
        return None
    return out if isinstance(out, dict) else None
