"""Benchmark: Apache Kafka vs tansu through the same adapter and settings, and the harness vs a raw
confluent-kafka loop on Apache Kafka, all in one run (one Apache Kafka broker and one tansu, both started
by the local launcher, side by side).

For each payload size (1 KB, 150 KB):
- max rate: stage A flat out (``--producer-rate inf``, an offered rate above what the raw loop carried),
  stage B with no service time and batches of up to 100; messages/s that reach stage B in the window.
  The raw loop: one producer process producing flat out, one consumer process taking what is there
  (``consume(1, t)`` then ``consume(99, 0)``) and committing each batch asynchronously, as the adapter does.
- latency at a fixed rate: constant arrivals at ``--fixed-rate`` msg/s, one message per batch; the raw
  loop puts its intended send time (monotonic ns) in the message and the consumer subtracts it from its
  clock; the harness reports e2e p50/p99 (intended send time to end of stage B).

Same settings everywhere (adapter defaults, i.e. librdkafka's: acks=all, linger.ms=5, ...), plus
``fetch.wait.max.ms=10`` and ``session.timeout.ms=6000`` for both brokers (tansu's defaults in the
adapter; on Apache Kafka they change nothing on the data path). This is a benchmark, not a test:

    flock /tmp/testbed-bench.lock .venv/bin/python benchmarks/kafka.py [--seconds 4] [--write docs/kafka-bench.md]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import socket
import struct
import sys
import tempfile
import time
import uuid

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from brokers.kafka import KafkaBroker, _client_log, bootstrap_servers  # noqa: E402
from testbed.config import RunConfig, validate  # noqa: E402
from testbed.launchers import local_kafka  # noqa: E402
from testbed.orchestration.execute import execute  # noqa: E402

now = time.monotonic_ns
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
    from brokers.kafka import PRODUCER_KEYS
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
        t0 = now() + 50_000_000
        for i in range(int(rate * seconds)):
            intended = t0 + int(i * 1e9 / rate)
            d = intended - now()
            if d > 0:
                time.sleep(d / 1e9)
            p.produce(topic, b"".join((struct.pack("<q", intended), body)), partition=0)
            p.poll(0)
    p.flush(30)


def _raw_consumer(servers, topic, mode, seconds, rate, conn):
    from confluent_kafka import Consumer
    from brokers.kafka import CONSUMER_KEYS
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
        conn.send_bytes(struct.pack("<qq", n, now() - first))
    else:
        total = int(rate * seconds)
        lat = np.zeros(total, np.int64)
        i = 0
        deadline = time.monotonic() + seconds + 30
        while i < total and time.monotonic() < deadline:
            for m in take(0.1):
                lat[i] = now() - struct.unpack_from("<q", m.value())[0]
                i += 1
        conn.send_bytes(lat[:i].tobytes())
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
        for p in (prod, cons):
            p.join(30)
            if p.is_alive():
                p.kill()
                p.join(5)
        admin.delete_topic(topic)
        admin.close()
    if mode == "max":
        n, ns = struct.unpack("<qq", data)
        return n / (ns / 1e9)
    lat = np.frombuffer(data, np.int64)
    return lat[int(len(lat) * 0.2):]


# -- the harness ------------------------------------------------------------------------------------
def harness(handle, impl: str, size: int, rate: float, seconds: float, batch: int, out_root: str) -> dict:
    cfg = RunConfig(broker="kafka", launcher="local", broker_impl=impl, broker_opt=dict(SAME_OPTS), rate=rate,
                    arrival="constant", fanout="1", producer_rate=float("inf"), consumer_rate=float("inf"),
                    batch_max=batch, message_bytes=size, duration=seconds + 1.0, warmup=1.0, drain=3.0,
                    no_trace=True, seed=1, out=os.path.join(out_root, f"{impl}-{size}-{int(rate)}-{batch}"))
    validate(cfg)
    return execute(cfg, broker_handle=handle).summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--sizes", default="1024,150528")
    ap.add_argument("--fixed-rate", type=float, default=200.0, help="messages/s for the latency columns")
    ap.add_argument("--write", metavar="FILE", help="also write the table (markdown) to FILE")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    out_root = tempfile.mkdtemp(prefix="bench-kafka-")
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    handles = {}
    t_start = time.monotonic()
    try:
        for impl in ("apache", "tansu"):
            t = time.monotonic()
            cfg = RunConfig(broker="kafka", launcher="local", broker_impl=impl, broker_opt=dict(SAME_OPTS))
            handles[impl] = local_kafka.launch(cfg, f"bench-{impl}", out_root)
            say(f"{handles[impl].endpoint.impl}: ready in {time.monotonic() - t:.1f}s")
        rows = []
        for size in sizes:
            ep = handles["apache"].endpoint
            say(f"{size} B: raw confluent-kafka max on Apache Kafka ...")
            raw_max = raw_kafka(ep, size, "max", args.seconds)
            say(f"{size} B: raw latency at {args.fixed_rate:g}/s ...")
            lat = raw_kafka(ep, size, "latency", args.seconds, args.fixed_rate)
            rows.append({"what": "raw confluent-kafka", "impl": ep.impl, "bytes": size, "max": raw_max,
                         "p50": np.percentile(lat, 50) / 1e6, "p99": np.percentile(lat, 99) / 1e6})
            offered = max(1.5 * raw_max, 500.0)
            for impl, h in handles.items():
                say(f"{size} B: harness max on {impl} (offered {offered:,.0f}/s) ...")
                hm = harness(h, impl, size, offered, args.seconds, BATCH, out_root)
                say(f"{size} B: harness latency on {impl} ...")
                hl = harness(h, impl, size, args.fixed_rate, args.seconds, 1, out_root)
                rows.append({"what": "harness", "impl": h.endpoint.impl, "bytes": size, "max": hm["throughput_out"],
                             "p50": hl["e2e_p50_ms"], "p99": hl["e2e_p99_ms"],
                             "rss": max_rss(os.path.join(out_root, f"{impl}-{size}-{int(offered)}-{BATCH}"))})
    finally:
        for h in handles.values():
            h.stop()
    head = (f"Machine: {socket.gethostname()}, {os.cpu_count()} CPUs, {platform.platform()}, Python "
            f"{platform.python_version()}; {args.seconds:g} s per measurement after 1 s of warm-up; latency at "
            f"{args.fixed_rate:g} msg/s constant; options {SAME_OPTS} on both brokers, else the adapter's "
            f"defaults; the whole benchmark took {time.monotonic() - t_start:.0f} s.\n\n"
            "| path | broker | bytes | max msg/s | e2e p50 ms | e2e p99 ms | broker RSS MB (max run) |\n"
            "|---|---|---|---|---|---|---|\n")
    body = "".join(
        f"| {r['what']} | {r['impl']} | {r['bytes']} | {r['max']:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} | "
        f"{r.get('rss', '')} |\n" for r in rows)
    print(head + body)
    if args.write:
        with open(args.write, "w") as fh:
            fh.write(head + body)
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
