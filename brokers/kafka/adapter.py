"""Kafka: a topic with one partition per consumer replica, a consumer group, commits after service
(confluent-kafka, i.e. librdkafka). Runs against Apache Kafka (the default) or tansu, a Kafka-protocol broker.

| property      | value                                                                                     |
|---------------|-------------------------------------------------------------------------------------------|
| delivery      | at least once: offsets are committed after service (``ack``); a consumer that dies before   |
|               | its commit has its messages delivered again to the member that takes over its partitions   |
| ordering      | FIFO per partition; messages are dealt to the partitions in turn (``partitioner``), and     |
|               | with N replicas each consumer gets its own partitions, each in order; with several camera  |
|               | streams (``--streams``) each stream's messages carry its key and go to one partition       |
|               | (stream s to partition s mod P), so a stream keeps its order end to end                    |
| persistence   | Apache Kafka: the broker's log on disk (page cache, no fsync per message: Kafka's default); |
|               | tansu memory engine: in memory only, lost when the broker stops                            |
| backlog means | consumer lag of the run's group: sum over partitions of high watermark - committed offset  |
|               | (tansu: unknown, its high watermark is wrong, so None)                                     |
| options       | below; defaults are librdkafka's own (the client in use) except where said                 |

Options (``--broker-opt KEY=VALUE``), with what they do to latency:

| option | default | |
|---|---|---|
| ``acks`` | all | producer waits for the partition leader and its in-sync replicas (one node here: the leader) |
| ``linger.ms`` | 5 | **latency**: the producer holds a batch up to this long to fill it; every message waits up to it. 0 sends at once (more requests, lower rate) |
| ``batch.size`` | 1000000 | bytes per partition batch; a full batch leaves before ``linger.ms`` |
| ``compression.type`` | none | none, gzip, snappy, lz4, zstd (payloads of random bytes do not compress) |
| ``enable.idempotence`` | false | exactly-once per partition on the producer side (librdkafka's default is false) |
| ``fetch.min.bytes`` | 1 | **latency**: the broker answers a fetch once this many bytes are there; 1 = at once |
| ``fetch.wait.max.ms`` | 500 (tansu: 10) | longest a fetch waits when fewer than ``fetch.min.bytes`` are there. Apache Kafka answers a waiting fetch as soon as data arrives, so with ``fetch.min.bytes=1`` this only bounds idle fetches; **tansu polls**, so its latency spreads over 0..fetch.wait.max.ms/2 (why 10 ms there) |
| ``max.poll.interval.ms`` | 300000 | a consumer that does not call receive for this long leaves the group |
| ``session.timeout.ms`` | 45000 (tansu: 6000) | a dead consumer's partitions move after this long; tansu holds every group join for half of it, so 45 s would make a join take 23 s |
| ``heartbeat.interval.ms`` | 3000 | classic protocol: a member hears of a rebalance at its next heartbeat, so a second replica's join takes about this long (measured: 1 consumer assigned in 0.1 s, 2 in 3.2 s) |
| ``group.protocol`` | classic | classic or consumer (KIP-848, the broker assigns; Apache Kafka 4 only: tansu silently delivers nothing, so it is refused there) |
| ``partition.assignment.strategy`` | range,roundrobin | classic protocol's assignors |
| ``auto.offset.reset`` | earliest | *not* Kafka's ``latest``: the run's group is new, and a consumer that joins after the first messages (or takes over from a dead one) must not skip them |
| ``message.max.bytes`` | 67109888 | *not* librdkafka's 1000000: the testbed carries messages up to 64 MiB (+ 1 KiB of record overhead); the topic is created with the same ``max.message.bytes`` |
| ``socket.nagle.disable`` | true | *not* librdkafka's false: Kafka's own Java client and broker always disable Nagle; with it on a small request can wait for a delayed ACK |
| ``partitioner`` | round_robin | (one camera stream; with several, each stream is keyed to its own partition) *not* librdkafka's sticky partitioner: messages carry no key, and sticky sends a whole batch (up to ``sticky.partitioning.linger.ms``, 10 ms) to one partition, so with N replicas one replica gets bursts while the others idle (measured: 400 quick messages over 2 partitions went 400/0). round_robin deals them in turn, as RabbitMQ and Redis groups do |
| ``replication_factor`` | 1 | replicas of each partition of the run's topic (a cluster of N nodes sets N: brokers/kafka/cluster.py) |
| ``ack_times`` | false (at least once: true) | note when each acknowledgement arrives (a delivery report for every message, about 1 us each, in 10 ms bins): the producer's calls return before the broker acknowledges, so without it ``unavailable_s`` cannot see a failover |
| ``min_insync_replicas`` | 0 | the topic's ``min.insync.replicas`` (0 = the broker's, 1): with acks=all a produce fails unless this many replicas are in sync (a cluster sets N-1) |

Which matter for latency: ``linger.ms`` (every message may wait that long in the producer), ``fetch.min.bytes``
and on tansu ``fetch.wait.max.ms``, ``acks`` (all waits for the log append), and ``--ack`` (per-batch, the default,
waits for a synchronous commit of each batch: a round trip to the group coordinator; async does not; what the
``commit`` option of earlier rounds chose)
per batch in the consumer's service loop). ``session.timeout.ms`` decides how long a crashed consumer's
messages wait.

The first assignment of a consumer group takes a moment (a join, a sync): ``wait_assigned`` returns only
once this consumer has partitions, and from then until its first ``receive`` a background thread keeps
serving the group protocol, so a replica that is ready and waiting for the start does not stall the
rebalance a later replica's join causes (the messages it takes meanwhile are kept and returned first).

tansu 0.6.0 (``--broker-impl tansu``), known gaps (measured here; see docs/kafka.md):
- memory engine only in this build: keeps every message until the topic is deleted (RSS grows ~300 MB per
  2,000 x 150 KB), loses everything on restart;
- group joins are held for session.timeout.ms/2 (hence 6000 ms); ~10 s after a SIGKILLed member;
- fetch wait is polled (latency spreads over 0..fetch.wait.max.ms/2; an idle consumer at 1 ms costs the
  broker 12% of a core): hence fetch.wait.max.ms=10 by default there;
- high watermark and list_offsets are wrong: ``broker_backlog`` is None;
- KIP-848 (group.protocol=consumer) delivers nothing: refused; CreatePartitions unsupported;
- acks=0 can lose the last request; aborted transactions are visible to read_committed.
"""
from __future__ import annotations

