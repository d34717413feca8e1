"""Benchmark: stage A's publish rate with N camera streams against N raw producer processes of the same
client library and settings, same run, same broker instance.

For each broker (every broker with a server, and zeromq), payload size (1 KB, 150 KB) and N (1, 4):

- raw: N producer processes publishing flat out, with the same client calls and options as the broker's
  adapter: redis-py XADD on one Connection; pika basic_publish of one body; confluent-kafka produce to an
  explicit partition (N > 1: producer i keyed to partition i, as the adapter keys a stream) with poll(0);
  JetStream publish waiting for each PubAck (nats-py's own API; the adapter speaks the same protocol
  through nats-py's connection); pyzmq PUSH binding its own endpoint, two frames, the adapter's copy
  threshold. Each counts what it published in the measured window (after a warm-up); ``in`` is their sum
  per second, and ``us/msg`` what one message cost one producer.
- harness, ``--mode producers`` (the default): the harness's stage A alone, ``producer_main`` of
  testbed/harness/loops.py for each stream with every stamp, publish-call time and record it makes (read
  by the orchestrator's Collector), offered constant arrivals far above what the raw side carried (every
  stage A flat out, ``--producer-rate inf``); no stage B on either side (ZeroMQ: a raw drain as the PUSH
  sockets' peer on both sides). Its ``in`` comes from its frame records; it also gives the p50 of its
  publish call and of its own bookkeeping per message (envelope header, stamps, records).
- ``--mode system``: whole runs, ``testbed.run --streams N --consumer-rate inf`` with one replica (batch
  ``--batch``) against the raw producers plus one raw consumer (benchmarks/brokers.py's, kafka.py's and
  nats.py's consumer loops); ``in`` is the run's ``throughput_in``, ``out`` what reached the consumer per
  second. On a 2-core machine the consumer, the broker and the producers share the cores, so this mixes
  stage B's cost into stage A's rate.

Target: the harness's stage A publishes at least 95% of what N raw producers do. Raw and harness
alternate ``--repeat`` times (default 3; median and min-max spread). A benchmark, not a test; it loads
both cores for several minutes:

    flock /tmp/testbed-heavy.lock .venv/bin/python benchmarks/streams.py [--mode producers|system] \
        [--brokers zeromq,redis] [--streams 1,4] [--sizes 1024,153600] [--seconds 3] [--repeat 3] [--write FILE]
"""
from __future__ import annotations

import multiprocessing as mp
import os
import struct
import sys
import tempfile
import time
import uuid

import _common as C  # noqa: E402 - first: the project's ``brokers`` package

from testbed.config import RunConfig  # noqa: E402

now = C.now
HEADER = 64          # the harness's envelope header (bytes): raw messages carry as many in front
WARM_S = 1.0         # seconds of flat-out publishing before the measured window (both sides)
TAIL_S = 1.0         # raw producers go on this long after the window (the consumer's window lags)
CHUNK = 16           # raw producers read the clock once per this many messages
COUNT = struct.Struct("<qq")  # (messages in the window, window ns)
ALL = "redis,rabbitmq,kafka,nats,zeromq"


# -- raw producers -------------------------------------------------------------------------------------
def _sender(broker: str, url: str, topic: str, size: int, stream: int, streams: int):
    """(send(): publish one message, close()) with the adapter's library and settings."""
    head, payload = b"\0" * HEADER, os.urandom(max(0, size - HEADER))
    if broker == "redis":
        import redis
        r = redis.Redis.from_url(url)
        c = r.connection_pool.get_connection()

        def send():
            c.send_command("XADD", topic, "*", b"h", head, b"p", payload)
            c.read_response()
        return send, r.close
    if broker == "rabbitmq":
        import pika
        conn = pika.BlockingConnection(pika.URLParameters(url))
        ch = conn.channel()
        props = pika.BasicProperties()

        def send():
            ch.basic_publish("", topic, b"".join((head, payload)), props, mandatory=False)
        return send, conn.close
    raise ValueError(broker)


