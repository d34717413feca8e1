"""In-process queue: the no-serialisation baseline.

| property           | value                                                                    |
|--------------------|--------------------------------------------------------------------------|
| delivery           | exactly once while the process lives; nothing survives it                |
| ordering           | FIFO for one consumer; competing consumers take turns from one queue     |
| persistence        | none (memory of the one process)                                         |
| backlog means      | envelopes in the queue (``qsize``)                                       |
| stages             | threads of the orchestrator's process (no serialisation, one GIL)        |
| options            | none                                                                     |

The envelope object itself is queued: no header is encoded and no payload copied, so this broker
shows what the harness and the stages cost without any transport. With ``--service-mode spin`` the
stages share one GIL, which is what an in-process Python pipeline really gets.
"""
from __future__ import annotations

import queue
import threading

from brokers.base import Broker, Delivery, Endpoint
from brokers.inproc.spec import SPEC

_QUEUES: dict[str, queue.SimpleQueue] = {}
_LOCK = threading.Lock()


def _queue(url: str, topic: str) -> queue.SimpleQueue:
    key = f"{url}/{topic}"
    with _LOCK:
        q = _QUEUES.get(key)
        if q is None:
            q = _QUEUES[key] = queue.SimpleQueue()
        return q


class InprocBroker(Broker):
    spec = SPEC

    def __init__(self, endpoint: Endpoint):
        super().__init__(endpoint)
        self._q = None
        self._topic = None

    def connect(self, timeout_s: float = 10.0) -> None:
        pass

    def ensure_topic(self, topic: str, partitions: int) -> None:
        _queue(self.endpoint.url, topic)

    def delete_topic(self, topic: str) -> None:
        with _LOCK:
            _QUEUES.pop(f"{self.endpoint.url}/{topic}", None)

    def close(self) -> None:
        self._q = None

    def publish(self, topic: str, header: bytes, payload) -> None:
        _queue(self.endpoint.url, topic).put([header, payload])

    def publish_envelope(self, topic: str, env) -> None:
        q = self._q if self._topic == topic else None
        if q is None:
            q = self._q = _queue(self.endpoint.url, topic)
            self._topic = topic
        q.put(env)

    def subscribe(self, topic: str, group: str, consumer_name: str) -> None:
        self._q = _queue(self.endpoint.url, topic)
        self._topic = topic

    def receive(self, max_messages: int, timeout_s: float) -> list[Delivery]:
        q = self._q
        try:
            first = q.get(timeout=timeout_s)
        except queue.Empty:
            return []
        out = [Delivery(first)]
        while len(out) < max_messages:
            try:
                out.append(Delivery(q.get_nowait()))
            except queue.Empty:
                break
        return out

    def broker_backlog(self, topic: str, group: str) -> int | None:
        return _queue(self.endpoint.url, topic).qsize()
