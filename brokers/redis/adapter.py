"""Redis Streams: a consumer group on one stream per run (redis-py).

| property           | value                                                                          |
|--------------------|--------------------------------------------------------------------------------|
| delivery           | at least once: XACK after service; a dead consumer's pending messages are      |
|                    | claimed by a live one (XAUTOCLAIM) once idle for ``claim_idle_ms``             |
| ordering           | one stream: publish order; with N consumers each gets an ordered subsequence   |
| persistence        | in memory; on disk only as the server is configured (the local launcher runs   |
|                    | with ``--save '' --appendonly no``: nothing survives a restart)                |
| backlog means      | XINFO GROUPS ``lag`` (entries not yet delivered to the group) + ``pending``    |
|                    | (delivered, not yet acknowledged)                                              |
| options            | ``maxlen`` = 0 (off), ``maxlen_approx`` = true, ``claim_idle_ms`` = 30000,     |
|                    | ``socket_timeout_s`` = 30, ``block_ms`` = 0 (the harness's receive timeout),   |
|                    | ``wait_replicas`` = 0, ``wait_timeout_ms`` = 1000                              |

URL: ``redis://[:PASSWORD@]HOST:PORT[/DB]`` (``rediss://`` for TLS), as redis-py's ``from_url`` takes it;
or ``redis-sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...]/SERVICE[/DB]``: the primary is the one the
Sentinels name for SERVICE (redis-py's ``Sentinel.master_for``), asked again at every connect, so a
client made after a failover reaches the new primary.

Clusters (``--broker-nodes N``, brokers/redis/cluster.py): one primary, N-1 replicas, three Sentinels.
Replication is asynchronous: XADD is acknowledged by the primary alone. ``wait_replicas`` = K sends
``WAIT K wait_timeout_ms`` after each XADD (the cluster sets K = 1 with ``--delivery at-least-once``): a
publish counts as acknowledged only once K replicas have the entry; fewer within the timeout is a failed
publish. Even so a failover can lose acknowledged entries (WAIT does not make Redis synchronous: a
replica that had the entry may not be the one promoted); the run counts them (``lost_acked``).

Wire: each message is one stream entry with two fields, ``h`` (envelope header) and ``p`` (payload), so
the payload is never concatenated with the header: redis-py sends a large field straight from its buffer.

Stage B: a consumer that subscribes first reads back what the group still holds for its own name
(XREADGROUP ... STREAMS topic ``0``: delivered to a consumer of that name, never acked), so a consumer
restarted under the same name, or one that reconnected after a broker restart with its data, resumes
where it stopped; then XREADGROUP ... COUNT max BLOCK ms STREAMS topic ``>`` blocks in the server until an entry
arrives (never a polling sleep); XACK after the batch is served. The group is created at id 0 with
MKSTREAM, so entries published before a consumer subscribed are delivered, not skipped.

Why these defaults:
- ``maxlen`` 0: Redis's own default is no trimming. With trimming on, entries the group has not read yet
  can be trimmed away (lost, and XINFO lag becomes unknown); set it to bound the server's memory.
- ``claim_idle_ms`` 30000: Redis has no default (claiming is the client's policy). It must be longer than
  the longest batch service, or a slow but live consumer's messages are delivered twice. A consumer
  checks for claimable entries at most once per ``claim_idle_ms / 2``, and only when its own read came
  back empty or the interval passed: one round trip, cheap.
- ``block_ms`` 0: each XREADGROUP blocks for the harness's receive timeout (50 ms when idle, the batch
  wait left while filling a batch). BLOCK returns as soon as one entry arrives, so a longer block does
  not delay a message; a shorter one (``block_ms`` > 0 caps it) only turns an idle consumer's wait into
  more round trips. docs/reproduction.md row 6 measures both.
- Publishing is one XADD round trip per message (no pipelining): the harness hands messages over one by
  one at their scheduled time, and holding them in a pipeline would add latency the harness would then
  attribute to the broker. redis-py without hiredis parses replies in pure Python.

The hot path (XADD, XREADGROUP, XACK) goes through one redis-py ``Connection`` held by the adapter
(``send_command`` / ``read_response``) instead of ``Redis.xadd`` & co.: the client-level call adds a
connection-pool checkout, a retry wrapper and reply callbacks per command, which cost two thirds of the
time of a 1 KB XADD on loopback (7.9k/s against 24k/s measured here). No retry also means a broker that
dies fails the run at once instead of after retry back-offs. Everything else (group creation, claiming,
XINFO, INFO) uses the ordinary client API.
"""
from __future__ import annotations

import time

import redis
import redis.exceptions as rexc

from brokers.base import Broker, Delivery, Endpoint, Option
from brokers.redis.spec import SPEC
from testbed.errors import BrokerError