def _kafka_sender(url, topic, size, stream, streams):
    from confluent_kafka import Producer

    from brokers.base import Endpoint
    from brokers.kafka.adapter import PRODUCER_KEYS, KafkaBroker, _client_log, bootstrap_servers
    servers = bootstrap_servers(url)
    o = KafkaBroker(Endpoint("kafka", url, {})).options
    p = Producer({"bootstrap.servers": servers, "logger": _client_log, "delivery.report.only.error": True,
                  **{k: o[k] for k in PRODUCER_KEYS}})
    p.list_topics(topic, timeout=10)
    head, payload = b"\0" * HEADER, os.urandom(max(0, size - HEADER))
    key = str(stream).encode() if streams > 1 else None
    part = stream if streams > 1 else 0
    produce, poll = p.produce, p.poll

    def send():
        value = b"".join((head, payload))
        while True:
            try:
                produce(topic, value, partition=part, key=key)
                break
            except BufferError:
                poll(0.05)
        poll(0)
    return send, lambda: p.flush(30)


def _nats_producer(url, topic, size, seconds, start, conn):
    import asyncio

    import nats

    async def main():
        nc = await nats.connect(url)
        js = nc.jetstream()
        data = b"\0" * HEADER + os.urandom(max(0, size - HEADER))
        start.wait()
        n, w0, w1, end = _window(seconds)
        t = now()
        while t < end:
            for _ in range(CHUNK):
                await js.publish(topic, data)
            t = now()
            if w0 <= t < w1:
                n += CHUNK
        await nc.close()
        conn.send_bytes(COUNT.pack(n, w1 - w0))
    asyncio.run(main())


def _zmq_producer(url, size, seconds, ready, start, conn):
    import zmq
    ctx = zmq.Context()
    s = ctx.socket(zmq.PUSH)
    s.setsockopt(zmq.SNDHWM, 0)
    s.setsockopt(zmq.LINGER, 0)
    s.bind(url)
    head, payload = b"\0" * HEADER, os.urandom(max(0, size - HEADER))
    copy = len(payload) < 10240  # the adapter's copy_threshold
    ready.set()
    start.wait()
    n, w0, w1, end = _window(seconds)
    t = now()
    while t < end:
        for _ in range(CHUNK):
            s.send(head, zmq.SNDMORE)
            s.send(payload, copy=copy)
        t = now()
        if w0 <= t < w1:
            n += CHUNK
    conn.send_bytes(COUNT.pack(n, w1 - w0))
    s.close(0)
    ctx.term()


SECONDS = [3.0]  # set by main (spawned children read it from their arguments, not from here)


def _window(seconds: float | None = None):
    s = SECONDS[0] if seconds is None else seconds
    t = now()
    w0 = t + int(WARM_S * 1e9)
    w1 = w0 + int(s * 1e9)
    return 0, w0, w1, w1 + int(TAIL_S * 1e9)


def _producer(broker, url, topic, size, seconds, stream, streams, start, conn):
    SECONDS[0] = seconds
    if broker == "kafka":
        send, close = _kafka_sender(url, topic, size, stream, streams)
    else:
        send, close = _sender(broker, url, topic, size, stream, streams)
    start.wait()
    n, w0, w1, end = _window(seconds)
    t = now()
    while t < end:
        for _ in range(CHUNK):
            send()
        t = now()
        if w0 <= t < w1:
            n += CHUNK
    close()
    conn.send_bytes(COUNT.pack(n, w1 - w0))


def _nats_entry(url, topic, size, seconds, stream, streams, start, conn):
    SECONDS[0] = seconds
    _nats_producer(url, topic, size, seconds, start, conn)


# -- raw consumers: drain flat out, count what arrives in a window as long as the producers' ------------
def _counter(seconds: float, stop):
    """take(k) counts k messages (within the window from the first message); True once ``stop`` is set (the
    producers are done: a consumer that left earlier would block a PUSH socket with no peer)."""
    st = {"n": 0, "first": 0, "last": 0, "calls": 0}
    window = int((WARM_S + seconds) * 1e9)

    def take(k: int) -> bool:
        st["calls"] += 1
        if k:
            t = now()
            if not st["first"]:
                st["first"] = t
            if t - st["first"] <= window:
                st["n"] += k
                st["last"] = t
        return not st["calls"] % 16 and stop.is_set()
    return take, lambda: C.max_result(st["n"], max(1, st["last"] - st["first"]))


