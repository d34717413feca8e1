"""RabbitMQ: one work queue per run, competing consumers with prefetch (pika BlockingConnection).

| property           | value                                                                           |
|--------------------|---------------------------------------------------------------------------------|
| delivery           | at least once: basic_ack after service; a consumer whose connection drops gets  |
|                    | its unacknowledged messages requeued to the others at once                      |
| ordering           | queue order; with N consumers each gets an ordered subsequence (redelivered     |
|                    | messages come back out of order)                                                |
| persistence        | ``durable`` queue + ``persistent`` messages survive a broker restart; the       |
|                    | defaults (transient, as RabbitMQ's own) keep messages in memory                 |
| backlog means      | messages ready in the queue (passive queue_declare ``message_count``); messages |
|                    | prefetched by consumers but not yet acknowledged are not counted                |
| options            | ``prefetch`` = 100, ``durable`` = false, ``persistent`` = false,                |
|                    | ``confirms`` = false, ``heartbeat_s`` = 60, ``queue_type`` = classic,           |
|                    | ``quorum_size`` = 0                                                             |

URL: ``amqp://USER:PASSWORD@HOST:PORT/VHOST`` (``%2F`` is the default vhost ``/``), as pika's URLParameters;
a cluster's nodes as several such URLs, comma-separated: the client connects to the first that answers.

Clusters (``--broker-nodes N``, brokers/rabbitmq/cluster.py): ``queue_type`` = quorum declares the run's
queue as a quorum queue (``x-queue-type: quorum``, always durable; ``quorum_size`` members, 0 = every
node): Raft replicates it, and a publisher confirm means a majority of its members have the message.

Wire: the default exchange routes by queue name; one message body = envelope header + payload (AMQP has
one body per message: one copy to join them, then pika splits it into frames).

Stage B: ``basic_consume`` with a callback that appends to a deque; ``receive`` runs
``connection.process_data_events(time_limit=timeout)``, which sleeps in the socket's select until a
frame arrives (never a polling sleep) and returns as soon as a delivery is ready to dispatch. ``ack``
acknowledges the batch after service (one ``multiple=True`` ack when the batch is all outstanding
deliveries, as it is in the harness).

Why ``prefetch`` defaults to 100 and not RabbitMQ's own (unlimited): with no limit RabbitMQ pushes the
whole queue into the first consumer's socket as fast as it can, so (a) a second replica gets nothing of
a backlog that built up before it asked, (b) the queue depth the broker reports reads 0 while the real
backlog sits in a client's buffer, out of the harness's and the broker's sight, and (c) a consumer's
memory grows with the backlog (150 KB x thousands). 100 keeps the broker-side queue meaningful and is
enough in flight for full rate on loopback. Set ``prefetch=0`` for RabbitMQ's own behaviour.

Publisher confirms (``confirms=true``): each basic_publish waits for the broker's ack, so one message is
in flight at a time; the harness shows the cost as publish delay.

pika's BlockingConnection is not thread-safe: each adapter object owns one connection and one channel,
and is used from one thread (the stage processes each make their own).
"""
from __future__ import annotations

import collections
import time
import urllib.parse

import pika
import pika.exceptions as pexc

from brokers.base import Broker, Delivery, Endpoint, Option
from brokers.rabbitmq.spec import SPEC
from testbed.errors import BrokerError

#: a consumer that finds deliveries waiting runs pika's I/O loop at least this often (timers, heartbeats)
IO_EVERY_S = 1.0


