"""Benchmark: stage B's client costs in the harness against a raw client loop of the same library and
settings, in the same run, on the same broker instance (redis, rabbitmq, kafka apache, nats), and the
harness's own bookkeeping on every broker (zeromq and inproc too).

Two measurements per side, the raw loop and the harness alternating ``--repeat`` times (median and
min-max spread in the table):

- **client cost at batch 1**: Poisson arrivals at ``--cost-rate`` msg/s (80: rho 0.8) of
  ``--cost-bytes`` (150528) against a consumer that takes one message, spends 10 ms on it
  (``stages.synthetic.spend``, sleeping: the harness's own ``--consumer-rate 100``), then acks it in the
  broker's default ack mode. Per message: the receive call (counted only when the message was already
  waiting when the call began: a call that blocked was idle, as the harness's ``recv_call`` counts it),
  the ack call; p50 of each. The harness: ``testbed.run`` with the same load (``--fanout 1
  --producer-rate inf --consumer-rate 100 --batch-max 1``), its summary's ``recv_call_p50_us``,
  ``ack_call_p50_us`` and ``b_harness_p50_us`` (our bookkeeping, which the raw loop does not have).
- **e2e at a fixed rate**: constant ``--fixed-rate`` msg/s (200) of ``--e2e-bytes`` (1024), no service
  time, batch 1: p50 from the intended send time to the end of the (empty) service, both sides.

The raw loops (one producer and one consumer process, multiprocessing spawn) use the client as its
documentation shows it, with the adapter's settings: Redis, XADD / XREADGROUP COUNT 1 BLOCK 50 / XACK on
one redis-py ``Connection`` (send_command / read_response, as the adapter); RabbitMQ, pika
BlockingConnection, prefetch 100, basic_consume + process_data_events(time_limit), basic_ack; Kafka,
confluent-kafka with the adapter's resolved options, consume(1, 0.05), a synchronous commit of the
message (the default ack mode, per-batch, at batch 1); NATS, nats-py's own API: a durable pull consumer,
``fetch(1, timeout=0.05)``, ``ack_sync`` (the default ack mode waits for the server's reply to the
batch's acks), publish with ``js.publish`` (PubAck awaited, as the adapter's default); ZeroMQ, PUSH/PULL
with a non-blocking read before a poll (no acks).

Targets (issue 21): receive + ack within 1.2x of the raw loop's, bookkeeping p50 at most 20 us, e2e p50
within 10% + 0.1 ms of the raw loop's. Then, harness only, the same cost run once per ``--ack`` mode. A
benchmark, not a test: run it under the heavy lock, it loads both cores for about twenty minutes:

    flock /tmp/testbed-heavy.lock .venv/bin/python benchmarks/clients.py [--brokers redis,nats]
        [--update docs/brokers.md]
"""
from __future__ import annotations

import collections
import multiprocessing as mp
import os
import re
import struct
import sys
import tempfile
import time
import uuid

import numpy as np

import _common as C  # noqa: E402 - first: the project's ``brokers`` package, not a benchmark file

from brokers.spec import ACK_MODES  # noqa: E402
from testbed.config import RunConfig  # noqa: E402

now = C.now
HEAD = struct.Struct("<qq")  # (intended, published) in ns: the raw messages' header
END = b"END-OF-RUN-MARKER"
POLL_S = 0.05
SERVER_BROKERS = ("redis", "rabbitmq", "kafka", "nats")
ALL_BROKERS = ("redis", "rabbitmq", "kafka", "nats", "zeromq", "inproc")
SECTION = "## Stage B client costs"


# -- raw producers -----------------------------------------------------------------------------------
def _intended_times(arrival: str, rate: float, seconds: float, seed: int = 1):
    """Open loop: every message's intended time from a start 50 ms ahead; sleeps until each."""
    rng = np.random.default_rng(seed)
    n = int(rate * seconds)
    gaps = rng.exponential(1.0 / rate, n) if arrival == "poisson" else np.full(n, 1.0 / rate)
    offs = (np.cumsum(gaps) * 1e9).astype(np.int64)
    t0 = now() + 50_000_000
    for off in offs.tolist():
        intended = t0 + off
        d = intended - now()
        if d > 0:
            time.sleep(d / 1e9)
        yield intended


