"""NATS JetStream: one work-queue stream per run and one durable pull consumer shared by the replicas
(nats-py).

| property           | value                                                                          |
|--------------------|--------------------------------------------------------------------------------|
| delivery           | at least once: each publish waits for the stream's PubAck, each message is     |
|                    | acked after service; what a dead consumer held comes back after ``ack_wait_s`` |
| ordering           | one stream: publish order; with N consumers each gets an ordered subsequence   |
|                    | (redelivered messages come back out of order)                                  |
| persistence        | ``storage`` = file (the stream survives a broker restart) or memory            |
| backlog means      | the consumer's ``num_pending`` (not yet delivered) + ``num_ack_pending``       |
|                    | (delivered, not yet acked); before the consumer exists, the stream's message   |
|                    | count, which on a work-queue stream is the same thing                          |
| options            | ``storage`` = file, ``ack_wait_s`` = 30, ``max_ack_pending`` = 1000,           |
|                    | ``fetch_max_bytes`` = 16 MiB, ``publish`` = acked, ``async_window`` = 256,     |
|                    | ``reply_timeout_s`` = 10, ``replicas`` = 1                                     |

URL: ``nats://[USER:PASSWORD@]HOST:PORT`` (``tls://`` for TLS), as nats-py takes it; a cluster's servers
comma-separated (``nats://h1:p1,nats://h2:p2``): the client connects to the first that answers.

Clusters (``--broker-nodes N``, brokers/nats/cluster.py): the stream is made with ``replicas`` = N
(``num_replicas``: JetStream replicates it over N servers with Raft, and a PubAck means a majority stored
it); while the cluster forms, stream creation is retried (JetStream answers "insufficient resources"
until enough servers have joined).

Names: the stream is named after the topic with ``.``, ``*``, ``>``, ``/``, ``\\`` and spaces replaced by
``_`` (JetStream names exclude them); its one subject is the topic itself. The durable consumer is named
after the group the same way. ``partitions`` has no meaning: the replicas compete on one consumer.

Why work-queue retention and not limits: a work-queue stream deletes a message once it is acked, so the
store holds exactly the backlog (a limits stream would keep every message of the run on disk until the
topic is deleted) and its message count is the backlog even before a consumer exists. It allows one
consumer per subject, which is what competing replicas share. The first ``subscribe`` makes the consumer
(deliver all, explicit ack); messages published before that wait in the stream.

Stage B: ``receive`` sends one pull request ``{"batch": max, "max_bytes": fetch_max_bytes, "expires":
timeout, "no_wait": true}``: the server answers at once with what is there (up to the batch) and a
status that ends the request, or, when there is nothing, holds the request until the first message
arrives or ``expires`` passes (never a polling sleep). ``ack`` sends one ``PUB <ack subject> 0`` per
delivery, all in one write; ``--ack`` says what it waits for: per-batch (the default) gives the last one a
reply subject and waits for JetStream's reply, per-message waits for each one's (nats-py's ``ack_sync``),
async for none (nats-py's ``Msg.ack``).

Why the consumer's window is bounded in bytes (``fetch_max_bytes``) while ``max_ack_pending`` stays at
JetStream's 1000: the server writes into a connection only what a pull asked for, so what can pile up in
its 64 MB per-connection buffer is one pull's worth, which ``max_bytes`` caps whatever the message size
(16 MiB: about 110 messages of 150 KB; a message larger than that comes alone, in a pull of one). A push
consumer is sent up to ``max_ack_pending`` messages at once, and 1000 x 150 KB overflows that buffer:
the server drops them as a slow consumer and they come back only after ``ack_wait``. Here
``max_ack_pending`` bounds the messages delivered but not acked, all replicas together (batches in
service, or held by a consumer that died): it must exceed replicas x batch size or it throttles the run,
and a pull held back by it shows as backlog, never as a loss.

Publishing (``publish``): ``acked`` (default) waits for each message's PubAck, one round trip per message:
nothing counts as sent that the stream has not stored. ``async`` sends without waiting and checks the
PubAcks as they come back (at most ``async_window`` outstanding; ``flush`` waits for all and raises on
the first refusal): still at least once, checked in bulk instead of per message.

The event loop: nats-py is asyncio-only and the harness is synchronous. Each adapter owns a private event
loop and runs it in the caller's thread for the length of each call (``run_until_complete``), so nothing
runs between calls: no second thread competes for the GIL with a stage that spins, and no call pays a
hand-over to a loop thread and back. Between calls the connection is not served: PINGs are answered at
the next call, which is fine for calls at least every minute or two (the server drops a connection
after two unanswered PINGs, two minutes apart).

The hot path (publish, pull request, ack) writes its protocol lines itself through the client's transport
instead of ``Client.publish``: nats-py builds each command as ``line + payload + CRLF``, two copies into
fresh large buffers, and wants header and payload joined first (a third). Here a message is one
``b"".join`` of line, header, payload and CRLF. Everything else (connect, subscriptions, the PubAck and
pull replies, JetStream management) is nats-py's ordinary API. No reconnect: a broker that dies fails the
run at once, with one line.
"""
from __future__ import annotations

