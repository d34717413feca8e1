"""Benchmark: the harness on Redis Streams and RabbitMQ (and ZeroMQ for reference) against a raw client
loop with the same client library and the same settings, in the same run, on the same broker instance.

Layout for both sides: one producer process and one consumer process (multiprocessing spawn), the
broker a private local process (``--launcher local``) started once per broker and shared by the raw and
the harness measurements. Payloads 1 KB and 150 KB.

- max rate: the producer publishes flat out for ``--seconds``; messages/s that reach the consumer
  (from its first message to the end of the window). The harness runs ``--producer-rate inf
  --consumer-rate inf`` with an offered rate far above what the broker takes; its ``throughput_out``.
- latency at a fixed rate: constant arrivals at ``--fixed-rate`` msg/s; the raw producer puts its
  intended send time in the message and the consumer subtracts it from its clock (one monotonic clock
  on Linux); the harness's e2e p50/p99 (also from the intended time). The first 20% is warm-up.

Same settings on both sides: Redis, one XADD per message with fields h/p, XREADGROUP COUNT ``--batch``
BLOCK 50 ms, XACK per batch, all on one redis-py ``Connection`` (send_command/read_response, as the
adapter does: see brokers/redis_streams.py for why); RabbitMQ, transient queue and messages, no confirms, prefetch 100,
basic_consume + process_data_events, one multiple-ack per batch; ZeroMQ: benchmarks/embedded.py's raw
loop. The harness runs with ``--batch-max`` = ``--batch``.

Raw and harness sides alternate ``--repeat`` times (default 3; medians and min-max spread in the table).
Goal: the harness reaches at least 90% of the raw loop's rate and adds under 10% to its p50.
A benchmark, not a test. Run it under the lock, it loads both cores for several minutes:

    flock /tmp/testbed-bench.lock .venv/bin/python benchmarks/brokers.py [--write docs/brokers-bench.md]
"""
from __future__ import annotations

import multiprocessing as mp
import os
import sys
import tempfile
import time

import _common as C  # noqa: E402 - first: the project's ``brokers`` package, not this file

from testbed.config import RunConfig  # noqa: E402

now = C.now
MAX_OFFERED = 300_000.0  # as benchmarks/embedded.py: 100k capped the ZeroMQ 1 KB harness max below the raw loop's
PREFETCH = 100
STAMP = C.STAMP


# -- raw producer/consumer, one process each ----------------------------------------------------------
def _producer(broker, url, topic, size, mode, seconds, rate, start):
    payload = os.urandom(size)
    start.wait()
    if broker == "redis":
        import redis
        r = redis.Redis.from_url(url)
        c = r.connection_pool.get_connection()
        for intended in C.send_times(mode, seconds, rate):
            c.send_command("XADD", topic, "*", b"h", STAMP.pack(intended), b"p", payload)
            c.read_response()
        r.xadd(topic, {b"h": b"END", b"p": b""})
        r.close()
    else:
        import pika
        conn = pika.BlockingConnection(pika.URLParameters(url))
        ch = conn.channel()
        for intended in C.send_times(mode, seconds, rate):
            ch.basic_publish("", topic, b"".join((STAMP.pack(intended), payload)))
        ch.basic_publish("", topic, b"END")
        conn.close()


def _consumer(broker, url, topic, mode, seconds, batch, conn):
    lat: list[int] = []
    state = {"n": 0, "first": 0, "last": 0, "end": False}
    window = int(seconds * 1e9)

    def take(stamps):
        t = now()
        for head in stamps:
            if head[:3] == b"END":
                state["end"] = True
                return
            if not state["first"]:
                state["first"] = t
            elif mode == "max" and t - state["first"] > window:
                state["end"] = True
                return
            state["n"] += 1
            state["last"] = t
            if mode != "max":
                lat.append(t - STAMP.unpack_from(head)[0])

    if broker == "redis":
        import redis
        r = redis.Redis.from_url(url)
        r.xgroup_create(topic, "raw", id="0", mkstream=True)
        c = r.connection_pool.get_connection()
        conn.send_bytes(b"ready")
        while not state["end"]:
            c.send_command("XREADGROUP", "GROUP", "raw", "c0", "COUNT", batch, "BLOCK", 50, "STREAMS", topic, ">")
            reply = c.read_response()
            if reply:
                entries = next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]
                take(fields[1] for _, fields in entries)
                c.send_command("XACK", topic, "raw", *[eid for eid, _ in entries])
                c.read_response()
        r.close()
    else:
        import collections

        import pika
        c = pika.BlockingConnection(pika.URLParameters(url))
        ch = c.channel()
        ch.basic_qos(prefetch_count=PREFETCH)
        inbox: collections.deque = collections.deque()
        ch.basic_consume(topic, lambda _ch, m, _p, body: inbox.append((m.delivery_tag, body)))
        conn.send_bytes(b"ready")
        while not state["end"]:
            if not inbox:
                c.process_data_events(time_limit=0.05)
                if inbox:
                    c.process_data_events(0)
            got = [inbox.popleft() for _ in range(min(batch, len(inbox)))]
            if got:
                take(body for _, body in got)
                ch.basic_ack(got[-1][0], multiple=True)
        c.close()
    if mode == "max":
        conn.send_bytes(C.max_result(state["n"], state["last"] - state["first"]))
    else:
        conn.send_bytes(C.latency_result(lat))


