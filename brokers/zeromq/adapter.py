"""ZeroMQ PUSH/PULL: an embedded, brokerless transport (pyzmq).

| property           | value                                                                        |
|--------------------|------------------------------------------------------------------------------|
| delivery           | at most once: no acknowledgement; a consumer that dies loses what it buffered |
| ordering           | FIFO per consumer; PUSH deals messages round-robin over connected consumers   |
| persistence        | none (socket buffers in the two processes)                                   |
| backlog means      | messages queued in socket buffers: not observable, so only the harness's own  |
| options            | ``hwm`` = 0, ``copy_threshold`` = 10240                                       |

Stage A binds a PUSH socket on the endpoint (``tcp://127.0.0.1:PORT`` by default, or ``ipc://``),
each stage B replica connects a PULL socket. Header and payload travel as two frames of one multipart
message; payloads from ``copy_threshold`` bytes up are sent without a copy (pyzmq ``copy=False``).

Why ``hwm`` defaults to 0 (unlimited) and not to ZeroMQ's 1000: with a high-water mark the PUSH socket
blocks when the consumers fall behind, the producer stalls and the backlog moves upstream into stage A,
so ZeroMQ would not do the rate matching the other brokers do. Set ``--broker-opt hwm=1000`` to see
ZeroMQ's own behaviour (the harness then shows it as publish delay).
"""
from __future__ import annotations

import time

import zmq
import zmq.utils.monitor

from brokers.base import Broker, Delivery, Endpoint, Option, not_reachable
from brokers.zeromq.spec import SPEC
from testbed.errors import BrokerError


class ZeroMQBroker(Broker):
    spec = SPEC
    OPTIONS = {
        "hwm": Option(0, "send/receive high-water mark in messages (0 = unlimited)", int),
        "copy_threshold": Option(10240, "payloads of at least this many bytes are sent without a copy", int),
    }

    @property
    def acknowledged(self) -> bool:
        return False  # PUSH/PULL: nothing acknowledges a message

    def __init__(self, endpoint: Endpoint):
        super().__init__(endpoint)
        self._ctx = None
        self._sock = None
        self._monitor = None
        self._peers = 0

    def connect(self, timeout_s: float = 10.0) -> None:
        self._ctx = zmq.Context.instance()

    def _producer_socket(self):
        if self._sock is None:
            sock = self._ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.SNDHWM, self.options["hwm"])
            sock.setsockopt(zmq.LINGER, 2000)
            self._monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
            try:
                sock.bind(self.endpoint.url)
            except zmq.ZMQError as exc:
                sock.close(0)
                raise BrokerError(f"zeromq: cannot bind {self.endpoint.url}: {exc}") from None
            self._sock = sock
        return self._sock

    def wait_consumers(self, topic: str, n: int, timeout_s: float) -> None:
        """Block until ``n`` consumers have connected, so none misses the first messages."""
        self._producer_socket()
        deadline = time.monotonic() + timeout_s
        while self._peers < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise not_reachable("zeromq", self.endpoint.url, timeout_s,
                                    f"{self._peers} of {n} consumers connected")
            if self._monitor.poll(int(left * 1000)):
                ev = zmq.utils.monitor.recv_monitor_message(self._monitor)
                if ev["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    self._peers += 1
                elif ev["event"] == zmq.EVENT_DISCONNECTED:
                    self._peers -= 1

    def publish(self, topic: str, header: bytes, payload) -> None:
        sock = self._sock or self._producer_socket()
        big = memoryview(payload).nbytes >= self.options["copy_threshold"]
        sock.send(header, zmq.SNDMORE)
        sock.send(payload, copy=not big)

    def subscribe(self, topic: str, group: str, consumer_name: str) -> None:
        sock = self._ctx.socket(zmq.PULL)
        sock.setsockopt(zmq.RCVHWM, self.options["hwm"])
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.endpoint.url)
        self._sock = sock

    def receive(self, max_messages: int, timeout_s: float) -> list[Delivery]:
        # Try a non-blocking read first and poll only when nothing is there: a consumer that was busy
        # finds its next message waiting, and a poll per message would be pure cost on its hot path.
        # The header frame (60 bytes) is copied; the payload frame is taken without a copy.
        sock = self._sock
        out = []
        polled = False
        while len(out) < max_messages:
            try:
                header = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                if out or polled or not sock.poll(int(timeout_s * 1000)):
                    break
                polled = True
                continue
            frames = [header]
            while sock.getsockopt(zmq.RCVMORE):
                frames.append(sock.recv(0, copy=False).buffer)
            out.append(Delivery(frames))
        return out

    def close(self) -> None:
        if self._monitor is not None:
            try:
                self._sock.disable_monitor()
            except zmq.ZMQError:
                pass
            self._monitor.close(0)
            self._monitor = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
