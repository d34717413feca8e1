"""Where stage processes on hosts connect to: the orchestrator's listener, and each stage's connection.

``StageListener(address)`` listens on the orchestrator's address on the hosts' network (never 0.0.0.0)
with a random authkey per run: a peer must pass ``multiprocessing.connection``'s challenge both ways
(HMAC of the key), then say which worker it is (wire.HELLO); anyone else is dropped. The handshake of
each peer runs in a thread of its own with a receive timeout, so a silent peer holds nothing up.

``PendingConnection`` is a stage's connection from the moment its worker is made: what the Collector
reads (``fileno``, ``poll``, ``recv_bytes``) before the process has connected (a descriptor that is
never ready) and after (the real connection's).
"""
from __future__ import annotations

import multiprocessing.connection as mpc
import os
import secrets
import socket
import struct
import threading

from testbed.hosts import wire

HANDSHAKE_TIMEOUT_S = 10
AUTHKEY_BYTES = 32


class PendingConnection:
    def __init__(self, name: str = ""):
        self.name = name
        self._conn: mpc.Connection | None = None
        self._never_r, self._never_w = os.pipe()  # nothing is ever written: never ready
        self.connected = threading.Event()

    def attach(self, conn: mpc.Connection) -> None:
        self._conn = conn
        self.connected.set()

    @property
    def conn(self) -> mpc.Connection | None:
        return self._conn

    def fileno(self) -> int:
        c = self._conn
        return c.fileno() if c is not None else self._never_r

    def poll(self, timeout: float = 0.0) -> bool:
        c = self._conn
        if c is None:
            return self.connected.wait(timeout) and self._conn.poll(0)
        return c.poll(timeout)

    def recv_bytes(self, maxlength: int | None = None) -> bytes:
        self.connected.wait()
        return self._conn.recv_bytes(maxlength)

    def send_bytes(self, data: bytes) -> None:
        if self._conn is None:
            raise OSError("the stage has not connected yet")
        self._conn.send_bytes(data)

    @property
    def closed(self) -> bool:
        return self._never_r < 0

    def close(self) -> None:
        c, self._conn = self._conn, None
        if c is not None:
            c.close()
        for fd in (self._never_r, self._never_w):
            if fd >= 0:
                os.close(fd)
        self._never_r = self._never_w = -1

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass


class StageListener:
    def __init__(self, address: str, authkey: bytes | None = None):
        self.authkey = authkey or secrets.token_bytes(AUTHKEY_BYTES)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((address, 0))
        self._sock.listen(64)
        self.address = (address, self._sock.getsockname()[1])
        self._expect: dict[str, tuple[PendingConnection, object]] = {}
        self._lock = threading.Lock()
        self.refused = 0
        self._closed = False
        threading.Thread(target=self._accept, name="stage-listener", daemon=True).start()

    def expect(self, worker: str, pending: PendingConnection, on_connect=None) -> None:
        """``worker``'s connection, when it comes, goes to ``pending``; then ``on_connect(conn)``."""
        with self._lock:
            self._expect[worker] = (pending, on_connect)

    def forget(self, worker: str) -> None:
        with self._lock:
            self._expect.pop(worker, None)

    def _accept(self) -> None:
        while not self._closed:
            try:
                s, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._admit, args=(s,), name="stage-handshake", daemon=True).start()

    def _admit(self, s: socket.socket) -> None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", HANDSHAKE_TIMEOUT_S, 0))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = mpc.Connection(s.detach())
        try:
            mpc.deliver_challenge(conn, self.authkey)
            mpc.answer_challenge(conn, self.authkey)
            hello = wire.parse_json(conn.recv_bytes(1024), wire.HELLO)
            with self._lock:
                entry = self._expect.pop(str((hello or {}).get("worker")), None)
            if entry is None:
                raise mpc.AuthenticationError("not a worker of this run")
            fd_sock = socket.socket(fileno=conn.fileno())
            fd_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 0))
            fd_sock.detach()
        except (OSError, EOFError, mpc.AuthenticationError, ValueError):
            self.refused += 1
            conn.close()
            return
        pending, on_connect = entry
        pending.attach(conn)
        if on_connect is not None:
            on_connect(conn)

    def close(self) -> None:
        self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