_H, _P = b"h", b"p"


class RedisStreamsBroker(Broker):
    spec = SPEC
    OPTIONS = {
        "maxlen": Option(0, "trim the stream to about this many entries on XADD "
                            "(0 = no trimming, Redis's default)", int),
        "maxlen_approx": Option(True, "trim with ~ (approximate, cheap) rather than exactly", bool),
        "claim_idle_ms": Option(30000, "claim entries pending this long on another (dead) consumer "
                                       "with XAUTOCLAIM (0 = never)", int),
        "socket_timeout_s": Option(30.0, "give up on a reply after this many seconds (a hung server)", float),
        "block_ms": Option(0, "cap each XREADGROUP BLOCK at this many ms "
                              "(0 = block for the harness's receive timeout)", int),
        "wait_replicas": Option(0, "after each XADD, WAIT until this many replicas have it (0 = no WAIT)", int),
        "wait_timeout_ms": Option(1000, "how long that WAIT waits; fewer replicas by then fails the publish", int),
    }

    def __init__(self, endpoint: Endpoint):
        super().__init__(endpoint)
        self._r: redis.Redis | None = None
        self._c = None  # the hot path's own connection (see the module docstring)
        self._topic = ""
        self._group = ""
        self._consumer = ""
        self._next_claim = 0.0
        self._claim_cursor = b"0-0"
        self._xadd_args: tuple = ()
        self._own_pending: bytes | None = None
        self._unacked: list = []  # --ack async: ids acked, to send with the next read
        self._reads: dict = {}
        self._claim_ms = self._block_cap = 0

    # -- lifecycle ------------------------------------------------------------------------------
    def connect(self, timeout_s: float = 10.0) -> None:
        url = self.endpoint.url
        timeouts = {"socket_connect_timeout": timeout_s,
                    "socket_timeout": max(timeout_s, self.options["socket_timeout_s"])}
        try:
            if url.lower().startswith(SENTINEL_SCHEME):
                self._r = _sentinel_client(url, timeouts)
            else:
                self._r = redis.Redis.from_url(url, **timeouts)
        except ValueError as exc:
            raise BrokerError(f"redis: bad --broker-url {_safe(url)!r}: {exc} "
                              "(use redis://[:PASSWORD@]HOST:PORT[/DB] or "
                              "redis-sentinel://HOST:PORT[,HOST:PORT...]/SERVICE[/DB])") from None
        self._call(self._r.ping, timeout_s=timeout_s)
        self._c = self._call(self._r.connection_pool.get_connection)
        maxlen = self.options["maxlen"]
        self._xadd_args = ("MAXLEN", "~" if self.options["maxlen_approx"] else "=", maxlen) if maxlen > 0 else ()
        self._wait = self.options["wait_replicas"]
        self._wait_args = ("WAIT", self._wait, max(0, self.options["wait_timeout_ms"]))

    def _call(self, fn, *args, timeout_s: float | None = None, **kw):
        """One Redis command; every failure becomes one clear line."""
        url = self.endpoint.url
        try:
            return fn(*args, **kw)
        except rexc.AuthenticationError:
            if "@" not in url:
                raise BrokerError(f"redis at {_safe(url)} needs a password: put it in the URL "
                                  "(redis://:PASSWORD@HOST:PORT)") from None
            raise BrokerError(f"redis at {_safe(url)}: wrong password or user (AUTH refused)") from None
        except rexc.ResponseError as exc:
            if "NOAUTH" in str(exc):
                raise BrokerError(f"redis at {_safe(url)} needs a password: put it in the URL "
                                  "(redis://:PASSWORD@HOST:PORT)") from None
            raise BrokerError(f"redis at {_safe(url)}: {exc}") from None
        except rexc.TimeoutError as exc:
            what = f"within {timeout_s:g}s" if timeout_s else "in time"
            raise BrokerError(f"redis broker at {_safe(url)} did not answer {what}: {exc}") from None
        except rexc.ConnectionError as exc:
            raise BrokerError(f"redis broker at {_safe(url)} is unreachable: {_one_line(exc)}") from None

    def ensure_topic(self, topic: str, partitions: int) -> None:
        """One stream (Redis Streams has no partitions; replicas compete in one group). The harness's
        group is created here too, so the broker-side backlog is known from the first second."""
        self._create_group(topic, f"testbed-{topic}")

    def _create_group(self, topic: str, group: str) -> None:
        try:
            self._r.xgroup_create(topic, group, id="0", mkstream=True)
        except rexc.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise BrokerError(f"redis: cannot create group {group!r} on stream {topic!r}: {exc}") from None
        except rexc.RedisError:
            self._call(self._r.ping)  # turns a connection failure into one clear line
            raise

    def delete_topic(self, topic: str) -> None:
        self._call(self._r.delete, topic)

    def close(self) -> None:
        try:
            self._send_acks()  # --ack async: the last batch's acks
        except BrokerError:
            pass  # the connection is gone: those entries are delivered again (at least once)
        r, c, self._r, self._c = self._r, self._c, None, None
        if c is not None:
            c.disconnect()
        if r is not None:
            r.close()

    def server_impl(self) -> str:
        info = self._call(self._r.info, "server")
        return f"redis {info.get('redis_version', '?')}"

    # -- producer -------------------------------------------------------------------------------
    def publish(self, topic: str, header: bytes, payload) -> None:
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            payload = memoryview(payload).cast("B")  # numpy arrays: the buffer, no copy
        c = self._c
        try:
            c.send_command("XADD", topic, *self._xadd_args, "*", _H, header, _P, payload)
            c.read_response()
            if self._wait:
                c.send_command(*self._wait_args)
                have = c.read_response()
        except rexc.RedisError as exc:
            raise _failed(f"XADD to {topic!r}", exc) from None
        if self._wait and have < self._wait:
            raise BrokerError(f"redis: XADD to {topic!r} reached {have} of the {self._wait} replicas WAIT asked "
                              f"for within {self._wait_args[2]} ms")

    # -- consumer -------------------------------------------------------------------------------
    def subscribe(self, topic: str, group: str, consumer_name: str) -> None:
        self._topic, self._group, self._consumer = topic, group, consumer_name
        self._create_group(topic, group)
        self._own_pending = b"0-0"  # read back our own unacked entries first
        self._claim_ms = self.options["claim_idle_ms"]
        self._block_cap = self.options["block_ms"]
        self._next_claim = time.monotonic() + self._claim_every()
        self._reads = {}
        self._unacked = []

    def _claim_every(self) -> float:
        return self.options["claim_idle_ms"] / 2000.0

    def _xread(self, count: int, block: tuple) -> list:
        """XREADGROUP ... COUNT count [BLOCK ms] STREAMS topic ``>``, packed once per (count, block):
        redis-py packs every argument on every call otherwise."""
        key = (count, block)
        cmd = self._reads.get(key)
        if cmd is None:
            if len(self._reads) > 32:  # batch waits ask for many block values: keep the common ones
                self._reads.clear()
            cmd = self._reads[key] = self._c.pack_command(
                "XREADGROUP", "GROUP", self._group, self._consumer, "COUNT", count, *block, "STREAMS", self._topic, ">")
        return cmd

    def receive(self, max_messages: int, timeout_s: float) -> list[Delivery]:
        if self._own_pending is not None:
            got = self._read_own_pending(max_messages)
            if got:
                return got
        claim_ms = self._claim_ms
        if claim_ms > 0 and time.monotonic() >= self._next_claim:
            got = self._claim(max_messages)
            if got:
                return got
        block = ()  # no BLOCK: answer at once (BLOCK 0 would wait forever)
        if timeout_s > 0:
            block_ms = max(1, int(timeout_s * 1000))
            if self._block_cap > 0:
                block_ms = min(block_ms, self._block_cap)
            block = ("BLOCK", block_ms)
        c = self._c
        try:
            if self._unacked:  # --ack async: the last batch's XACK goes in the same write, one round trip
                ids, self._unacked = self._unacked, []
                # one buffer, one send: redis-py sends each packed chunk with its own sendall, and the
                # server, woken by the XACK's segment alone, would answer it before the read arrived
                c.send_packed_command([b"".join(c.pack_command("XACK", self._topic, self._group, *ids)
                                                + self._xread(max_messages, block))])
                c.read_response()  # the XACK's count: Redis answers it before it blocks on the read
            else:
                c.send_packed_command(self._xread(max_messages, block))
            reply = c.read_response()
        except rexc.RedisError as exc:
            raise _failed(f"XREADGROUP on {self._topic!r}", exc) from None
        if not reply:
            if claim_ms > 0 and time.monotonic() >= self._next_claim:
                return self._claim(max_messages)
            return []
        # RESP3 (redis-py's default since 8.0) answers a map {stream: entries}; RESP2 a list of pairs
        entries = next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]
        return _raw_deliveries(entries)

    def _read_own_pending(self, max_messages: int) -> list[Delivery]:
        """Entries delivered to this consumer name and never acked (after ``_own_pending``)."""
        self._send_acks()
        c = self._c
        try:
            c.send_command("XREADGROUP", "GROUP", self._group, self._consumer, "COUNT", max_messages,
                           "STREAMS", self._topic, self._own_pending)
            reply = c.read_response()
        except rexc.RedisError as exc:
            raise _failed(f"XREADGROUP (own pending) on {self._topic!r}", exc) from None
        entries = (next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]) if reply else []
        if not entries:
            self._own_pending = None
            return []
        self._own_pending = entries[-1][0]
        return _raw_deliveries(e for e in entries if e[1])

    def _claim(self, max_messages: int) -> list[Delivery]:
        """Take over entries another consumer has held unacknowledged for ``claim_idle_ms``."""
        self._send_acks()
        self._next_claim = time.monotonic() + self._claim_every()
        try:
            reply = self._r.xautoclaim(self._topic, self._group, self._consumer,
                                       self.options["claim_idle_ms"], start_id=self._claim_cursor,
                                       count=max_messages)
        except rexc.RedisError as exc:
            raise _failed(f"XAUTOCLAIM on {self._topic!r}", exc) from None
        cursor, entries = reply[0], reply[1]
        self._claim_cursor = cursor
        if cursor != b"0-0":  # more to claim: look again on the next receive
            self._next_claim = 0.0
        return _deliveries(e for e in entries if e and e[1])

    def ack(self, deliveries: list[Delivery]) -> None:
        """per-batch: one XACK of the batch, its reply read; per-message: one XACK and reply per entry;
        async: the ids are kept and sent with the next XREADGROUP (or by ``close``)."""
        if not deliveries:
            return
        mode = self.ack_mode
        if mode == "async":
            self._unacked.extend([d.token for d in deliveries])
            return
        c = self._c
        try:
            if mode == "per-message":
                for d in deliveries:
                    c.send_command("XACK", self._topic, self._group, d.token)
                    c.read_response()
            else:
                c.send_command("XACK", self._topic, self._group, *[d.token for d in deliveries])
                c.read_response()
        except rexc.RedisError as exc:
            raise _failed(f"XACK on {self._topic!r}", exc) from None

    def _send_acks(self) -> None:
        """The async acks still held, in a round trip of their own."""
        if self._unacked and self._c is not None:
            ids, self._unacked = self._unacked, []
            try:
                self._c.send_command("XACK", self._topic, self._group, *ids)
                self._c.read_response()
            except rexc.RedisError as exc:
                raise _failed(f"XACK on {self._topic!r}", exc) from None

    # -- broker-side figures --------------------------------------------------------------------
    def broker_backlog(self, topic: str, group: str) -> int | None:
        for g in self._r.xinfo_groups(topic):
            if g.get("name") in (group, group.encode()):
                lag = g.get("lag")
                return None if lag is None else int(lag) + int(g.get("pending", 0))
        return None