def _consumer(broker, url, topic, seconds, batch, stop, conn):
    take, result = _counter(seconds, stop)
    if broker == "zeromq":
        import zmq
        ctx = zmq.Context()
        s = ctx.socket(zmq.PULL)
        s.setsockopt(zmq.RCVHWM, 0)
        s.setsockopt(zmq.LINGER, 0)
        for u in url:
            s.connect(u)
        conn.send_bytes(b"ready")
        done = False
        while not done:
            if not s.poll(100):
                done = take(0)
                continue
            k = 0
            while k < batch:
                try:
                    s.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                k += 1
            done = take(k)
        s.close(0)
        ctx.term()
    elif broker == "redis":  # benchmarks/brokers.py's loop
        import redis
        r = redis.Redis.from_url(url)
        r.xgroup_create(topic, "raw", id="0", mkstream=True)
        c = r.connection_pool.get_connection()
        conn.send_bytes(b"ready")
        done = False
        while not done:
            c.send_command("XREADGROUP", "GROUP", "raw", "c0", "COUNT", batch, "BLOCK", 50, "STREAMS", topic, ">")
            reply = c.read_response()
            entries = (next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]) if reply else []
            if entries:
                c.send_command("XACK", topic, "raw", *[eid for eid, _ in entries])
                c.read_response()
            done = take(len(entries))
        r.close()
    elif broker == "rabbitmq":  # benchmarks/brokers.py's loop
        import collections

        import pika
        cn = pika.BlockingConnection(pika.URLParameters(url))
        ch = cn.channel()
        ch.basic_qos(prefetch_count=100)
        inbox: collections.deque = collections.deque()
        ch.basic_consume(topic, lambda _ch, m, _p, body: inbox.append(m.delivery_tag))
        conn.send_bytes(b"ready")
        done = False
        while not done:
            if not inbox:
                cn.process_data_events(time_limit=0.05)
                if inbox:
                    cn.process_data_events(0)
            got = [inbox.popleft() for _ in range(min(batch, len(inbox)))]
            if got:
                ch.basic_ack(got[-1], multiple=True)
            done = take(len(got))
        cn.close()
    elif broker == "kafka":  # benchmarks/kafka.py's loop
        from confluent_kafka import Consumer

        from brokers.base import Endpoint
        from brokers.kafka.adapter import CONSUMER_KEYS, KafkaBroker, _client_log, bootstrap_servers
        o = KafkaBroker(Endpoint("kafka", url, {})).options
        c = Consumer({"bootstrap.servers": bootstrap_servers(url), "logger": _client_log,
                      "group.id": f"raw-{topic}", "enable.auto.commit": False,
                      "heartbeat.interval.ms": o["heartbeat.interval.ms"], **{k: o[k] for k in CONSUMER_KEYS}})
        assigned = []
        c.subscribe([topic], on_assign=lambda cons, parts: assigned.extend(parts))
        while not assigned:
            c.consume(1, 0.1)
        conn.send_bytes(b"ready")
        done = False
        while not done:
            ms = c.consume(1, 0.1)
            if ms:
                ms.extend(c.consume(batch - 1, 0))
                c.commit(message=ms[-1], asynchronous=True)
            done = take(len(ms))
        c.close()
    else:  # nats: benchmarks/nats.py's loop
        import asyncio

        import nats

        from brokers.nats.adapter import _name

        async def main():
            nc = await nats.connect(url)
            js = nc.jetstream()
            sub = await js.pull_subscribe(topic, durable="bench", stream=_name(topic))
            conn.send_bytes(b"ready")
            done = False
            while not done:
                try:
                    msgs = await sub.fetch(batch, timeout=0.05)
                except asyncio.TimeoutError:
                    done = take(0)
                    continue
                for m in msgs:
                    await m.ack()
                done = take(len(msgs))
            await nc.close()
        asyncio.run(main())
    conn.send_bytes(result())