import itertools
import threading
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from brokers.base import Broker, Delivery, Endpoint, Option, not_reachable
from brokers.kafka.client import _client_log, bootstrap_servers  # noqa: F401 (used here and re-exported)
from brokers.kafka.spec import SPEC
from testbed.errors import BrokerError, ConfigError

TOPIC_MAX_MESSAGE_BYTES = 64 * 1024 * 1024 + 1024
FLUSH_TIMEOUT_S = 60.0
ACK_BIN_NS = 10_000_000  # ack_times: acknowledgements noted per 10 ms
KEEPALIVE_POLL_S = 0.02
#: option defaults that differ on tansu (the endpoint's impl says which broker answers), and why: above
TANSU_DEFAULTS = {"session.timeout.ms": 6000, "fetch.wait.max.ms": 10}

#: options handed to librdkafka as they are (the rest are the adapter's own)
PRODUCER_KEYS = ("acks", "linger.ms", "batch.size", "compression.type", "enable.idempotence",
                 "message.max.bytes", "socket.nagle.disable")
CONSUMER_KEYS = ("fetch.min.bytes", "fetch.wait.max.ms", "max.poll.interval.ms", "session.timeout.ms",
                 "group.protocol", "auto.offset.reset", "socket.nagle.disable")
CLASSIC_ONLY_KEYS = ("session.timeout.ms", "heartbeat.interval.ms", "partition.assignment.strategy")