def _producer(broker, url, topic, size, arrival, rate, seconds, start):
    payload = os.urandom(max(0, size - HEAD.size))
    times = _intended_times(arrival, rate, seconds)
    if broker == "redis":
        import redis
        r = redis.Redis.from_url(url)
        c = r.connection_pool.get_connection()
        start.wait()
        for intended in times:
            c.send_command("XADD", topic, "*", b"h", HEAD.pack(intended, now()), b"p", payload)
            c.read_response()
        r.xadd(topic, {b"h": END, b"p": b""})
        r.close()
    elif broker == "rabbitmq":
        import pika
        conn = pika.BlockingConnection(pika.URLParameters(url))
        ch = conn.channel()
        start.wait()
        for intended in times:
            ch.basic_publish("", topic, b"".join((HEAD.pack(intended, now()), payload)))
        ch.basic_publish("", topic, END)
        conn.close()
    elif broker == "kafka":
        from confluent_kafka import Producer

        from brokers.kafka.adapter import PRODUCER_KEYS, _client_log
        o = _kafka_options(url)
        p = Producer({"bootstrap.servers": _servers(url), "logger": _client_log,
                      "delivery.report.only.error": True, **{k: o[k] for k in PRODUCER_KEYS}})
        p.list_topics(topic, timeout=10)
        start.wait()
        for intended in times:
            p.produce(topic, b"".join((HEAD.pack(intended, now()), payload)), partition=0)
            p.poll(0)
        p.produce(topic, END, partition=0)
        p.flush(30)
    elif broker == "nats":
        import asyncio

        import nats

        async def main():
            nc = await nats.connect(url)
            js = nc.jetstream()
            start.wait()
            for intended in times:
                await js.publish(topic, b"".join((HEAD.pack(intended, now()), payload)))
            await js.publish(topic, END)
            await nc.close()
        asyncio.run(main())
    elif broker == "zeromq":
        import zmq
        sock = zmq.Context.instance().socket(zmq.PUSH)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.LINGER, 2000)
        sock.bind(url)
        start.wait()
        big = len(payload) >= 10240
        for intended in times:
            sock.send(HEAD.pack(intended, now()), zmq.SNDMORE)
            sock.send(payload, copy=not big)
        sock.send(END, zmq.SNDMORE)
        sock.send(b"")
        time.sleep(1.0)
        sock.close()


# -- raw consumers: take one message, spend the service, ack it --------------------------------------
class _Take:
    """What a raw consumer records per message: e2e (end of service - intended), the receive call when
    the message was waiting before the call began, the ack call."""

    def __init__(self, service_ns: int):
        from stages.synthetic import spend
        self.spend, self.service_ns = spend, service_ns
        self.lat, self.recv, self.ack = [], [], []
        self.end = False

    def serve(self, head, c0: int, c1: int) -> int:
        """Record the receive call, spend the service: when it ended (0 for the end marker)."""
        if head[:len(END)] == END:
            self.end = True
            return 0
        intended, published = HEAD.unpack_from(head)
        if published < c0:
            self.recv.append(c1 - c0)
        self.spend(self.service_ns, "sleep")
        e = now()
        self.lat.append(e - intended)
        return e

    def acked(self, e: int) -> None:
        if e:
            self.ack.append(now() - e)

    def result(self) -> bytes:
        arrays = [np.asarray(x, np.int64) for x in (self.lat, self.recv, self.ack)]
        return struct.pack("<3q", *(len(a) for a in arrays)) + b"".join(a.tobytes() for a in arrays)