def raw(broker: str, handle, size: int, streams: int, seconds: float, batch: int, consume: bool = True) -> dict:
    """N raw producers (and one raw consumer; ``consume=False``: none, except ZeroMQ's drain, which a PUSH
    socket needs as a peer): their publish rate ``in`` and the consumer's ``out``."""
    ctx = mp.get_context("spawn")
    start, stop = ctx.Event(), ctx.Event()
    topic = f"streams-{size}-{streams}-{uuid.uuid4().hex[:8]}"
    url = handle.endpoint.url if handle is not None else ""
    results = [ctx.Pipe(duplex=False) for _ in range(streams)]
    cr, cw = ctx.Pipe(duplex=False)
    procs = []
    admin = None
    if broker == "zeromq":
        from testbed.launchers import free_port
        urls = [f"tcp://127.0.0.1:{free_port()}" for _ in range(streams)]
        readies = [ctx.Event() for _ in range(streams)]
        procs = [ctx.Process(target=_zmq_producer, args=(urls[i], size, seconds, readies[i], start, results[i][1]))
                 for i in range(streams)]
        for p in procs:
            p.start()
        for e in readies:
            e.wait(30)
        cons = ctx.Process(target=_consumer, args=(broker, urls, topic, seconds, batch, stop, cw))
    else:
        if broker in ("rabbitmq", "kafka", "nats"):
            import brokers
            admin = brokers.get(broker)(handle.endpoint)
            admin.connect(10)
            admin.ensure_topic(topic, streams)
        cons = ctx.Process(target=_consumer, args=(broker, url, topic, seconds, batch, stop, cw)) if consume else None
        if broker == "nats":
            procs = [ctx.Process(target=_nats_entry, args=(url, topic, size, seconds, i, streams, start,
                                                            results[i][1])) for i in range(streams)]
        else:
            procs = [ctx.Process(target=_producer, args=(broker, url, topic, size, seconds, i, streams, start,
                                                         results[i][1])) for i in range(streams)]
        for p in procs:
            p.start()
    if cons is not None:
        cons.start()
    try:
        if cons is not None:
            if not cr.poll(90):
                raise RuntimeError(f"raw {broker} consumer not ready")
            cr.recv_bytes()
        time.sleep(0.3)  # connections up before the first message
        start.set()
        total = 0.0
        for r, _ in results:
            if not r.poll(seconds + 90):
                raise RuntimeError(f"raw {broker} producer sent no result")
            n, ns = COUNT.unpack(r.recv_bytes())
            total += n / (ns / 1e9)
        stop.set()
        out = C.read_result("max", cr.recv_bytes()) if cons is not None and cr.poll(seconds + 30) else float("nan")
    finally:
        stop.set()
        C.join_all(procs + ([cons] if cons is not None else []))
        if broker == "redis":
            import redis
            r = redis.Redis.from_url(url)
            r.delete(topic)
            r.close()
        elif admin is not None:
            admin.delete_topic(topic)
            admin.close()
    return {"in": total, "out": out}


# -- the harness ---------------------------------------------------------------------------------------
def harness(broker: str, handle, size: int, streams: int, rate: float, seconds: float, batch: int,
            out_root: str) -> dict:
    from testbed.config import MAX_MESSAGES
    duration = WARM_S + seconds
    rate = min(rate, MAX_MESSAGES / duration * 0.9)
    cfg = RunConfig(broker=broker, launcher="local" if handle is not None else "auto", rate=rate,
                    arrival="constant", fanout="1", producer_rate=float("inf"), consumer_rate=float("inf"),
                    message_bytes=max(size, HEADER), duration=duration, warmup=WARM_S, drain=2.0, no_trace=True,
                    seed=1, batch_max=batch, streams=streams,
                    out=os.path.join(out_root, f"{broker}-{size}-{streams}-{now()}"))
    s = C.harness(cfg, handle, partial_ok=True)
    return {"in": float(s["throughput_in"]), "out": float(s["throughput_out"])}