class KafkaBroker(Broker):
    spec = SPEC
    reconnects_itself = True  # librdkafka: reconnects, retries and keeps its queue (message.timeout.ms)

    @property
    def acknowledged(self) -> bool:
        return str(self.options["acks"]) != "0"  # acks=0: the broker never answers a produce
    OPTIONS = {
        "acks": Option("all", "producer acknowledgements", str, ("0", "1", "all", "-1")),
        "linger.ms": Option(5.0, "producer batching delay in ms (latency: every message may wait this long)", float),
        "batch.size": Option(1000000, "producer batch size in bytes per partition", int),
        "compression.type": Option("none", "producer compression", str, ("none", "gzip", "snappy", "lz4", "zstd")),
        "enable.idempotence": Option(False, "idempotent producer", bool),
        "fetch.min.bytes": Option(1, "broker answers a fetch once this many bytes are there (latency)", int),
        "fetch.wait.max.ms": Option(500, "longest wait of a fetch (tansu: 10; it polls, so it is latency there)", int),
        "max.poll.interval.ms": Option(300000, "a consumer silent this long leaves the group", int),
        "session.timeout.ms": Option(45000, "a dead consumer's partitions move after this long (tansu: 6000)", int),
        "heartbeat.interval.ms": Option(3000, "classic protocol: how soon a member hears of a rebalance", int),
        "group.protocol": Option("classic", "consumer group protocol (consumer = KIP-848)", str, ("classic", "consumer")),
        "partition.assignment.strategy": Option("range,roundrobin", "classic protocol's assignors", str),
        "auto.offset.reset": Option("earliest", "where a new group starts (not Kafka's latest: see docstring)",
                                    str, ("earliest", "latest")),
        "message.max.bytes": Option(TOPIC_MAX_MESSAGE_BYTES, "largest message in bytes (client and topic)", int),
        "socket.nagle.disable": Option(True, "TCP_NODELAY, as Kafka's Java client always sets", bool),
        "partitioner": Option("round_robin", "round_robin (the adapter deals messages to partitions in turn) "
                              "or sticky (librdkafka's default for messages without a key)", str,
                              ("round_robin", "sticky")),
        "replication_factor": Option(1, "replicas of each partition of the run's topic (a cluster: its nodes)", int),
        "min_insync_replicas": Option(0, "the topic's min.insync.replicas (0 = the broker's own)", int),
        "ack_times": Option(False, "note when acknowledgements arrive (a delivery report per message), "
                                   "for unavailable_s", bool),
    }

    def __init__(self, endpoint: Endpoint):
        super().__init__(endpoint)
        self.tansu = "tansu" in (endpoint.impl or "").lower()
        if self.tansu:
            for key, value in TANSU_DEFAULTS.items():
                if key not in (endpoint.options or {}):
                    self.options[key] = value
            if self.options["group.protocol"] == "consumer":
                raise ConfigError("--broker-opt group.protocol=consumer is not allowed with tansu: it does not "
                                  "implement KIP-848 (its consumers silently get nothing); use classic")
        self.servers = bootstrap_servers(endpoint.url)
        self._admin: AdminClient | None = None
        self._producer: Producer | None = None
        self._consumer: Consumer | None = None
        self._errors: list[str] = []
        self._failed: list[tuple[bytes, str]] = []  # (value, why) of failed deliveries: take_failed
        self._ack_bins: set | None = None  # ack_times: 10 ms bins in which acknowledgements arrived
        self._offset_readers: dict = {}  # group -> a consumer that reads its offsets (broker_backlog)
        self._assigned: set = set()
        self._stash: list = []
        self._keepalive: threading.Thread | None = None
        self._keepalive_stop = threading.Event()
        self._partitions: dict[str, int] = {}
        self._pub_topic = None
        self._pub_next = self._produce = self._poll = None
        self._key = None  # several camera streams: this producer's stream, as the messages' key
        self._round_robin = self.options["partitioner"] == "round_robin"
        self._timeout_s = 10.0

    # -- configuration ----------------------------------------------------------------------------
    def _common(self) -> dict:
        return {"bootstrap.servers": self.servers, "logger": _client_log, "error_cb": self._on_error,
                "socket.nagle.disable": self.options["socket.nagle.disable"]}

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal() or err.code() == KafkaError._ALL_BROKERS_DOWN:
            self._errors.append(err.str())

    def _raise_client_error(self) -> None:
        """Raise the first error the client reported (once: the list is emptied)."""
        if self._errors:
            first, self._errors = self._errors[0], []
            raise BrokerError(f"kafka broker at {self.servers}: {first}")

    # -- lifecycle --------------------------------------------------------------------------------
    def connect(self, timeout_s: float = 10.0) -> None:
        """A metadata round trip: fails within ``timeout_s`` with one line if nothing answers."""
        self._timeout_s = timeout_s
        self._admin = AdminClient({**self._common(), "error_cb": lambda err: None})
        try:
            self._admin.list_topics(timeout=timeout_s)
        except KafkaException as exc:
            raise not_reachable("kafka", self.servers, timeout_s, _why(exc)) from None

    def ensure_topic(self, topic: str, partitions: int) -> None:
        partitions = max(1, int(partitions))
        config = {"max.message.bytes": str(self.options["message.max.bytes"])}
        if self.options["min_insync_replicas"] > 0:
            config["min.insync.replicas"] = str(self.options["min_insync_replicas"])
        new = NewTopic(topic, num_partitions=partitions, replication_factor=max(1, self.options["replication_factor"]),
                       config=config)
        fut = self._admin.create_topics([new], request_timeout=self._timeout_s)[topic]
        try:
            fut.result(self._timeout_s + 5)
        except KafkaException as exc:
            err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            if err is None or err.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise BrokerError(f"kafka: cannot create topic {topic!r} at {self.servers}: {_why(exc)}") from None
        except Exception as exc:  # noqa: BLE001 - a timeout of the future
            raise BrokerError(f"kafka: cannot create topic {topic!r} at {self.servers}: {exc}") from None
        self._wait_topic(topic, partitions)
        self._partitions[topic] = partitions

    def _wait_topic(self, topic: str, partitions: int) -> None:
        """Until the metadata shows every partition with a leader (a created topic takes a moment)."""
        deadline = time.monotonic() + self._timeout_s
        have = 0
        while True:
            try:
                md = self._admin.list_topics(topic, timeout=max(0.5, deadline - time.monotonic()))
                t = md.topics.get(topic)
                if t is not None and t.error is None:
                    have = sum(1 for p in t.partitions.values() if p.leader >= 0 and p.error is None)
                    if len(t.partitions) < partitions:
                        raise BrokerError(f"kafka: topic {topic!r} exists with {len(t.partitions)} partitions, "
                                          f"fewer than the {partitions} the run needs; delete it first")
                    if have >= partitions:
                        return
            except KafkaException:
                pass
            if time.monotonic() > deadline:
                raise BrokerError(f"kafka: topic {topic!r} has {have} of {partitions} partitions ready "
                                  f"after {self._timeout_s:g}s")
            time.sleep(0.05)

    def delete_topic(self, topic: str) -> None:
        """Remove the run's topic (tansu's memory engine frees its messages only then). Called after the
        stages stopped: librdkafka crashes a process whose consumer is subscribed to a deleted topic."""
        if self._admin is None:
            return
        try:
            self._admin.delete_topics([topic], request_timeout=self._timeout_s)[topic].result(self._timeout_s + 5)
        except Exception as exc:  # noqa: BLE001
            raise BrokerError(f"kafka: cannot delete topic {topic!r}: {exc}") from None

    def close(self) -> None:
        self._stop_keepalive()
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            try:
                consumer.close()
            except (KafkaException, RuntimeError):
                pass
        if self._producer is not None:
            producer, self._producer = self._producer, None
            producer.flush(5.0)
        readers, self._offset_readers = self._offset_readers, {}
        for reader in readers.values():
            try:
                reader.close()
            except (KafkaException, RuntimeError):
                pass
        self._admin = None

    # -- producer ---------------------------------------------------------------------------------
    def _make_producer(self) -> Producer:
        every = self.options["ack_times"] and str(self.options["acks"]) != "0"
        self._ack_bins = set() if every else None
        conf = {**self._common(), **{k: self.options[k] for k in PRODUCER_KEYS},
                "delivery.report.only.error": not every, "on_delivery": self._on_delivery}
        self._producer = Producer(conf)
        return self._producer

    def _on_delivery(self, err, msg) -> None:
        if err is not None:
            self._errors.append(f"delivery to {msg.topic()} failed: {err.str()}")
            self._failed.append((msg.value(), err.str()))
        elif self._ack_bins is not None:  # served by the poll after each produce: when the ack came
            self._ack_bins.add(time.monotonic_ns() // ACK_BIN_NS)

    def take_ack_bins(self) -> list[int] | None:
        """``ack_times``: the 10 ms bins of the monotonic clock (``ns // ACK_BIN_NS``) in which an
        acknowledgement arrived, sorted (None without ``ack_times``). Emptied by the call."""
        if self._ack_bins is None:
            return None
        out, self._ack_bins = sorted(self._ack_bins), set()
        return out

    def take_failed(self) -> list[tuple[bytes, str]]:
        """Messages whose delivery failed after ``publish`` returned (the harness marks them not
        acknowledged): (the message's bytes, header first; why). Emptied by the call."""
        out, self._failed = self._failed, []
        return out

    def wait_consumers(self, topic: str, n: int, timeout_s: float) -> None:
        """Nothing to wait for (the topic keeps messages); make the producer and learn the topic's leaders
        now, so the first message does not pay for it."""
        self._partition_count(topic, timeout_s)

    def _partition_count(self, topic: str, timeout_s: float) -> int:
        producer = self._producer or self._make_producer()
        try:
            md = producer.list_topics(topic, timeout=timeout_s)
        except KafkaException as exc:
            raise not_reachable("kafka", self.servers, timeout_s, _why(exc)) from None
        t = md.topics.get(topic)
        n = len(t.partitions) if t is not None and t.error is None else 0
        if n:
            self._partitions[topic] = n
        return n

    def _prepare_topic(self, topic: str) -> None:
        """Once per topic (not per message): the partition picker and the bound client calls."""
        producer = self._producer or self._make_producer()
        keyed = self.streams > 1  # a key per camera stream: all its messages to one partition, in order
        n = self._partitions.get(topic) or (self._partition_count(topic, self._timeout_s)
                                            if (self._round_robin or keyed) else 0)
        if keyed:
            part = self.stream % n if n else -1
            self._key = str(self.stream).encode()
            self._pub_next = lambda: part
        else:
            self._pub_next = itertools.cycle(range(n)).__next__ if (self._round_robin and n) else (lambda: -1)
        self._pub_topic = topic
        self._produce, self._poll = producer.produce, producer.poll

    def publish(self, topic: str, header: bytes, payload) -> None:
        if topic != self._pub_topic:
            self._prepare_topic(topic)
        self._send(topic, b"".join((header, payload)))  # one copy; librdkafka copies once more

    def publish_envelope(self, topic: str, env) -> None:
        if topic != self._pub_topic:
            self._prepare_topic(topic)
        self._send(topic, b"".join((env.header(), env.payload)))

    def _send(self, topic: str, value: bytes) -> None:
        if self._errors:  # before the produce: a message that raises was not handed to the client
            self._raise_client_error()
        part = self._pub_next()
        try:
            self._produce(topic, value, partition=part, key=self._key)
        except BufferError:
            # the client's queue is full: serve it until there is room (the stall shows as publish delay)
            while True:
                self._poll(0.05)
                self._raise_client_error()
                try:
                    self._produce(topic, value, partition=part, key=self._key)
                    break
                except BufferError:
                    continue
        self._poll(0)

    def flush(self) -> None:
        if self._producer is None:
            return
        left = self._producer.flush(FLUSH_TIMEOUT_S)
        self._raise_client_error()
        if left:
            raise BrokerError(f"kafka: {left} messages not delivered to {self.servers} within {FLUSH_TIMEOUT_S:g}s")

    # -- consumer ---------------------------------------------------------------------------------
    def subscribe(self, topic: str, group: str, consumer_name: str) -> None:
        keys = CONSUMER_KEYS
        if self.options["group.protocol"] == "classic":
            keys = keys + ("partition.assignment.strategy", "heartbeat.interval.ms")
        else:  # KIP-848: the broker owns the session and the assignor; the client must not set them
            keys = tuple(k for k in keys if k not in CLASSIC_ONLY_KEYS)
        conf = {**self._common(), **{k: self.options[k] for k in keys},
                "group.id": group, "client.id": consumer_name, "enable.auto.commit": False,
                "on_commit": self._on_commit}
        self._consumer = Consumer(conf)
        self._consumer.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                 on_lost=self._on_revoke)

    def _on_assign(self, consumer, partitions) -> None:
        self._assigned.update((p.topic, p.partition) for p in partitions)

    def _on_revoke(self, consumer, partitions) -> None:
        self._assigned.difference_update((p.topic, p.partition) for p in partitions)

    def _on_commit(self, err, partitions) -> None:
        pass  # a commit lost to a rebalance means redelivery (at least once); nothing to do

    def wait_assigned(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        consumer = self._consumer
        while not self._assigned:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrokerError(f"kafka: no partitions assigned to this consumer within {timeout_s:g}s "
                                  f"(more consumers than partitions, or the group coordinator at "
                                  f"{self.servers} did not answer)")
            self._stash.extend(consumer.consume(100, min(0.1, left)))
            self._raise_client_error()
        self._keepalive_stop.clear()
        self._keepalive = threading.Thread(target=self._keep_alive, name="kafka-keepalive", daemon=True)
        self._keepalive.start()

    def _keep_alive(self) -> None:
        consumer = self._consumer
        while not self._keepalive_stop.is_set():
            self._stash.extend(consumer.consume(100, KEEPALIVE_POLL_S))

    def _stop_keepalive(self) -> None:
        if self._keepalive is not None:
            self._keepalive_stop.set()
            self._keepalive.join()
            self._keepalive = None

    def receive(self, max_messages: int, timeout_s: float) -> list[Delivery]:
        if self._keepalive is not None:
            self._stop_keepalive()
        if self._stash:
            msgs, self._stash = self._stash[:max_messages], self._stash[max_messages:]
        else:
            # consume(n, t) waits until n messages are there or t has passed: block for the first one
            # only, then take what is already there (a batch never waits for messages that are not)
            msgs = self._consumer.consume(1, timeout_s)
            if msgs and max_messages > 1:
                msgs.extend(self._consumer.consume(max_messages - 1, 0))
        out = []
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.fatal():
                    raise BrokerError(f"kafka consumer: {err.str()}")
                continue
            out.append(Delivery(m.value(), m))
        if self._errors:
            self._raise_client_error()
        return out

    def ack(self, deliveries: list[Delivery]) -> None:
        """Commit, per partition, the offset after the last acked message: synchronously once per batch
        (per-batch) or per message (per-message), or asynchronously once per batch (async: librdkafka
        sends it from its own thread; a failure only means those messages come again)."""
        if not deliveries:
            return
        consumer, mode = self._consumer, self.ack_mode
        try:
            if mode == "per-message":
                for d in deliveries:
                    consumer.commit(message=d.token, asynchronous=False)
                return
            asynchronous = mode == "async"
            if len(deliveries) == 1:
                consumer.commit(message=deliveries[0].token, asynchronous=asynchronous)
                return
            last = {}
            for d in deliveries:
                last[d.token.partition()] = d.token
            if len(last) == 1:
                consumer.commit(message=next(iter(last.values())), asynchronous=asynchronous)
            else:
                consumer.commit(offsets=[TopicPartition(m.topic(), p, m.offset() + 1)
                                         for p, m in last.items()], asynchronous=asynchronous)
        except KafkaException as exc:  # sync commit lost to a rebalance: the messages come again
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.fatal():
                raise BrokerError(f"kafka commit failed: {err.str()}") from None

    # -- what answers, and its lag ----------------------------------------------------------------
    def server_impl(self) -> str:
        if self.endpoint.impl:
            return self.endpoint.impl
        try:
            cluster = self._admin.describe_cluster(request_timeout=self._timeout_s).result(self._timeout_s + 5)
            if "tansu" in (cluster.cluster_id or "").lower():
                return "tansu (kafka protocol)"
        except Exception:  # noqa: BLE001 - the broker answered metadata already; the label is a fallback
            pass
        return "kafka (external)"

    def broker_backlog(self, topic: str, group: str) -> int | None:
        """Consumer lag of ``group``: sum of high watermark - committed offset (a partition without a
        commit counts from its low watermark, 0 on a fresh topic). None on tansu: its watermark is wrong.

        Read through a consumer of the group that never joins it (``committed``, the watermarks), not the
        admin API: the admin API's coordinator requests (ListConsumerGroupOffsets) abort the whole process
        when the coordinator's connection drops under them (librdkafka issue 4605: a cluster's node
        killed while the orchestrator samples once a second); the consumer's own offset fetch does not."""
        if self.tansu or self._admin is None:
            return None
        n = self._partitions.get(topic)
        if n is None:
            md = self._admin.list_topics(topic, timeout=2.0)
            n = len(md.topics[topic].partitions)
        reader = self._offset_readers.get(group)
        if reader is None:
            reader = self._offset_readers[group] = Consumer({**self._common(), "error_cb": lambda err: None,
                                                             "group.id": group, "enable.auto.commit": False})
        tps = [TopicPartition(topic, p) for p in range(n)]
        done = {tp.partition: max(0, tp.offset) for tp in reader.committed(tps, timeout=2.0)}
        lag = 0
        for tp in tps:
            _low, high = reader.get_watermark_offsets(tp, timeout=2.0, cached=False)
            lag += max(0, high - done.get(tp.partition, 0))
        return lag


def _why(exc: Exception) -> str:
    err = exc.args[0] if exc.args else None
    if isinstance(err, KafkaError):
        return err.str()
    return str(exc)
