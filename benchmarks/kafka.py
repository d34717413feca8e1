"""Benchmark: Apache Kafka vs tansu through the same adapter and settings, and the harness vs a raw
confluent-kafka loop on Apache Kafka, all in one run (one Apache Kafka broker and one tansu, both started
by the local launcher, side by side).

For each payload size (1 KB, 150 KB):
- max rate: stage A flat out (``--producer-rate inf``, an offered rate above what the raw loop carried),
  stage B with no service time and batches of up to 100; messages/s that reach stage B in the window.
  The raw loop: one producer process producing flat out, one consumer process taking what is there
  (``consume(1, t)`` then ``consume(99, 0)``) and committing each batch asynchronously, as the harness does
  here (``--ack async``; the testbed's default is a synchronous commit per batch).
- latency at a fixed rate: constant arrivals at ``--fixed-rate`` msg/s, one message per batch; the raw
  loop puts its intended send time (monotonic ns) in the message and the consumer subtracts it from its
  clock; the harness reports e2e p50/p99 (intended send time to end of stage B).

Same settings everywhere (adapter defaults, i.e. librdkafka's: acks=all, linger.ms=5, ...), plus
``fetch.wait.max.ms=10`` and ``session.timeout.ms=6000`` for both brokers (tansu's defaults in the
adapter; on Apache Kafka they change nothing on the data path). The raw loop and the harness on each
broker alternate ``--repeat`` times (default 3; medians and min-max spread). A benchmark, not a test:

    flock /tmp/testbed-bench.lock .venv/bin/python benchmarks/kafka.py [--seconds 4] [--repeat 3] [--write FILE]
"""
from __future__ import annotations

import multiprocessing as mp
import os
import sys
import tempfile
import time
import uuid

import numpy as np

import _common as C  # noqa: E402 - first: it sets up the import path

from brokers.kafka.adapter import CONSUMER_KEYS, PRODUCER_KEYS, KafkaBroker, _client_log, bootstrap_servers  # noqa: E402
from testbed.config import RunConfig  # noqa: E402
from testbed.launchers import launch  # noqa: E402

now = C.now
SAME_OPTS = {"fetch.wait.max.ms": "10", "session.timeout.ms": "6000"}
BATCH = 100


# -- the raw confluent-kafka loop (same client settings as the adapter) ---------------------------------
def _client_conf(servers: str) -> dict:
    ep_opts = dict(SAME_OPTS)
    from brokers.base import Endpoint
    b = KafkaBroker(Endpoint("kafka", f"kafka://{servers}", ep_opts))
    return b.options


def _raw_producer(servers, topic, size, mode, seconds, rate, start):
    from confluent_kafka import Producer
    o = _client_conf(servers)
    p = Producer({"bootstrap.servers": servers, "logger": _client_log, "delivery.report.only.error": True,
                  **{k: o[k] for k in PRODUCER_KEYS}})
    p.list_topics(topic, timeout=10)
    body = os.urandom(size - 8)
    start.wait()
    if mode == "max":
        end = now() + int((seconds + 1.5) * 1e9)
        while now() < end:
            for _ in range(64):
                value = b"".join((b"\0" * 8, body))
                while True:
                    try:
                        p.produce(topic, value, partition=0)
                        break
                    except BufferError:
                        p.poll(0.05)
                p.poll(0)
    else:
        for intended in C.send_times("latency", seconds, rate):
            p.produce(topic, b"".join((C.STAMP.pack(intended), body)), partition=0)
            p.poll(0)
    p.flush(30)


def _raw_consumer(servers, topic, mode, seconds, rate, conn):
    from confluent_kafka import Consumer
    o = _client_conf(servers)
    c = Consumer({"bootstrap.servers": servers, "logger": _client_log, "group.id": f"raw-{topic}",
                  "enable.auto.commit": False, "heartbeat.interval.ms": o["heartbeat.interval.ms"],
                  **{k: o[k] for k in CONSUMER_KEYS}})
    assigned = []
    c.subscribe([topic], on_assign=lambda cons, parts: assigned.extend(parts))
    while not assigned:
        c.consume(1, 0.1)
    conn.send_bytes(b"ready")
    batch = BATCH if mode == "max" else 1

    def take(timeout):
        ms = c.consume(1, timeout)
        if ms and batch > 1:
            ms.extend(c.consume(batch - 1, 0))
        if ms:
            c.commit(message=ms[-1], asynchronous=True)
        return ms
    if mode == "max":
        while not take(1.0):
            pass
        first = now()
        end = first + int(seconds * 1e9)
        n = 0
        while now() < end:
            n += len(take(0.1))
        conn.send_bytes(C.max_result(n, now() - first))
    else:
        total = int(rate * seconds)
        lat = np.zeros(total, np.int64)
        i = 0
        deadline = time.monotonic() + seconds + 30
        while i < total and time.monotonic() < deadline:
            for m in take(0.1):
                lat[i] = now() - C.STAMP.unpack_from(m.value())[0]
                i += 1
        conn.send_bytes(C.latency_result(lat[:i]))
    c.close()


