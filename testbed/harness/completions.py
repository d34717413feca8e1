"""Closed loop's side channel: stage B tells each stream's stage A which of its messages are finished.

It never crosses the broker. Each stage A of a closed-loop run listens on a TCP socket at the address
its worker is given (``Listener``; 127.0.0.1 or the address of the host it runs on, never a literal
chosen here); every stage B replica connects to all of them (``Sender``) and, after a batch is acked,
sends one small binary struct per finished message to that message's stream: ``DONE`` = (stream,
index within the frame, frame_id), little endian, 16 bytes. Nothing is pickled. A stage A counts a frame
finished when every one of its messages has been reported once (duplicates are ignored); a frame with no
messages is finished at once.
"""
from __future__ import annotations

import selectors
import socket
import struct
import time

DONE = struct.Struct("<IIQ")  # stream, index, frame_id
CONNECT_RETRY_S = 0.02


class Listener:
    """Stage A's end: a listening socket, the replicas' connections, finished frames out."""

    def __init__(self, host: str, port: int, stream: int):
        self.stream = stream
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(64)
        self.sock.setblocking(False)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.sock, selectors.EVENT_READ, None)
        self._rest: dict = {}          # connection -> bytes of an incomplete struct
        self.pending: dict[int, int] = {}  # frame_id -> bit mask of its messages not yet finished
        self.duplicates = 0
        self.foreign = 0               # structs for another stream (a misrouted replica): ignored

    @property
    def address(self) -> tuple[str, int]:
        return self.sock.getsockname()[:2]

    def expect(self, frame_id: int, n: int) -> None:
        """Frame ``frame_id`` was published with ``n`` messages (n > 0)."""
        self.pending[frame_id] = (1 << n) - 1

    def poll(self, timeout_s: float) -> int:
        """Read what has arrived (waiting at most ``timeout_s`` for something); the number of frames that
        became finished."""
        finished = 0
        for key, _ in self.sel.select(timeout_s):
            if key.data is None:
                self._accept()
                continue
            conn = key.fileobj
            try:
                data = conn.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                self.sel.unregister(conn)
                self._rest.pop(conn, None)
                conn.close()
                continue
            rest = self._rest.get(conn)
            if rest:
                data = rest + data
            end = len(data) - len(data) % DONE.size
            self._rest[conn] = data[end:]
            pending = self.pending
            for stream, index, fid in DONE.iter_unpack(memoryview(data)[:end]):
                if stream != self.stream:
                    self.foreign += 1
                    continue
                mask = pending.get(fid)
                bit = 1 << index
                if mask is None or not mask & bit:
                    self.duplicates += 1
                    continue
                mask ^= bit
                if mask:
                    pending[fid] = mask
                else:
                    del pending[fid]
                    finished += 1
        return finished

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            conn.setblocking(False)
            self.sel.register(conn, selectors.EVENT_READ, conn)

    def close(self) -> None:
        for key in list(self.sel.get_map().values()):
            try:
                key.fileobj.close()
            except OSError:
                pass
        self.sel.close()


class Sender:
    """A stage B replica's end: one connection per stream's stage A."""

    def __init__(self, addresses, streams: int):
        self.addresses = [tuple(a) for a in addresses]
        self.streams = streams
        self.socks: list = []  # per stream; None once that stage A has gone

    def connect(self, timeout_s: float, stop_evt=None) -> None:
        """Connect to every stage A, retrying until ``timeout_s`` (they bind as they start)."""
        deadline = time.monotonic() + timeout_s
        for addr in self.addresses:
            while True:
                try:
                    s = socket.create_connection(addr, timeout=max(0.1, deadline - time.monotonic()))
                    break
                except OSError as exc:
                    if time.monotonic() > deadline or (stop_evt is not None and stop_evt.is_set()):
                        raise ConnectionError(f"closed loop: stage A at {addr[0]}:{addr[1]} did not answer "
                                              f"within {timeout_s:g}s ({exc})") from None
                    time.sleep(CONNECT_RETRY_S)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.settimeout(None)
            self.socks.append(s)

    def send(self, envs) -> None:
        """The finished messages of one batch (decoded envelopes), each to its stream's stage A."""
        pack = DONE.pack
        if self.streams == 1:
            self._send(0, b"".join([pack(0, e.index, e.frame_id) for e in envs]))
            return
        n = self.streams
        parts: dict[int, list] = {}
        for e in envs:
            s = e.seq % n
            parts.setdefault(s, []).append(pack(s, e.index, e.frame_id))
        for s, p in parts.items():
            self._send(s, b"".join(p))

    def _send(self, stream: int, data: bytes) -> None:
        sock = self.socks[stream]
        if sock is None:
            return
        try:
            sock.sendall(data)
        except OSError:  # that stage A has gone (the run is ending): nothing left to tell it
            self.socks[stream] = None
            sock.close()

    def close(self) -> None:
        for s in self.socks:
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass
        self.socks = []