SENTINEL_SCHEME = "redis-sentinel://"


def _sentinel_client(url: str, timeouts: dict) -> redis.Redis:
    """``redis-sentinel://[:PASSWORD@]H:P[,H:P...]/SERVICE[/DB]`` -> a client of SERVICE's primary."""
    from redis.sentinel import Sentinel
    rest = url[len(SENTINEL_SCHEME):]
    password = None
    if "@" in rest:
        creds, rest = rest.rsplit("@", 1)
        password = creds.split(":", 1)[1] if ":" in creds else creds
    where, _, path = rest.partition("/")
    parts = [p for p in path.split("/") if p]
    if not where or not parts:
        raise ValueError("it needs the Sentinels and the service name")
    hosts = []
    for hp in where.split(","):
        host, _, port = hp.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"{hp!r} is not HOST:PORT")
        hosts.append((host, int(port)))
    db = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    quick = {"socket_timeout": min(2.0, timeouts["socket_connect_timeout"]),
             "socket_connect_timeout": min(2.0, timeouts["socket_connect_timeout"])}
    sentinel = Sentinel(hosts, sentinel_kwargs=quick, password=password, **timeouts)
    return sentinel.master_for(parts[0], db=db)


def _deliveries(entries) -> list[Delivery]:
    out = []
    for entry_id, fields in entries:
        out.append(Delivery([fields[_H], fields[_P]], entry_id))
    return out


def _raw_deliveries(entries) -> list[Delivery]:
    """Entries as RESP sends them: ``[id, [b"h", header, b"p", payload]]``."""
    out = []
    for entry_id, fields in entries:
        if len(fields) == 4 and fields[0] == _H and fields[2] == _P:
            out.append(Delivery([fields[1], fields[3]], entry_id))
        else:  # written by someone else: take the fields by name
            named = dict(zip(fields[::2], fields[1::2]))
            out.append(Delivery([named.get(_H, b""), named.get(_P, b"")], entry_id))
    return out


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url


def _failed(what: str, exc: BaseException) -> BrokerError:
    if isinstance(exc, rexc.ConnectionError):
        return BrokerError(f"redis: {what} failed, connection to the broker lost: {_one_line(exc)}")
    return BrokerError(f"redis: {what} failed: {_one_line(exc)}")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