def raw(broker: str, url: str, size: int, mode: str, seconds: float, rate: float, batch: int):
    topic = f"raw-{mode}-{size}-{os.getpid()}-{now()}"
    _make_topic(broker, url, topic)
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    r, w = ctx.Pipe(duplex=False)
    cons = ctx.Process(target=_consumer, args=(broker, url, topic, mode, seconds, batch, w))
    prod = ctx.Process(target=_producer, args=(broker, url, topic, size, mode, seconds, rate, start))
    cons.start()
    prod.start()
    try:
        assert r.poll(60) and r.recv_bytes() == b"ready"
        start.set()
        assert r.poll(seconds + 60), "raw consumer got no result"
        data = r.recv_bytes()
    finally:
        C.join_all((prod, cons))
        _drop_topic(broker, url, topic)
    return C.read_result(mode, data)


def _make_topic(broker, url, topic):
    if broker == "rabbitmq":
        import pika
        c = pika.BlockingConnection(pika.URLParameters(url))
        c.channel().queue_declare(topic)
        c.close()


def _drop_topic(broker, url, topic):
    if broker == "redis":
        import redis
        r = redis.Redis.from_url(url)
        r.delete(topic)
        r.close()
    else:
        import pika
        c = pika.BlockingConnection(pika.URLParameters(url))
        c.channel().queue_delete(topic)
        c.close()


# -- the harness -------------------------------------------------------------------------------------
def harness(broker: str, handle, size: int, rate: float, seconds: float, batch: int, out_root: str) -> dict:
    cfg = RunConfig(broker=broker, launcher="local", rate=rate, arrival="constant", fanout="1",
                    producer_rate=float("inf"), consumer_rate=float("inf"), message_bytes=max(size, 64),
                    duration=seconds + 1.0, warmup=1.0, drain=2.0, no_trace=True, seed=1, batch_max=batch,
                    out=os.path.join(out_root, f"{broker}-{size}-{int(rate)}-{now()}"))
    return C.harness(cfg, handle, partial_ok=True)


def raw_side(broker: str, handle, size: int, args) -> dict:
    C.say(f"{broker} {size} B: raw max and latency ...")
    if broker == "zeromq":
        from embedded import raw_zmq
        top, lat = raw_zmq(size, "max", args.seconds), raw_zmq(size, "latency", args.seconds, args.fixed_rate)
    else:
        url = handle.endpoint.url
        top = raw(broker, url, size, "max", args.seconds, 0, args.batch)
        lat = raw(broker, url, size, "latency", args.seconds, args.fixed_rate, args.batch)
    p50, p99 = C.percentiles_ms(lat)
    return {"max": top, "p50": p50, "p99": p99}


def harness_side(broker: str, handle, size: int, args, out_root: str, offered: list) -> dict:
    C.say(f"{broker} {size} B: harness ...")
    h = harness(broker, handle, size, offered[0] if offered else MAX_OFFERED, args.seconds, args.batch, out_root)
    hl = harness(broker, handle, size, args.fixed_rate, args.seconds, args.batch, out_root)
    return {"max": float(h["throughput_out"]), "p50": float(hl["e2e_p50_ms"]), "p99": float(hl["e2e_p99_ms"])}


def main(argv=None) -> int:
    ap = C.parser(__doc__, seconds=3.0, sizes="1024,153600", fixed_rate=200.0)
    ap.add_argument("--batch", type=int, default=100, help="consumer batch (COUNT / --batch-max)")
    ap.add_argument("--brokers", default="redis,rabbitmq,zeromq")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    out_root = tempfile.mkdtemp(prefix="bench-brokers-")
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
                offered: list = []  # the harness is offered twice the first raw max

                def raw_once(broker=broker, handle=handle, size=size, offered=offered):
                    r = raw_side(broker, handle, size, args)
                    if not offered:
                        offered.append(min(max(2 * r["max"], 1000.0), MAX_OFFERED))
                    return r
                got = C.alternate({"raw": raw_once,
                                   "harness": lambda broker=broker, handle=handle, size=size, offered=offered:
                                   harness_side(broker, handle, size, args, out_root, offered)}, args.repeat)
                rw, hs = got["raw"], got["harness"]
                rows.append([f"{broker} ({impl})", size, C.cell(rw, "max", "{:,.0f}"), C.cell(hs, "max", "{:,.0f}"),
                             f"{C.med(hs, 'max') / C.med(rw, 'max'):.0%}",
                             f"{C.cell(rw, 'p50')} / {C.cell(rw, 'p99')}",
                             f"{C.cell(hs, 'p50')} / {C.cell(hs, 'p99')}",
                             f"{(C.med(hs, 'p50') / C.med(rw, 'p50') - 1):+.0%}"])
        finally:
            if handle is not None:
                handle.stop()
    took = time.monotonic() - t_start
    head = (f"{C.machine()}; shared with other developers' jobs, so noisy. {args.seconds:g} s per measurement, "
            f"latency at {args.fixed_rate:g} msg/s constant, consumer batch {args.batch}; {args.repeat} "
            f"alternating raw/harness measurements per row (median, min-max in brackets); whole benchmark "
            f"{took:.0f} s.\n\n")
    C.emit(head + C.table(["broker", "bytes", "raw max msg/s", "harness max msg/s", "harness/raw",
                           "raw p50/p99 ms", "harness e2e p50/p99 ms", "p50 added"], rows), args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
