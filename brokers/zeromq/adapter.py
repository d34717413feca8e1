"""ZeroMQ PUSH/PULL: an embedded, brokerless transport (pyzmq).

| property           | value                                                                        |
|--------------------|------------------------------------------------------------------------------|
| delivery           | at most once: no acknowledgement; a consumer that dies loses what it buffered |
| ordering           | FIFO per consumer; PUSH deals messages round-robin over connected consumers   |
| persistence        | none (socket buffers in the two processes)                                   |
| backlog means      | messages queued in socket buffers: not observable, so only the harness's own  |
| options            | ``hwm`` = 0, ``copy_threshold`` = 10240, ``spin_us`` = 100,                   |
|                    | ``receiver`` = thread                                                         |

Stage A binds a PUSH socket on the endpoint (``tcp://127.0.0.1:PORT`` by default, or ``ipc://``),
each stage B replica connects a PULL socket. Header and payload travel as two frames of one multipart
message; payloads from ``copy_threshold`` bytes up are sent without a copy (pyzmq ``copy=False``).
With several camera streams (``--streams N``) each stream's stage A binds its own endpoint (the run's
URL lists N, comma-separated; stream s binds the s-th) and every PULL socket connects to all of them,
fair-queueing between them: a stream's messages reach each consumer in the order they were sent.

A consumer that finds nothing waiting spins for ``spin_us`` microseconds, checking the socket, before it
sleeps in ``poll``: a message that arrives meanwhile is taken without the wake-up of a sleeping thread
(0 turns the spin off).

``receiver=thread`` (the default) adds a background thread that owns the PULL socket while the consumer
works on a batch: it moves arriving messages into a local queue, so a consumer that was busy (sleeping in
its service) finds its next message already in Python, with no call into libzmq (measured here: a
non-blocking receive right after a 15 ms sleep took 64-100 us at p50, the first calls into libzmq and the
kernel after a sleep being slow on this VM; the queue pop 36 us). A consumer that finds the queue empty
takes the socket back and waits on it itself (the spin, then ``poll``), so a message reaching an idle
consumer wakes it directly, not through the thread. ``receiver=direct``: no thread, ``receive`` always
reads the socket itself.

Why ``hwm`` defaults to 0 (unlimited) and not to ZeroMQ's 1000: with a high-water mark the PUSH socket
blocks when the consumers fall behind, the producer stalls and the backlog moves upstream into stage A,
so ZeroMQ would not do the rate matching the other brokers do. Set ``--broker-opt hwm=1000`` to see
ZeroMQ's own behaviour (the harness then shows it as publish delay); with ``receiver=thread`` the
consumer's local queue has no limit, so add ``receiver=direct`` for ZeroMQ's backpressure end to end.
"""
from __future__ import annotations

import collections
import threading
import time

import zmq
import zmq.utils.monitor

from brokers.base import Broker, Delivery, Endpoint, Option, not_reachable
from brokers.zeromq.spec import SPEC
from testbed.errors import BrokerError

_SNDMORE = zmq.SNDMORE


class ZeroMQBroker(Broker):
    spec = SPEC
    OPTIONS = {
        "hwm": Option(0, "send/receive high-water mark in messages (0 = unlimited)", int),
        "copy_threshold": Option(10240, "payloads of at least this many bytes are sent without a copy", int),
        "spin_us": Option(100, "microseconds a consumer that finds nothing waiting checks the socket before it "
                               "sleeps in poll (0: sleep at once)", int),
        "receiver": Option("thread", "thread: while the consumer is busy a background thread moves arriving "
                                     "messages into a local queue; direct: receive always reads the socket itself",
                           str, ("thread", "direct")),
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
        self._spin_ns = 0
        self._pump = None
        self._copy_min = self.options["copy_threshold"]  # payloads this big go without a copy

    def connect(self, timeout_s: float = 10.0) -> None:
        self._ctx = zmq.Context.instance()

    def _producer_socket(self):
        if self._sock is None:
            sock = self._ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.SNDHWM, self.options["hwm"])
            sock.setsockopt(zmq.LINGER, 2000)
            self._monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
            urls = self.endpoint.url.split(",")
            url = urls[self.stream % len(urls)].strip()  # one endpoint per camera stream
            try:
                sock.bind(url)
            except zmq.ZMQError as exc:
                sock.close(0)
                raise BrokerError(f"zeromq: cannot bind {url}: {exc}") from None
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
        send = (self._sock or self._producer_socket()).send
        nbytes = len(payload) if payload.__class__ is bytes else memoryview(payload).nbytes
        send(header, _SNDMORE)
        send(payload, copy=nbytes < self._copy_min)

    def subscribe(self, topic: str, group: str, consumer_name: str) -> None:
        sock = self._ctx.socket(zmq.PULL)
        sock.setsockopt(zmq.RCVHWM, self.options["hwm"])
        sock.setsockopt(zmq.LINGER, 0)
        for url in self.endpoint.url.split(","):  # every camera stream's stage A
            sock.connect(url.strip())
        self._sock = sock
        self._spin_ns = max(0, self.options["spin_us"]) * 1000
        if self.options["receiver"] == "thread":
            self._pump = _Pump(self._ctx, sock, self._receive_direct)
            self.receive = self._pump.receive

    def receive(self, max_messages: int, timeout_s: float) -> list[Delivery]:
        return self._receive_direct(max_messages, timeout_s)  # receiver=thread: replaced in subscribe

    def _receive_direct(self, max_messages: int, timeout_s: float) -> list[Delivery]:
        # Try a non-blocking read first and poll only when nothing is there: a consumer that was busy
        # finds its next message waiting, and a poll per message would be pure cost on its hot path.
        # Before it sleeps in poll it spins briefly (``spin_us``), so a message arriving just after
        # the consumer became idle does not pay a sleeping thread's wake-up.
        # The header frame (64 bytes) is copied; the payload frame is taken without a copy.
        sock = self._sock
        out = []
        polled = False
        while len(out) < max_messages:
            try:
                header = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                if out or polled:
                    break
                polled = True
                if self._spin_ns and self._spin(sock):
                    continue
                if not sock.poll(int(timeout_s * 1000)):
                    break
                continue
            frames = [header]
            while sock.getsockopt(zmq.RCVMORE):
                frames.append(sock.recv(0, copy=False).buffer)
            out.append(Delivery(frames))
        return out

    def _spin(self, sock) -> bool:
        """Check the socket for up to ``spin_us``; True when a message came."""
        events, POLLIN, now = sock.getsockopt, zmq.POLLIN, time.monotonic_ns
        end = now() + self._spin_ns
        while now() < end:
            if events(zmq.EVENTS) & POLLIN:
                return True
        return False

    def close(self) -> None:
        if self._pump is not None:
            self._pump.stop()
            self._pump = None
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