class RabbitMQBroker(Broker):
    spec = SPEC
    @property
    def acknowledged(self) -> bool:
        return bool(self.options["confirms"])  # without publisher confirms nothing answers a publish

    OPTIONS = {
        "prefetch": Option(100, "basic_qos prefetch_count per consumer (0 = unlimited, RabbitMQ's default)", int),
        "durable": Option(False, "declare the queue durable (survives a broker restart)", bool),
        "persistent": Option(False, "publish persistent messages (delivery_mode 2: written to disk)", bool),
        "confirms": Option(False, "publisher confirms: each publish waits for the broker's ack", bool),
        "heartbeat_s": Option(60, "AMQP heartbeat interval in seconds (server proposes 60; 0 = off)", int),
        "queue_type": Option("classic", "classic, or quorum (Raft-replicated over a cluster's nodes; durable)",
                             str, ("classic", "quorum")),
        "quorum_size": Option(0, "a quorum queue's members (x-quorum-initial-group-size; 0 = every node)", int),
    }

    def __init__(self, endpoint: Endpoint):
        super().__init__(endpoint)
        self._conn: pika.BlockingConnection | None = None
        self._ch = None
        self._queue = ""
        self._inbox: collections.deque = collections.deque()
        self._acked_upto = 0
        self._io_at = 0.0  # when receive last ran pika's I/O loop
        self._props = pika.BasicProperties(delivery_mode=2) if self.options["persistent"] else None

    # -- lifecycle ------------------------------------------------------------------------------
    def connect(self, timeout_s: float = 10.0) -> None:
        url = self.endpoint.url
        every = []
        for one in url.split(","):  # a cluster's nodes: the first that answers
            try:
                params = pika.URLParameters(one.strip())
            except Exception as exc:  # noqa: BLE001 - pika raises several kinds for a malformed URL
                raise BrokerError(f"rabbitmq: bad --broker-url {_safe(one)!r}: {_one_line(exc)} "
                                  "(use amqp://USER:PASSWORD@HOST:PORT/VHOST)") from None
            params.connection_attempts = 1
            params.retry_delay = 0
            params.socket_timeout = timeout_s
            params.stack_timeout = timeout_s
            params.blocked_connection_timeout = max(timeout_s, 30.0)
            params.heartbeat = self.options["heartbeat_s"]
            every.append(params)
        where = f"rabbitmq broker at {_safe(url)}"
        try:
            self._conn = pika.BlockingConnection(every if len(every) > 1 else every[0])
            self._ch = self._conn.channel()
        except pexc.ProbableAuthenticationError:
            raise BrokerError(f"{where}: wrong user name or password (login refused)") from None
        except pexc.ProbableAccessDeniedError:
            vhost = urllib.parse.unquote(urllib.parse.urlparse(url).path[1:] or "/") or "/"
            raise BrokerError(f"{where}: access to vhost {vhost!r} refused for this user") from None
        except pexc.AMQPConnectionError as exc:
            raise BrokerError(f"{where} is unreachable or did not answer within {timeout_s:g}s: "
                              f"{_conn_error(exc)}") from None
        except (pexc.AMQPError, OSError) as exc:
            raise BrokerError(f"{where}: {_one_line(exc)}") from None
        if self.options["confirms"]:
            self._ch.confirm_delivery()

    def ensure_topic(self, topic: str, partitions: int) -> None:
        """One queue (replicas compete on it; RabbitMQ has no partitions)."""
        self._declare(topic)

    def _declare(self, queue: str) -> None:
        durable, args = self.options["durable"], None
        if self.options["queue_type"] == "quorum":  # replicated by Raft; RabbitMQ requires it durable
            durable, args = True, {"x-queue-type": "quorum"}
            if self.options["quorum_size"] > 0:
                args["x-quorum-initial-group-size"] = self.options["quorum_size"]
        try:
            self._ch.queue_declare(queue, durable=durable, arguments=args)
        except pexc.ChannelClosedByBroker as exc:
            self._ch = self._conn.channel()
            raise BrokerError(f"rabbitmq: cannot declare queue {queue!r}: {exc.reply_text} "
                              "(an existing queue with other options? use a fresh topic)") from None
        except pexc.AMQPError as exc:
            raise _lost("queue_declare", exc) from None

    def delete_topic(self, topic: str) -> None:
        try:
            self._ch.queue_delete(topic)
        except pexc.AMQPError as exc:
            raise _lost("queue_delete", exc) from None

    def close(self) -> None:
        conn, self._conn, self._ch = self._conn, None, None
        if conn is not None and conn.is_open:
            try:
                conn.close()
            except (pexc.AMQPError, OSError):
                pass

    def server_impl(self) -> str:
        version = self._conn._impl.server_properties.get("version", "?")
        if isinstance(version, bytes):
            version = version.decode()
        return f"rabbitmq {version}"

    # -- producer -------------------------------------------------------------------------------
    def publish(self, topic: str, header: bytes, payload) -> None:
        body = b"".join((header, payload))  # AMQP: one body per message
        try:
            self._ch.basic_publish("", topic, body, self._props, mandatory=self.options["confirms"])
        except pexc.UnroutableError:
            raise BrokerError(f"rabbitmq: message returned unroutable: queue {topic!r} does not exist") from None
        except pexc.NackError:
            raise BrokerError(f"rabbitmq: the broker refused (nacked) a message to {topic!r}") from None
        except pexc.AMQPError as exc:
            raise _lost("basic_publish", exc) from None

    def flush(self) -> None:
        """Everything is written by the time basic_publish returns (and confirmed, with confirms);
        this surfaces a connection that broke after the last publish."""
        try:
            self._conn.process_data_events(0)
        except pexc.AMQPError as exc:
            raise _lost("flush", exc) from None

    # -- consumer -------------------------------------------------------------------------------
    def subscribe(self, topic: str, group: str, consumer_name: str) -> None:
        """``group`` has no meaning here: the consumers of one queue compete."""
        self._queue = topic
        self._declare(topic)
        try:
            self._ch.basic_qos(prefetch_count=self.options["prefetch"])
            self._ch.basic_consume(topic, self._on_message, auto_ack=False)
        except pexc.AMQPError as exc:
            raise _lost("basic_consume", exc) from None

    def _on_message(self, ch, method, properties, body) -> None:
        self._inbox.append(Delivery(body, method.delivery_tag))

    def receive(self, max_messages: int, timeout_s: float) -> list[Delivery]:
        inbox = self._inbox
        try:
            if not inbox:
                self._conn.process_data_events(time_limit=max(0.0, timeout_s))
                self._io_at = time.monotonic()
                if inbox and len(inbox) < max_messages:
                    self._conn.process_data_events(0)  # whatever else already arrived
            elif time.monotonic() - self._io_at > IO_EVERY_S:
                # a consumer that always finds deliveries waiting does no I/O of its own: serve pika's
                # timers (heartbeats) and read what came, now and then
                self._conn.process_data_events(0)
                self._io_at = time.monotonic()
        except pexc.AMQPError as exc:
            raise _lost("receive", exc) from None
        if max_messages == 1 and inbox:
            return [inbox.popleft()]
        n = min(max_messages, len(inbox))
        return [inbox.popleft() for _ in range(n)]

    def ack(self, deliveries: list[Delivery]) -> None:
        """One ``basic_ack`` (multiple when the batch is every outstanding delivery, in order) per batch,
        or one per message (``per-message``), each frame written to the socket at once, without
        pika's flush: that runs its I/O loop, which also reads and parses whatever deliveries have
        arrived meanwhile (the next messages' bytes, read inside the ack call). per-batch and
        per-message return once the kernel has the frame (pika's flush finishes a write the socket did
        not take whole); async returns at once and leaves such a rest to pika's next I/O."""
        if not deliveries:
            return
        ch = self._ch._impl
        mode = self.ack_mode
        try:
            if mode == "per-message":
                for d in deliveries:
                    ch.basic_ack(d.token)
                    self._write(True)
                return
            tags = [d.token for d in deliveries]
            if tags[0] == self._acked_upto + 1 and tags[-1] - tags[0] == len(tags) - 1:
                ch.basic_ack(tags[-1], multiple=True)  # exactly the outstanding ones, in order
                self._acked_upto = tags[-1]
            else:
                for tag in tags:
                    ch.basic_ack(tag)
            self._write(mode != "async")
        except pexc.AMQPError as exc:
            raise _lost("basic_ack", exc) from None

    def _write(self, wait: bool) -> None:
        """Hand pika's outgoing bytes to the socket now (a non-blocking send); with ``wait``, finish
        what the socket did not take (pika's own flush)."""
        impl = self._conn._impl
        transport = impl._transport
        if transport is None or not impl._get_write_buffer_size():
            return
        transport._on_socket_writable()
        if impl._get_write_buffer_size():
            if wait:
                self._ch._flush_output()
        elif self._conn.is_closed or self._ch.is_closed:
            self._ch._flush_output()  # raises the error pika recorded

    # -- broker-side figures --------------------------------------------------------------------
    def broker_backlog(self, topic: str, group: str) -> int | None:
        try:
            ok = self._ch.queue_declare(topic, passive=True)
        except pexc.ChannelClosedByBroker:
            self._ch = self._conn.channel()  # 404: the queue is gone
            return None
        return int(ok.method.message_count)


def _lost(what: str, exc: BaseException) -> BrokerError:
    return BrokerError(f"rabbitmq: {what} failed, connection to the broker lost or refused: "
                       f"{_conn_error(exc)}")


def _conn_error(exc: BaseException) -> str:
    """pika nests the real cause (refused, timed out, reset) in its exception's args."""
    inner = exc
    while getattr(inner, "args", None) and isinstance(inner.args[0], BaseException):
        inner = inner.args[0]
    text = " ".join((str(inner) or repr(inner)).split())
    if "ConnectionRefusedError" in text:
        return "connection refused (nothing listens there)"
    return text if text.startswith(type(inner).__name__) else f"{type(inner).__name__}: {text}"


def _safe(url: str) -> str:
    """The URL without its password, for messages (each of a cluster's URLs)."""
    if "," in url:
        return ",".join(_safe(u) for u in url.split(","))
    try:
        p = urllib.parse.urlsplit(url)
        p.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return url.split("@")[-1] if "@" in url else url
    if p.password is None:
        return url
    netloc = f"{p.username}:***@{p.hostname}" + (f":{p.port}" if p.port else "")
    return urllib.parse.urlunsplit((p.scheme, netloc, p.path, p.query, p.fragment))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