def harness_producers(broker: str, handle, size: int, streams: int, rate: float, seconds: float,
                      out_root: str) -> dict:
    """The harness's stage A alone: ``producer_main`` for each stream (every stamp, publish-call time and
    record it makes, read by the orchestrator's Collector), no stage B (ZeroMQ: the raw drain as its peer).
    ``in``: messages published per second in the window; ``a_us``/``call_us``: p50 of stage A's bookkeeping
    per message and of the publish call (the records' own figures)."""
    import numpy as np

    import brokers
    from testbed.config import MAX_MESSAGES, validate
    from testbed.harness import loops, records
    from testbed.launchers import launch
    from testbed.orchestration.collector import Collector
    from testbed.orchestration.stages import stream_endpoint
    duration = WARM_S + seconds
    rate = min(rate, MAX_MESSAGES / duration * 0.9)
    cfg = RunConfig(broker=broker, launcher="local" if handle is not None else "auto", rate=rate,
                    arrival="constant", fanout="1", producer_rate=float("inf"), consumer_rate=float("inf"),
                    message_bytes=max(size, HEADER), duration=duration, warmup=WARM_S, drain=0.0, seed=1,
                    streams=streams, out=os.path.join(out_root, f"p-{broker}-{size}-{streams}-{now()}"))
    validate(cfg)
    own = handle is None
    if own:
        handle = launch(cfg, f"bench-{now()}", out_root)
    ep_d = handle.endpoint.__dict__.copy()
    topic = f"streams-h-{size}-{streams}-{uuid.uuid4().hex[:8]}"
    admin = brokers.get(broker)(handle.endpoint)
    admin.connect(10)
    admin.ensure_topic(topic, streams)
    ctx = mp.get_context("spawn")
    start, stop, t0 = ctx.Event(), ctx.Event(), ctx.Value("q", 0)
    pipes = [ctx.Pipe(duplex=False) for _ in range(streams)]
    procs = [ctx.Process(target=loops.producer_main, args=(cfg.to_dict(), stream_endpoint(ep_d, broker, i), topic,
                                                           pipes[i][1], start, stop, t0, False, i, None))
             for i in range(streams)]
    drain_stop = ctx.Event()
    cr, cw = ctx.Pipe(duplex=False)
    drain = ctx.Process(target=_consumer, args=(broker, ep_d["url"].split(","), topic, seconds, 100, drain_stop, cw)) \
        if broker == "zeromq" else None
    for p in procs:
        p.start()
    for _, w in pipes:
        w.close()
    if drain is not None:
        drain.start()
    col = Collector([r for r, _ in pipes], records.message_dtype((), ()), streams)
    try:
        deadline = time.monotonic() + 90
        while len(col.ready) < streams:
            col.poll(0.1)
            if col.errors or time.monotonic() > deadline:
                raise RuntimeError(f"stage A not ready: {col.errors[:1]}")
        t0.value = start_ns = now() + 50_000_000
        start.set()
        end = start_ns + int(duration * 1e9)
        while now() < end:
            col.poll(0.1)
        stop.set()
        deadline = time.monotonic() + 30
        while col.open and time.monotonic() < deadline:
            col.poll(0.1)
        if col.errors:
            raise RuntimeError(col.errors[0].splitlines()[0])
    finally:
        stop.set()
        drain_stop.set()
        C.join_all(procs + ([drain] if drain is not None else []))
        try:
            admin.delete_topic(topic)
        finally:
            admin.close()
            if own:
                handle.stop()
    f = col.frames_array()
    w0 = start_ns + int(WARM_S * 1e9)
    sel = f[(f["published"] >= w0) & (f["published"] < w0 + int(seconds * 1e9)) & (f["n"] > 0)]
    pubs = col.publishes_array()
    a_us = float(np.median(sel["a_harness"] / sel["n"])) / 1e3 if len(sel) else float("nan")
    call_us = float(np.median(pubs["publish_call"])) / 1e3 if len(pubs) else float("nan")
    return {"in": float(sel["n"].sum()) / seconds, "a_us": a_us, "call_us": call_us}