class _Pump:
    """``receiver=thread``: the consumer's PULL socket, read by whichever thread owns it.

    While the consumer works on a batch (sleeping in its service, say), a background thread owns the
    socket and moves arriving messages into a local queue, so the next ``receive`` pops them with no call
    into libzmq. When the queue is empty the consumer takes the socket back (a byte on an inproc PAIR
    wakes the thread out of its poll; on the way to going idle, so it costs no waiting message anything)
    and reads the socket itself, spinning briefly and then sleeping in ``poll`` as ``receiver=direct``
    does: a message reaching an idle consumer wakes it directly, not through the thread. Once a receive
    returns messages the socket goes back to the thread. Only the owner touches the socket (ZeroMQ sockets
    are not thread-safe; the hand-over is under a lock, a full memory barrier)."""

    HANDOFF = 256  # messages moved per hand-over at most: a flood must not starve the consumer

    def __init__(self, ctx, sock, direct):
        self.sock, self.direct = sock, direct
        self.queue: collections.deque = collections.deque()
        self.cv = threading.Condition()
        self.owner = "main"
        self.error: BaseException | None = None
        self._stop = False
        addr = f"inproc://testbed-receiver-{id(self):x}"
        self.ctrl_in = ctx.socket(zmq.PAIR)   # the thread's end
        self.ctrl_in.bind(addr)
        self.ctrl_out = ctx.socket(zmq.PAIR)  # the consumer's end
        self.ctrl_out.connect(addr)
        self.thread = threading.Thread(target=self._run, name="zeromq-receiver", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        sock, ctrl, queue, cv, again = self.sock, self.ctrl_in, self.queue, self.cv, zmq.Again
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(ctrl, zmq.POLLIN)
        try:
            while True:
                with cv:
                    while self.owner != "pump" and not self._stop:
                        cv.wait()
                if self._stop:
                    return
                while True:  # own the socket until the consumer asks for it back
                    ready = dict(poller.poll())
                    if sock in ready:
                        got = []
                        while len(got) < self.HANDOFF:
                            try:
                                header = sock.recv(zmq.NOBLOCK)
                            except again:
                                break
                            frames = [header]
                            while sock.getsockopt(zmq.RCVMORE):
                                frames.append(sock.recv(0, copy=False).buffer)
                            got.append(Delivery(frames))
                        if got:
                            queue.extend(got)
                    if ctrl in ready:
                        ctrl.recv()
                        break
                with cv:
                    self.owner = "main"
                    cv.notify_all()
        except zmq.ZMQError as exc:
            with cv:
                self.error = None if self._stop else exc
                self.owner = "main"
                cv.notify_all()

    def receive(self, max_messages: int, timeout_s: float) -> list[Delivery]:
        queue = self.queue
        if not queue and self.owner == "pump":  # nothing prefetched: take the socket back
            self.ctrl_out.send(b"")
            with self.cv:
                while self.owner != "main":
                    self.cv.wait()
        if self.error is not None:
            raise BrokerError(f"zeromq: receive failed: {self.error}")
        if queue:
            popleft = queue.popleft
            out = [popleft() for _ in range(min(max_messages, len(queue)))]
        else:
            out = self.direct(max_messages, timeout_s)
        if out and self.owner == "main":  # busy ahead: the thread prefetches meanwhile
            with self.cv:
                self.owner = "pump"
                self.cv.notify()
        return out

    def stop(self) -> None:
        with self.cv:
            self._stop = True
            pumping = self.owner == "pump"
            self.cv.notify_all()
        if pumping:
            try:
                self.ctrl_out.send(b"", zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
        self.thread.join(2.0)
        self.ctrl_out.close(0)
        self.ctrl_in.close(0)
