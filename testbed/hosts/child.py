"""A stage process on a host: ``python -m testbed.hosts.child``, started by the host's agent (agent.py).

It reads what to run from its standard input (JSON: the worker's id and name, the orchestrator's address
and the run's authkey, ``module:function`` and its JSON arguments), connects back to the orchestrator
(``multiprocessing.connection.Client``: the authkey handshake), says who it is, and runs the function
with the placeholders of wire.py replaced by its connection and its control objects: ``start_evt``,
``stop_evt`` (``wait(t)``, ``is_set()``, ``set()``) and ``t0`` (``.value``, on this host's monotonic
clock), fed by the orchestrator's control messages on the same connection. The stage loops
(testbed/harness/loops.py) run unchanged: their record chunks go out on the connection as on a pipe.

It dies with its agent (the parent-death signal, set before it was exec'd) and when the orchestrator
goes away (the connection reaches its end: the stop event is set, and the process exits
``ORPHAN_GRACE_S`` later whatever the stage is doing).
"""
from __future__ import annotations

import importlib
import json
import multiprocessing.connection as mpc
import os
import socket
import sys
import threading
import traceback

from testbed.hosts import wire

ORPHAN_GRACE_S = 2.0
ORPHAN_EXIT = 75


class Cell:
    """The start time a stage reads (``t0.value``), as multiprocessing.Value gives it locally."""

    value = 0


class Control:
    """The stage's side of the control messages: events and the start time, set by a reader thread."""

    def __init__(self, conn):
        self.conn = conn
        self.start_evt = threading.Event()
        self.stop_evt = threading.Event()
        self.t0 = Cell()
        self.finished = False
        self._thread = threading.Thread(target=self._read, name="control", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def apply(self, msg: dict) -> None:
        if "t0" in msg:
            self.t0.value = int(msg["t0"])
        if msg.get("start"):
            self.start_evt.set()
        if msg.get("stop"):
            self.stop_evt.set()

    def _read(self) -> None:
        while True:
            try:
                chunk = self.conn.recv_bytes()
            except (EOFError, OSError):
                break
            msg = wire.parse_json(chunk, wire.CONTROL)
            if msg is not None:
                self.apply(msg)
        if self.finished or self.conn.closed:
            return  # we closed it: the stage is done
        self.stop_evt.set()  # the orchestrator is gone: nobody reads what we measure
        threading.Event().wait(ORPHAN_GRACE_S)
        os._exit(ORPHAN_EXIT)

    def substitute(self, arg):
        if isinstance(arg, dict) and set(arg) == {"$"} and arg["$"] in wire.PLACEHOLDERS:
            return self.conn if arg["$"] == "conn" else getattr(self, arg["$"])
        return arg


def resolve(target: str):
    module, _, func = target.partition(":")
    if not module or not func:
        raise ValueError(f"target {target!r} is not module:function")
    return getattr(importlib.import_module(module), func)


def main() -> int:
    payload = json.loads(sys.stdin.buffer.read() or b"{}")
    if payload.get("parent") and os.getppid() != payload["parent"]:
        os._exit(1)  # the agent ended before the parent-death signal was in place
    conn = mpc.Client(tuple(payload["address"]), family="AF_INET", authkey=bytes.fromhex(payload["authkey"]))
    s = socket.socket(fileno=conn.fileno())  # records go out as they are sent: no Nagle wait
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.detach()
    conn.send_bytes(wire.hello(payload["worker"], os.getpid()))
    ctl = Control(conn)
    ctl.start()
    code = 0
    try:
        fn = resolve(payload["target"])
        fn(*[ctl.substitute(a) for a in payload.get("args", [])])
    except BaseException as exc:  # noqa: BLE001 - reported as the stage loops report theirs
        from testbed.harness import records
        code = 1
        try:
            conn.send_bytes(records.ERROR + f"{payload.get('name', 'stage')} on host {payload.get('host', '?')}: "
                            f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}".encode())
        except (OSError, ValueError):
            pass
    finally:
        ctl.finished = True
        if not conn.closed:
            conn.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