def raw_kafka(endpoint, size: int, mode: str, seconds: float, rate: float = 0.0):
    servers = bootstrap_servers(endpoint.url)
    topic = f"raw-{uuid.uuid4().hex[:8]}"
    admin = KafkaBroker(endpoint)
    admin.connect(10)
    admin.ensure_topic(topic, 1)
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    r, w = ctx.Pipe(duplex=False)
    prod = ctx.Process(target=_raw_producer, args=(servers, topic, size, mode, seconds, rate, start))
    cons = ctx.Process(target=_raw_consumer, args=(servers, topic, mode, seconds, rate, w))
    prod.start()
    cons.start()
    try:
        if not r.poll(60):
            raise RuntimeError("raw consumer not ready")
        r.recv_bytes()
        start.set()
        if not r.poll(seconds + 60):
            raise RuntimeError("raw consumer did not finish")
        data = r.recv_bytes()
    finally:
        C.join_all((prod, cons))
        admin.delete_topic(topic)
        admin.close()
    return C.read_result(mode, data)


# -- the harness ------------------------------------------------------------------------------------
def harness(handle, impl: str, size: int, rate: float, seconds: float, batch: int, out_root: str) -> dict:
    cfg = RunConfig(broker="kafka", launcher="local", broker_impl=impl, broker_opt=dict(SAME_OPTS), rate=rate,
                    arrival="constant", fanout="1", producer_rate=float("inf"), consumer_rate=float("inf"),
                    batch_max=batch, message_bytes=size, duration=seconds + 1.0, warmup=1.0, drain=3.0,
                    ack="async",  # the raw loop commits each batch asynchronously (the default is per-batch, sync)
                    no_trace=True, seed=1, out=os.path.join(out_root, f"{impl}-{size}-{int(rate)}-{batch}-{now()}"))
    s = C.harness(cfg, handle)
    s["rss"] = max_rss(cfg.out) if batch == BATCH else ""
    return s


def raw_side(ep, size: int, args, offered: list) -> dict:
    C.say(f"{size} B: raw confluent-kafka max and latency at {args.fixed_rate:g}/s on Apache Kafka ...")
    top = raw_kafka(ep, size, "max", args.seconds)
    p50, p99 = C.percentiles_ms(raw_kafka(ep, size, "latency", args.seconds, args.fixed_rate))
    if not offered:
        offered.append(max(1.5 * top, 500.0))
    return {"max": top, "p50": p50, "p99": p99, "rss": ""}


def harness_side(h, impl: str, size: int, args, out_root: str, offered: list) -> dict:
    rate = offered[0] if offered else 500.0
    C.say(f"{size} B: harness max (offered {rate:,.0f}/s) and latency on {impl} ...")
    hm = harness(h, impl, size, rate, args.seconds, BATCH, out_root)
    hl = harness(h, impl, size, args.fixed_rate, args.seconds, 1, out_root)
    return {"max": hm["throughput_out"], "p50": hl["e2e_p50_ms"], "p99": hl["e2e_p99_ms"], "rss": hm["rss"]}


def main(argv=None) -> int:
    ap = C.parser(__doc__, seconds=4.0, sizes="1024,150528", fixed_rate=200.0)
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    out_root = tempfile.mkdtemp(prefix="bench-kafka-")
    handles = {}
    t_start = time.monotonic()
    rows = []
    try:
        for impl in ("apache", "tansu"):
            t = time.monotonic()
            cfg = RunConfig(broker="kafka", launcher="local", broker_impl=impl, broker_opt=dict(SAME_OPTS))
            handles[impl] = launch(cfg, f"bench-{impl}", os.path.join(out_root, f"broker-{impl}"))
            C.say(f"{handles[impl].endpoint.impl}: ready in {time.monotonic() - t:.1f}s")
        for size in sizes:
            ep = handles["apache"].endpoint
            offered: list = []  # the harness is offered 1.5x the first raw max
            sides = {"raw": lambda size=size, offered=offered: raw_side(ep, size, args, offered)}
            for impl, h in handles.items():
                sides[impl] = lambda h=h, impl=impl, size=size, offered=offered: harness_side(
                    h, impl, size, args, out_root, offered)
            got = C.alternate(sides, args.repeat)
            for side, xs in got.items():
                what, impl = ("raw confluent-kafka", handles["apache"].endpoint.impl) if side == "raw" else \
                    ("harness", handles[side].endpoint.impl)
                rss = max((x["rss"] for x in xs), key=lambda v: float(v) if v else -1.0)
                rows.append([what, impl, size, C.cell(xs, "max", "{:,.0f}"), C.cell(xs, "p50", "{:.2f}"),
                             C.cell(xs, "p99", "{:.2f}"), rss])
    finally:
        for h in handles.values():
            h.stop()
    head = (f"{C.machine()}; {args.seconds:g} s per measurement after 1 s of warm-up; latency at "
            f"{args.fixed_rate:g} msg/s constant; options {SAME_OPTS} on both brokers, harness --ack async, "
            f"else the adapter's defaults; {args.repeat} alternating measurements per row (median, min-max in "
            f"brackets); the whole benchmark took {time.monotonic() - t_start:.0f} s.\n\n")
    C.emit(head + C.table(["path", "broker", "bytes", "max msg/s", "e2e p50 ms", "e2e p99 ms",
                           "broker RSS MB (max run)"], rows), args.write)
    return 0


def max_rss(run_dir: str) -> str:
    import csv
    try:
        with open(os.path.join(run_dir, "timeseries.csv")) as fh:
            vals = [float(r["broker_rss_mb"]) for r in csv.DictReader(fh) if r.get("broker_rss_mb")]
        return f"{max(vals):.0f}" if vals else ""
    except (OSError, KeyError, ValueError):
        return ""


if __name__ == "__main__":
    sys.exit(main())