def _consumer(broker, url, topic, service_ns, seconds, conn):
    take = _Take(service_ns)
    deadline = time.monotonic() + seconds + 60
    if broker == "redis":
        import redis
        r = redis.Redis.from_url(url)
        r.xgroup_create(topic, "raw", id="0", mkstream=True)
        c = r.connection_pool.get_connection()
        conn.send_bytes(b"ready")
        while not take.end and time.monotonic() < deadline:
            c0 = now()
            c.send_command("XREADGROUP", "GROUP", "raw", "c0", "COUNT", 1, "BLOCK", 50, "STREAMS", topic, ">")
            reply = c.read_response()
            c1 = now()
            if reply:
                entries = next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]
                eid, fields = entries[0]
                e = take.serve(fields[1], c0, c1)
                c.send_command("XACK", topic, "raw", eid)
                c.read_response()
                take.acked(e)
        r.close()
    elif broker == "rabbitmq":
        import pika
        cn = pika.BlockingConnection(pika.URLParameters(url))
        ch = cn.channel()
        ch.basic_qos(prefetch_count=100)
        inbox: collections.deque = collections.deque()
        ch.basic_consume(topic, lambda _ch, m, _p, body: inbox.append((m.delivery_tag, body)))
        conn.send_bytes(b"ready")
        while not take.end and time.monotonic() < deadline:
            c0 = now()
            if not inbox:
                cn.process_data_events(time_limit=POLL_S)
            if inbox:
                tag, body = inbox.popleft()
                e = take.serve(body, c0, now())
                ch.basic_ack(tag)
                take.acked(e)
        cn.close()
    elif broker == "kafka":
        from confluent_kafka import Consumer

        from brokers.kafka.adapter import CONSUMER_KEYS, _client_log
        o = _kafka_options(url)
        cs = Consumer({"bootstrap.servers": _servers(url), "logger": _client_log, "group.id": f"raw-{topic}",
                       "enable.auto.commit": False, "heartbeat.interval.ms": o["heartbeat.interval.ms"],
                       "partition.assignment.strategy": o["partition.assignment.strategy"],
                       **{k: o[k] for k in CONSUMER_KEYS}})
        assigned: list = []
        cs.subscribe([topic], on_assign=lambda _c, parts: assigned.extend(parts))
        stash: list = []
        while not assigned:
            stash.extend(cs.consume(1, 0.1))
        conn.send_bytes(b"ready")
        while not take.end and time.monotonic() < deadline:
            c0 = now()
            if stash:
                ms = [stash.pop(0)]
            else:
                ms = cs.consume(1, POLL_S)
            c1 = now()
            for m in ms:
                if m.error() is None:
                    e = take.serve(m.value(), c0, c1)
                    cs.commit(message=m, asynchronous=False)
                    take.acked(e)
        cs.close()
    elif broker == "nats":
        import asyncio

        import nats

        async def main():
            nc = await nats.connect(url)
            js = nc.jetstream()
            sub = await js.pull_subscribe(topic, durable="raw", stream=_stream(topic))
            conn.send_bytes(b"ready")
            while not take.end and time.monotonic() < deadline:
                c0 = now()
                try:
                    msgs = await sub.fetch(1, timeout=POLL_S)
                except (asyncio.TimeoutError, nats.errors.TimeoutError):
                    continue
                c1 = now()
                for m in msgs:
                    e = take.serve(m.data, c0, c1)
                    await m.ack_sync()
                    take.acked(e)
            await nc.close()
        asyncio.run(main())
    elif broker == "zeromq":
        import zmq
        sock = zmq.Context.instance().socket(zmq.PULL)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(url)
        conn.send_bytes(b"ready")
        while not take.end and time.monotonic() < deadline:
            c0 = now()
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                if not sock.poll(int(POLL_S * 1000)):
                    continue
                frames = sock.recv_multipart(copy=False)
            take.acked(take.serve(frames[0].bytes, c0, now()))
        sock.close()
    conn.send_bytes(take.result())


def _read(data: bytes) -> dict:
    n = struct.unpack_from("<3q", data)
    out, at = {}, 24
    for name, k in zip(("lat", "recv", "ack"), n):
        out[name] = np.frombuffer(data, np.int64, k, at)
        at += 8 * k
    return out


# -- broker helpers ------------------------------------------------------------------------------------
def _servers(url: str) -> str:
    from brokers.kafka.client import bootstrap_servers
    return bootstrap_servers(url)


def _kafka_options(url: str) -> dict:
    from brokers.base import Endpoint
    from brokers.kafka.adapter import KafkaBroker
    return KafkaBroker(Endpoint("kafka", url, {})).options


def _stream(topic: str) -> str:
    from brokers.nats.adapter import _name
    return _name(topic)


def _admin(broker: str, endpoint):
    import brokers
    b = brokers.get(broker)(endpoint)
    b.connect(10)
    return b