def main(argv=None) -> int:
    ap = C.parser(__doc__, seconds=3.0, sizes="1024,153600")
    ap.add_argument("--brokers", default=ALL, help=f"comma-separated (default {ALL})")
    ap.add_argument("--streams", default="1,4", help="numbers of streams, comma-separated (default 1,4)")
    ap.add_argument("--batch", type=int, default=100, help="consumer batch (both sides)")
    ap.add_argument("--mode", choices=("producers", "system"), default="producers",
                    help="producers: stage A alone against N raw producers (no consumer but ZeroMQ's drain); "
                         "system: whole runs with one consumer on both sides (default producers)")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    counts = [int(s) for s in args.streams.split(",")]
    out_root = tempfile.mkdtemp(prefix="bench-streams-")
    rows = []
    t_start = time.monotonic()
    for broker in args.brokers.split(","):
        handle = None
        if broker != "zeromq":
            from testbed.launchers import launch
            handle = launch(RunConfig(broker=broker, launcher="local"), f"bench-{broker}", out_root)
        impl = handle.endpoint.impl if handle else "pyzmq"
        try:
            for size in sizes:
                for n in counts:
                    offered: list = []

                    def raw_once(broker=broker, handle=handle, size=size, n=n, offered=offered):
                        C.say(f"{broker} {size} B x {n} streams: raw ...")
                        r = raw(broker, handle, size, n, args.seconds, args.batch, consume=args.mode == "system")
                        if not offered:
                            offered.append(max(3 * r["in"], 1000.0))
                        return r

                    def harness_once(broker=broker, handle=handle, size=size, n=n, offered=offered):
                        C.say(f"{broker} {size} B x {n} streams: harness ...")
                        rate = offered[0] if offered else 100_000.0
                        if args.mode == "producers":
                            return harness_producers(broker, handle, size, n, rate, args.seconds, out_root)
                        return harness(broker, handle, size, n, rate, args.seconds, args.batch, out_root)
                    got = C.alternate({"raw": raw_once, "harness": harness_once}, args.repeat)
                    rw, hs = got["raw"], got["harness"]
                    row = [f"{broker} ({impl})", size, n, C.cell(rw, "in", "{:,.0f}"),
                           C.cell(hs, "in", "{:,.0f}"), f"{C.med(hs, 'in') / C.med(rw, 'in'):.0%}"]
                    if args.mode == "producers":
                        row += [f"{1e6 / (C.med(rw, 'in') / n):.1f}", C.cell(hs, "call_us", "{:.1f}"),
                                C.cell(hs, "a_us", "{:.1f}")]
                    else:
                        row += [C.cell(rw, "out", "{:,.0f}"), C.cell(hs, "out", "{:,.0f}")]
                    rows.append(row)
                    C.say("  " + " | ".join(str(c) for c in rows[-1]))
        finally:
            if handle is not None:
                handle.stop()
    took = time.monotonic() - t_start
    who = ("no consumer (ZeroMQ: a raw drain)" if args.mode == "producers"
           else f"one consumer (batch {args.batch}) on both sides")
    head = (f"{C.machine()}; shared with other jobs, so noisy. Mode {args.mode}: {who}. {args.seconds:g} s "
            f"measured per measurement after {WARM_S:g} s flat out; {args.repeat} alternating raw/harness "
            f"measurements per row (median, min-max in brackets); whole benchmark {took:.0f} s.\n\n")
    tail = (["raw us/msg per producer", "harness publish call p50 us", "harness stage A bookkeeping p50 us/msg"]
            if args.mode == "producers" else ["raw out msg/s", "harness out msg/s"])
    C.emit(head + C.table(["broker", "bytes", "streams", "raw in msg/s (N producers)", "harness in msg/s",
                           "harness/raw", *tail], rows, ["l", "r", "r", "r", "r", "r"] + ["r"] * len(tail)),
           args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