import asyncio
import collections
import json
import re
import time
import urllib.parse

import nats
import nats.errors as nerr
import nats.js.errors as jerr
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StorageType, StreamConfig

from brokers.base import Broker, Delivery, Endpoint, Option, not_reachable
from brokers.nats.spec import SPEC
from testbed.errors import BrokerError

_CRLF = b"\r\n"
_BAD_NAME = re.compile(r"[.*>/\\\s]")
#: pull request answers that end the request normally (no messages / request done)
_END = ("404", "408")
#: how long after ``expires`` a pull waits for the server's end-of-request before giving up on it. The
#: server ends a pull on time (measured here under a vision run's load on 2 cores: 1.3 ms late at p50,
#: 15 ms at most over 888 pulls), but nats-server before 2.9.16 (Debian 12 ships 2.9.10) sometimes ends
#: none: a pull that expires just as a message arrives is dropped without its 408 (nats-server pull
#: request 3942, "Fix Pull Consumer not sending request timeout"). Every such pull stalls the consumer for
#: this long while messages wait in the stream: 250 ms gave NATS its quarter-second hop (docs/nats.md).
_PULL_GRACE_S = 0.02
_MiB = 1 << 20


class NatsBroker(Broker):
    spec = SPEC
    OPTIONS = {
        "storage": Option("file", "where the stream keeps messages", str, ("file", "memory")),
        "ack_wait_s": Option(30.0, "redeliver a message not acked this many seconds after delivery "
                                   "(JetStream's default; must exceed the longest batch service)", float),
        "max_ack_pending": Option(1000, "messages delivered but not acked, all replicas together, before the "
                                        "consumer stops delivering (JetStream's default)", int),
        "fetch_max_bytes": Option(16 * _MiB, "bytes one pull request may bring (a larger message comes "
                                             "alone); bounds what the server queues for one connection "
                                             "in its 64 MB buffer", int),
        "publish": Option("acked", "acked: each publish waits for its PubAck; async: PubAcks are checked "
                                   "as they come back and by flush", str, ("acked", "async")),
        "async_window": Option(256, "publish=async: at most this many PubAcks outstanding", int),
        "reply_timeout_s": Option(10.0, "give up on a broker reply (PubAck, JetStream API) after this "
                                        "many seconds", float),
        "replicas": Option(1, "the stream's num_replicas: servers of a cluster that store it (1 to 5)", int),
    }

    def __init__(self, endpoint: Endpoint):
        super().__init__(endpoint)
        for key in ("ack_wait_s", "reply_timeout_s"):
            if self.options[key] <= 0:
                raise BrokerError(f"nats: --broker-opt {key}={self.options[key]:g} must be > 0")
        if not 1 <= self.options["replicas"] <= 5:
            raise BrokerError(f"nats: --broker-opt replicas={self.options['replicas']} must be 1 to 5 "
                              "(JetStream's limit)")
        for key in ("max_ack_pending", "fetch_max_bytes", "async_window"):
            if self.options[key] < 1:
                raise BrokerError(f"nats: --broker-opt {key}={self.options[key]} must be >= 1")
        self._acked = self.options["publish"] == "acked"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._nc = None
        self._jsm = None
        self._tr = None  # nats-py's transport: the hot path writes here
        self._buffered = None  # bytes the asyncio transport holds back (socket full), or None
        self._inbox = ""
        self._lost = ""  # why the connection is gone
        self._closing = False
        # producer
        self._subject_cache: dict[str, bytes] = {}
        self._pa_seq = 0
        self._pa_token = ""  # publish=acked: the reply subject of the PubAck awaited
        self._pa_upto = 0  # publish=async: wake the waiter once this few PubAcks are outstanding
        self._pa_wait: asyncio.Future | None = None
        self._pa_error = ""
        self._outstanding = 0
        # consumer
        self._stream = ""
        self._consumer = ""
        self._next = b""  # PUB line prefix of this consumer's pull requests
        self._pull_seq = 0
        self._pull_token = ""
        self._pull_wait: asyncio.Future | None = None
        self._ack_seq = 0  # --ack per-batch / per-message: the reply awaited
        self._ack_token = ""
        self._ack_wait: asyncio.Future | None = None
        self._pull_max = 0
        self._got: list[Delivery] = []
        self._stale: collections.deque = collections.deque()  # answers to a request given up on
        self._max_bytes = 0

    # -- the private event loop -----------------------------------------------------------------
    def _run(self, aw, what: str, timeout_s: float | None = None):
        """Run ``aw`` on this adapter's loop, in this thread; every failure becomes one clear line."""
        if self._loop is None:
            raise BrokerError(f"nats: {what}: not connected (call connect first)")
        if timeout_s is not None:
            aw = asyncio.wait_for(aw, timeout_s)
        try:
            return self._loop.run_until_complete(aw)
        except BrokerError:
            raise
        except jerr.NotFoundError as exc:
            raise BrokerError(f"nats: {what}: {_describe(exc)}") from None
        except jerr.APIError as exc:
            raise BrokerError(f"nats: {what} refused by JetStream: {_describe(exc)}") from None
        except (nerr.NoRespondersError, jerr.NoStreamResponseError):
            raise BrokerError(f"nats: {what}: JetStream did not answer (is nats-server running with -js?)") from None
        except (asyncio.TimeoutError, nerr.TimeoutError):
            raise BrokerError(f"nats: {what}: no answer from the broker within "
                              f"{timeout_s or self.options['reply_timeout_s']:g}s") from None
        except (nerr.Error, OSError) as exc:
            if self._lost:
                raise self._lost_error(what) from None
            raise BrokerError(f"nats: {what} failed: {_one_line(exc)}") from None

    def _wait(self, fut: asyncio.Future, timeout_s: float, what: str = ""):
        """Run the loop until a callback resolves ``fut``, or ``timeout_s`` passes: then raise that
        ``what`` got no answer (without ``what``: return ``_EXPIRED``)."""
        loop = self._loop
        timer = loop.call_later(timeout_s, _expire, fut, what, timeout_s)
        try:
            return loop.run_until_complete(fut)
        finally:
            timer.cancel()

    def _write(self, data: bytes, drain: bool = True) -> None:
        """Hand protocol bytes to the socket now, in order with what nats-py queued itself."""
        nc = self._nc
        if self._lost or nc is None or not nc.is_connected:
            raise self._lost_error("write")
        if nc.pending_data_size:  # nats-py has bytes queued for its flusher: queue behind them
            self._run(_queue(nc, data), "write")
        else:
            self._tr.write(data)
        if drain and (self._buffered is None or self._buffered()):
            self._run(self._tr.drain(), "write", self.options["reply_timeout_s"])

    # -- lifecycle ------------------------------------------------------------------------------
    def connect(self, timeout_s: float = 10.0) -> None:
        url = self.endpoint.url
        where = f"nats broker at {_safe(url)}"
        servers = [u.strip() for u in url.split(",")]
        for u in servers:
            _check_url(u)
        self._loop = asyncio.new_event_loop()
        errors: list[BaseException] = []

        async def on_error(exc):
            errors.append(exc)

        async def on_disconnect():
            if not self._closing:
                self._connection_lost(_one_line(errors[-1]) if errors else "the broker closed the connection")

        try:
            self._nc = self._loop.run_until_complete(asyncio.wait_for(nats.connect(
                servers=servers, allow_reconnect=False, dont_randomize=True, max_reconnect_attempts=1, reconnect_time_wait=0.05,
                connect_timeout=timeout_s, error_cb=on_error, disconnected_cb=on_disconnect,
                name="testbed"), timeout_s + 0.5))
        except (asyncio.TimeoutError, nerr.TimeoutError):
            self._close_loop()
            raise not_reachable(self.name, _safe(url), timeout_s, "no answer") from None
        except Exception as exc:  # noqa: BLE001 - nats-py raises its own and OS errors alike
            self._close_loop()
            why = errors[-1] if errors and isinstance(exc, nerr.NoServersError) else exc
            text = _one_line(why)
            if "authorization violation" in text.lower():
                if urllib.parse.urlsplit(servers[0]).username is None:
                    raise BrokerError(f"{where} needs a user name and password: put them in the URL "
                                      "(nats://USER:PASSWORD@HOST:PORT)") from None
                raise BrokerError(f"{where}: wrong user name or password (Authorization Violation)") from None
            if isinstance(why, ConnectionRefusedError):
                text = "connection refused (nothing listens there)"
            raise not_reachable(self.name, _safe(url), timeout_s, text) from None
        nc = self._nc
        if not nc._server_info.get("jetstream"):
            self.close()
            raise BrokerError(f"{where} has JetStream off: start nats-server with -js")
        self._tr = nc._transport
        raw = getattr(getattr(self._tr, "_io_writer", None), "transport", None)
        if raw is not None and hasattr(raw, "get_write_buffer_size"):
            raw.set_write_buffer_limits(high=0)  # drain() then waits until every byte left the client
            self._buffered = raw.get_write_buffer_size
        self._inbox = nc.new_inbox()
        self._jsm = nc.jsm(timeout=self.options["reply_timeout_s"])
        self._run(nc.subscribe(f"{self._inbox}.a.*", cb=self._on_puback), "subscribe")

    def _connection_lost(self, why: str) -> None:
        self._lost = why
        for fut in (self._pa_wait, self._pull_wait, self._ack_wait):
            if fut is not None and not fut.done():
                fut.set_exception(self._lost_error("waiting for the broker"))

    def _lost_error(self, what: str) -> BrokerError:
        why = self._lost or "not connected"
        return BrokerError(f"nats: {what} failed, connection to the broker lost: {why}")

    def ensure_topic(self, topic: str, partitions: int) -> None:
        """One work-queue stream whose subject is the topic (see the module docstring)."""
        _check_subject(topic)
        storage = StorageType.FILE if self.options["storage"] == "file" else StorageType.MEMORY
        cfg = StreamConfig(name=_name(topic), subjects=[topic], retention=RetentionPolicy.WORK_QUEUE,
                           storage=storage, num_replicas=self.options["replicas"])
        what = f"create stream {cfg.name!r}" + (f" with {cfg.num_replicas} replicas" if cfg.num_replicas > 1 else "")
        deadline = time.monotonic() + 2 * self.options["reply_timeout_s"]
        while True:
            try:
                self._run(self._jsm.add_stream(cfg), what)
                return
            except BrokerError as exc:
                # a cluster still forming (or electing) cannot place the replicas yet: try again
                if cfg.num_replicas == 1 or time.monotonic() > deadline or not _transient(str(exc)):
                    raise
            time.sleep(0.25)

    def delete_topic(self, topic: str) -> None:
        try:
            self._run(self._jsm.delete_stream(_name(topic)), f"delete stream {_name(topic)!r}")
        except BrokerError as exc:
            if "not found" not in str(exc).lower():
                raise

    def close(self) -> None:
        nc, self._nc = self._nc, None
        self._closing = True
        if nc is not None and self._loop is not None:
            try:
                self._loop.run_until_complete(asyncio.wait_for(nc.close(), 5.0))
            except BaseException:  # noqa: BLE001 - closing: nothing left to report to
                pass
        self._close_loop()

    def _close_loop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None or loop.is_closed():
            return
        try:
            tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in tasks:
                t.cancel()
            if tasks:
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        except BaseException:  # noqa: BLE001
            pass
        finally:
            loop.close()

    def server_impl(self) -> str:
        version = self._nc._server_info.get("version", "?") if self._nc is not None else "?"
        return f"nats-server {version}"

    # -- producer -------------------------------------------------------------------------------
    def publish(self, topic: str, header: bytes, payload) -> None:
        subject = self._subject_cache.get(topic)
        if subject is None:
            _check_subject(topic)
            subject = self._subject_cache[topic] = topic.encode()
        size = len(header) + (len(payload) if type(payload) is bytes else memoryview(payload).nbytes)
        nc = self._nc
        if nc is None:
            raise BrokerError("nats: publish: not connected (call connect first)")
        if size > nc.max_payload:
            raise BrokerError(f"nats: a message of {size} bytes exceeds the server's max_payload of "
                              f"{nc.max_payload} bytes (raise max_payload in nats-server's config, up to 64 MB)")
        self._pa_seq += 1
        token = f"{self._inbox}.a.{self._pa_seq}"
        cmd = b"".join((b"PUB %s %s %d\r\n" % (subject, token.encode(), size), header, payload, _CRLF))
        if self._acked:
            fut = self._pa_wait = self._loop.create_future()
            self._pa_token = token
            self._write(cmd, drain=False)  # the PubAck comes after the server has every byte
            self._wait(fut, self.options["reply_timeout_s"], f"PubAck for a message to {topic!r}")
            return
        if self._pa_error:
            raise BrokerError(self._pa_error)
        self._outstanding += 1
        self._write(cmd)
        if self._outstanding >= self.options["async_window"]:
            self._wait_acks(self.options["async_window"] // 2, f"PubAcks for messages to {topic!r}")

    def _wait_acks(self, upto: int, what: str) -> None:
        if self._outstanding > upto:
            fut = self._pa_wait = self._loop.create_future()
            self._pa_upto = upto
            self._wait(fut, self.options["reply_timeout_s"], what)
        if self._pa_error:
            raise BrokerError(self._pa_error)

    async def _on_puback(self, msg) -> None:
        err = ""
        if msg.headers and msg.headers.get("Status") == "503":
            err = "nats: publish refused: no stream takes this subject (was ensure_topic run? stream deleted?)"
        elif b'"error"' in msg.data:
            try:
                e = json.loads(msg.data)["error"]
                err = f"nats: the stream refused a message: {e.get('description', e)} (code {e.get('err_code')})"
            except (ValueError, KeyError, TypeError, AttributeError):
                err = f"nats: the stream refused a message: {bytes(msg.data[:200])!r}"
        fut = self._pa_wait
        if self._acked:
            if fut is not None and not fut.done() and msg.subject == self._pa_token:
                if err:
                    fut.set_exception(BrokerError(err))
                else:
                    fut.set_result(None)
            return
        self._outstanding -= 1
        if err and not self._pa_error:
            self._pa_error = err
        if fut is not None and not fut.done() and (err or self._outstanding <= self._pa_upto):
            fut.set_result(None)

    def flush(self) -> None:
        """publish=async: wait until every PubAck is back (raises on the first refusal)."""
        if self._nc is None:
            return
        if not self._acked:
            self._wait_acks(0, "PubAcks of the published messages")
        elif self._lost:
            raise self._lost_error("flush")

    # -- consumer -------------------------------------------------------------------------------
    def subscribe(self, topic: str, group: str, consumer_name: str) -> None:
        """Bind to the group's durable pull consumer (made here if it does not exist yet); the replica's
        ``consumer_name`` has no role: all replicas of a group share one consumer."""
        _check_subject(topic)
        self._stream, self._consumer = _name(topic), _name(group)
        cfg = ConsumerConfig(durable_name=self._consumer, deliver_policy=DeliverPolicy.ALL,
                             ack_policy=AckPolicy.EXPLICIT, ack_wait=self.options["ack_wait_s"],
                             max_ack_pending=self.options["max_ack_pending"], filter_subject=topic,
                             max_deliver=-1)
        what = f"consumer {self._consumer!r} on stream {self._stream!r}"
        try:
            self._run(self._jsm.consumer_info(self._stream, self._consumer), f"look up {what}")
        except BrokerError as exc:
            if "not found" not in str(exc).lower():
                raise
            try:
                self._run(self._jsm.add_consumer(self._stream, cfg), f"create {what}")
            except BrokerError as exc:
                if "not unique" in str(exc) or "multiple" in str(exc):
                    raise BrokerError(f"{exc} (a work-queue stream takes one consumer: one group per "
                                      "topic)") from None
                raise
        if not self._next:  # the first subscribe: the inboxes that pull answers and ack replies come to
            self._run(self._nc.subscribe(f"{self._inbox}.f.*", cb=self._on_pull), "subscribe")
            self._run(self._nc.subscribe(f"{self._inbox}.k.*", cb=self._on_ack_reply), "subscribe")
        self._next = f"PUB $JS.API.CONSUMER.MSG.NEXT.{self._stream}.{self._consumer} ".encode()
        self._max_bytes = self.options["fetch_max_bytes"]

    def receive(self, max_messages: int, timeout_s: float) -> list[Delivery]:
        stale = self._stale
        if stale:
            return [stale.popleft() for _ in range(min(max_messages, len(stale)))]
        if max_messages < 1:
            return []
        if not self._next:
            raise BrokerError("nats: receive before subscribe")
        expires = max(int(timeout_s * 1e9), 1_000_000)
        got, ended = self._pull(b'{"batch":%d,"max_bytes":%d,"expires":%d,"no_wait":true}'
                                % (max_messages, self._max_bytes, expires), max_messages, expires)
        if ended is _TOO_BIG:  # the next message alone is over fetch_max_bytes: it comes on its own
            got, ended = self._pull(b'{"batch":1,"expires":%d,"no_wait":true}' % expires, 1, expires)
        if ended is _EXPIRED and not got:
            # the server ends every pull it takes; silence means it dropped the end (see _PULL_GRACE_S),
            # nobody took it (the consumer is gone: topic deleted) or the server is stuck: one round trip
            # tells. Late answers, if any, go to _stale.
            self._run(self._jsm.consumer_info(self._stream, self._consumer),
                      f"receive from consumer {self._consumer!r} on stream {self._stream!r}")
        return got

    def _pull(self, body: bytes, max_messages: int, expires_ns: int):
        """One pull request; (deliveries, how it ended: None, _TOO_BIG or _EXPIRED)."""
        self._pull_seq += 1
        token = f"{self._inbox}.f.{self._pull_seq}"
        fut = self._pull_wait = self._loop.create_future()
        self._pull_token, self._pull_max = token, max_messages
        got = self._got = []
        try:
            self._write(b"%s%s %d\r\n%s\r\n" % (self._next, token.encode(), len(body), body), drain=False)
            return got, self._wait(fut, expires_ns / 1e9 + _PULL_GRACE_S)
        finally:
            self._pull_wait = None

    async def _on_pull(self, msg) -> None:
        hdrs = msg.headers
        if hdrs and not msg.data and "Status" in hdrs:  # the server's word on a pull request
            fut = self._pull_wait
            if fut is None or fut.done() or msg.subject != self._pull_token:
                return  # the end of a request already given up on
            code = hdrs["Status"]
            desc = _description(hdrs)
            if code in _END or code == "100":
                if code != "100":
                    fut.set_result(None)
            elif code == "409" and "MaxBytes" in desc:
                fut.set_result(None if self._got else _TOO_BIG)  # the next message would not fit
            else:
                fut.set_exception(BrokerError(
                    f"nats: pull from consumer {self._consumer!r} on stream {self._stream!r} failed: "
                    f"{code} {desc}".rstrip()))
            return
        d = Delivery(msg.data, msg.reply)
        fut = self._pull_wait
        if fut is not None and not fut.done():
            got = self._got
            got.append(d)
            if len(got) >= self._pull_max:
                fut.set_result(None)
        else:
            self._stale.append(d)

    def ack(self, deliveries: list[Delivery]) -> None:
        """An empty message to each delivery's ack subject (JetStream's +ACK), all in one write: async
        waits for nothing (as nats-py's ``Msg.ack``); per-batch gives the batch's last ack a reply subject
        and waits for the server's reply, which comes once it has processed every ack before it (one
        connection's messages are processed in order); per-message waits for each ack's reply in turn
        (nats-py's ``Msg.ack_sync``)."""
        if not deliveries:
            return
        mode = self.ack_mode
        if mode == "async":
            self._write("".join([f"PUB {d.token} 0\r\n\r\n" for d in deliveries]).encode())
        elif mode == "per-message":
            for d in deliveries:
                self._ack_waited(f"PUB {d.token} ", len(deliveries))
        else:
            head = "".join([f"PUB {d.token} 0\r\n\r\n" for d in deliveries[:-1]])
            self._ack_waited(f"{head}PUB {deliveries[-1].token} ", len(deliveries))

    def _ack_waited(self, lead: str, n: int) -> None:
        """Write ``lead`` + this ack's reply subject and an empty body; wait for the server's reply."""
        self._ack_seq += 1
        token = self._ack_token = f"{self._inbox}.k.{self._ack_seq}"
        fut = self._ack_wait = self._loop.create_future()
        try:
            self._write(f"{lead}{token} 0\r\n\r\n".encode(), drain=False)
            self._wait(fut, self.options["reply_timeout_s"], f"the reply to an ack of {n} messages")
        finally:
            self._ack_wait = None

    async def _on_ack_reply(self, msg) -> None:
        fut = self._ack_wait
        if fut is not None and not fut.done() and msg.subject == self._ack_token:
            fut.set_result(None)

    # -- broker-side figures --------------------------------------------------------------------
    def broker_backlog(self, topic: str, group: str) -> int | None:
        stream, consumer = _name(topic), _name(group)
        try:
            info = self._run(self._jsm.consumer_info(stream, consumer), "consumer info")
            return int(info.num_pending or 0) + int(info.num_ack_pending or 0)
        except BrokerError as exc:
            if "not found" not in str(exc).lower():
                raise
        try:  # no consumer yet: on a work-queue stream every stored message is still to be served
            info = self._run(self._jsm.stream_info(stream), "stream info")
        except BrokerError as exc:
            if "not found" in str(exc).lower():
                return None
            raise
        return int(info.state.messages)


_EXPIRED = object()  # a wait that ran out of time
_TOO_BIG = object()  # a pull whose first message was over its max_bytes


def _expire(fut: asyncio.Future, what: str, timeout_s: float) -> None:
    if not fut.done():
        if what:
            fut.set_exception(BrokerError(f"nats: {what}: no answer from the broker within {timeout_s:g}s"))
        else:
            fut.set_result(_EXPIRED)


def _description(hdrs: dict) -> str:
    """A status message's Description header (nats-py keys it by an Enum member, not the string)."""
    for k, v in hdrs.items():
        if getattr(k, "value", k) == "Description":
            return str(v)
    return ""


async def _queue(nc, data: bytes) -> None:
    await nc._send_command(data)
    await nc._flush_pending()


def _name(topic: str) -> str:
    """A JetStream stream or consumer name for ``topic`` (names exclude ``. * > / \\`` and spaces)."""
    return _BAD_NAME.sub("_", topic)


def _check_subject(topic: str) -> None:
    if not topic or any(c in topic for c in " \t\r\n*>") or ".." in topic or topic[0] == "." or topic[-1] == ".":
        raise BrokerError(f"nats: topic {topic!r} is not a NATS subject (dot-separated tokens, "
                          "no spaces, no * or >)")


_TRANSIENT = ("insufficient resources", "no suitable peers", "temporarily unavailable", "no answer",
              "did not answer", "no responders", "timeout")


def _transient(text: str) -> bool:
    """A JetStream refusal that a forming cluster gives before it can place a replicated stream."""
    low = text.lower()
    return any(t in low for t in _TRANSIENT)


def _check_url(url: str) -> None:
    try:
        p = urllib.parse.urlsplit(url)
        p.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        p = None
    if p is None or p.scheme not in ("nats", "tls") or not p.hostname:
        raise BrokerError(f"nats: bad --broker-url {_safe(url)!r} (use nats://[USER:PASSWORD@]HOST:PORT)")


def _describe(exc: jerr.APIError) -> str:
    text = exc.description or type(exc).__name__
    return f"{text} (code {exc.err_code})" if exc.err_code else text


def _safe(url: str) -> str:
    """The URL without its password, for messages (each server of a list)."""
    if "," in url:
        return ",".join(_safe(u) for u in url.split(","))
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in creds else f"{scheme}://***@{host}"
    return url


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