def raw(broker: str, endpoint, size: int, arrival: str, rate: float, seconds: float, service_ns: int) -> dict:
    """One raw run: {lat, recv, ack} arrays in ns, the first 20% (warm-up) left out."""
    topic = f"raw-{uuid.uuid4().hex[:10]}"
    url = endpoint.url if endpoint is not None else ""
    admin = None
    if broker == "zeromq":
        from testbed.launchers import free_port
        url = f"tcp://127.0.0.1:{free_port()}"
    else:
        admin = _admin(broker, endpoint)
        admin.ensure_topic(topic, 1)
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    r, w = ctx.Pipe(duplex=False)
    cons = ctx.Process(target=_consumer, args=(broker, url, topic, service_ns, seconds, w))
    prod = ctx.Process(target=_producer, args=(broker, url, topic, size, arrival, rate, seconds, start))
    prod.start()
    time.sleep(0.3 if broker == "zeromq" else 0)  # PUSH binds first
    cons.start()
    try:
        if not r.poll(90) or r.recv_bytes() != b"ready":
            raise RuntimeError(f"raw {broker} consumer did not get ready")
        time.sleep(0.5 if broker == "zeromq" else 0)
        start.set()
        if not r.poll(seconds + 90):
            raise RuntimeError(f"raw {broker} consumer sent no result")
        got = _read(r.recv_bytes())
    finally:
        C.join_all((prod, cons))
        if admin is not None:
            admin.delete_topic(topic)
            admin.close()
    skip = lambda a: a[int(len(a) * C.WARMUP_SHARE):]  # noqa: E731
    return {k: skip(v) for k, v in got.items()}


def _p50_us(a) -> float:
    return float(np.percentile(a, 50) / 1e3) if len(a) else float("nan")


# -- the harness -------------------------------------------------------------------------------------
def harness(broker: str, handle, out_root: str, **kw) -> dict:
    cfg = RunConfig(broker=broker, launcher="local" if handle is not None else "auto", fanout="1",
                    producer_rate=float("inf"), batch_max=1, no_trace=True, seed=1,
                    out=os.path.join(out_root, f"{broker}-{now()}"), **kw)
    return C.harness(cfg, handle)


def raw_side(broker: str, handle, args) -> dict:
    C.say(f"{broker}: raw loop, cost at {args.cost_rate:g}/s and e2e at {args.fixed_rate:g}/s ...")
    out = {}
    if broker != "inproc":
        ep = handle.endpoint if handle is not None else None
        cost = raw(broker, ep, args.cost_bytes, "poisson", args.cost_rate, args.seconds, 10_000_000)
        out["recv"], out["ack"] = _p50_us(cost["recv"]), _p50_us(cost["ack"]) if broker != "zeromq" else 0.0
        out["calls"] = out["recv"] + out["ack"]
        lat = raw(broker, ep, args.e2e_bytes, "constant", args.fixed_rate, args.seconds, 0)
        out["e2e"] = float(np.percentile(lat["lat"], 50) / 1e6)
    return out


def cost_run(broker: str, handle, args, out_root: str, ack: str = "") -> dict:
    """One harness run at batch 1 with 10 ms of service: the per-message client costs it measured."""
    s = harness(broker, handle, out_root, rate=args.cost_rate, arrival="poisson", consumer_rate=100.0,
                message_bytes=args.cost_bytes, duration=args.seconds / (1 - C.WARMUP_SHARE),
                warmup=args.seconds * C.WARMUP_SHARE / (1 - C.WARMUP_SHARE), drain=3.0, ack=ack)
    num = lambda k: float(s[k]) if s.get(k) not in (None, "") else 0.0  # noqa: E731
    out = {"recv": num("recv_call_p50_us"), "ack": num("ack_call_p50_us"), "harness": num("b_harness_p50_us"),
           "rho_m": num("rho_measured")}
    out["calls"] = out["recv"] + out["ack"]
    return out


def harness_side(broker: str, handle, args, out_root: str) -> dict:
    C.say(f"{broker}: harness, cost at {args.cost_rate:g}/s and e2e at {args.fixed_rate:g}/s ...")
    out = cost_run(broker, handle, args, out_root)
    e = harness(broker, handle, out_root, rate=args.fixed_rate, arrival="constant", consumer_rate=float("inf"),
                message_bytes=args.e2e_bytes, duration=args.seconds / (1 - C.WARMUP_SHARE),
                warmup=args.seconds * C.WARMUP_SHARE / (1 - C.WARMUP_SHARE), drain=3.0)
    out["e2e"] = float(e["e2e_p50_ms"])
    return out


def main(argv=None) -> int:
    ap = C.parser(__doc__, seconds=10.0, fixed_rate=200.0)
    ap.add_argument("--brokers", default=",".join(ALL_BROKERS))
    ap.add_argument("--cost-rate", type=float, default=80.0, help="msg/s offered in the cost runs (10 ms service)")
    ap.add_argument("--cost-bytes", type=int, default=150528)
    ap.add_argument("--e2e-bytes", type=int, default=1024)
    ap.add_argument("--update", metavar="MD", help=f"replace the section {SECTION!r} of this markdown file")
    ap.add_argument("--no-modes", dest="modes", action="store_false",
                    help="skip the cost run per --ack mode (harness only)")
    args = ap.parse_args(argv)
    from testbed.launchers import launch
    out_root = tempfile.mkdtemp(prefix="bench-clients-")
    rows, mode_rows = [], []
    t_start = time.monotonic()
    for broker in args.brokers.split(","):
        handle = None
        if broker in SERVER_BROKERS:
            cfg = RunConfig(broker=broker, launcher="local", broker_impl="apache" if broker == "kafka" else "")
            handle = launch(cfg, f"bench-{broker}", os.path.join(out_root, f"server-{broker}"))
        impl = handle.endpoint.impl if handle is not None else broker
        try:
            got = C.alternate({"raw": lambda b=broker, h=handle: raw_side(b, h, args),
                               "harness": lambda b=broker, h=handle: harness_side(b, h, args, out_root)},
                              args.repeat)
            if args.modes and handle is not None:
                for mode in ACK_MODES:
                    C.say(f"{broker}: harness cost with --ack {mode} ...")
                    m = cost_run(broker, handle, args, out_root, ack=mode)
                    mode_rows.append([impl, mode, f"{m['recv']:.0f}", f"{m['ack']:.0f}", f"{m['calls']:.0f}",
                                      f"{m['harness']:.1f}"])
        finally:
            if handle is not None:
                handle.stop()
        rw, hs = got["raw"], got["harness"]
        has_raw = bool(rw[0])
        ratio = f"{C.med(hs, 'calls') / C.med(rw, 'calls'):.2f}" if has_raw and C.med(rw, "calls") > 0 else "-"
        bound = f"{C.med(rw, 'e2e') * 1.1 + 0.1:.3f}" if has_raw else "-"
        rows.append([impl,
                     f"{C.cell(rw, 'recv', '{:.0f}')} / {C.cell(rw, 'ack', '{:.0f}')}" if has_raw else "-",
                     f"{C.cell(hs, 'recv', '{:.0f}')} / {C.cell(hs, 'ack', '{:.0f}')}", ratio,
                     C.cell(hs, "harness", "{:.1f}"), C.cell(hs, "rho_m", "{:.3f}"),
                     C.cell(rw, "e2e") if has_raw else "-", C.cell(hs, "e2e"), bound])
    took = time.monotonic() - t_start
    head = (f"{C.machine()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; shared with other jobs, so "
            f"noisy. Cost: Poisson {args.cost_rate:g} msg/s of {args.cost_bytes} bytes, batch 1, 10 ms fixed "
            f"service (sleep), the default ack mode, {args.seconds:g} s measured; e2e: constant "
            f"{args.fixed_rate:g} msg/s of {args.e2e_bytes} bytes, no service, batch 1. {args.repeat} alternating "
            f"raw/harness measurements per row (median, min-max in brackets); whole benchmark {took:.0f} s.\n\n")
    table = C.table(["broker", "raw receive / ack p50 us", "harness receive / ack p50 us",
                     "harness/raw (receive + ack)", "harness bookkeeping p50 us", "harness rho measured (0.8 nominal)",
                     "raw e2e p50 ms", "harness e2e p50 ms", "bound: raw x 1.1 + 0.1 ms"], rows)
    if mode_rows:
        table += ("\nThe same cost run once per `--ack` mode (harness only, one run each, the same load):\n\n"
                  + C.table(["broker", "--ack", "receive p50 us", "ack p50 us", "receive + ack us",
                             "bookkeeping p50 us"], mode_rows))
    C.emit(head + table, args.write)
    if args.update:
        update(args.update, head + table)
    return 0


def update(path: str, body: str) -> None:
    """Replace the text under ``SECTION`` (to the next heading of the same level) with ``body``, keeping
    the section's first paragraph (what the table is) when there is one: the generated part sits between
    two markers."""
    text = open(path, encoding="utf-8").read()
    start, stop = "<!-- clients.py table -->", "<!-- /clients.py table -->"
    block = f"{start}\n{body.rstrip()}\n{stop}"
    if start in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(stop), lambda _m: block, text, flags=re.S)
    elif SECTION in text:
        i = text.index(SECTION) + len(SECTION)
        text = text[:i] + "\n\n" + block + text[i:]
    else:
        text = text.rstrip() + f"\n\n{SECTION}\n\n{block}\n"
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


if __name__ == "__main__":
    sys.exit(main())
