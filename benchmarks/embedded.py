"""Benchmark: the harness on the embedded brokers against a raw loop of the same transport, same run.

For each embedded broker (inproc, zeromq) and payload size:
- max rate: the producer flat out for a few seconds; messages/s that reach the consumer. The raw loop is
  a bare ``queue.SimpleQueue`` between two threads, or bare pyzmq PUSH/PULL between two processes (same
  high-water mark and zero-copy threshold as the adapter). The harness runs ``testbed.run`` with
  ``--producer-rate inf --consumer-rate inf`` and an offered rate far above capacity.
- latency at a fixed rate: constant arrivals at ``--fixed-rate`` messages/s; the raw loop sends its intended
  send time in the message and the consumer subtracts it from its clock; the harness reports e2e p50/p99.

Goals (issue #2): harness throughput at least 90% of the raw loop's, added p50 latency under 50 us.
This is a benchmark, not a test: it prints a table (and writes it with --write FILE).

    python benchmarks/embedded.py [--seconds 4] [--sizes 1024,150528] [--fixed-rate 1000] [--write docs/FILE.md]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import queue
import socket
import struct
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from testbed.config import RunConfig, validate  # noqa: E402
from testbed.launchers import free_port  # noqa: E402
from testbed.orchestration.execute import execute  # noqa: E402

now = time.monotonic_ns
COPY_THRESHOLD = 10240
MAX_OFFERED = 300_000.0  # msgs/s offered to the harness when measuring its max (the schedule is precomputed)


# -- raw loops ---------------------------------------------------------------------------------------
def raw_inproc_max(size: int, seconds: float) -> float:
    q: queue.SimpleQueue = queue.SimpleQueue()
    payload = os.urandom(size)
    stop = threading.Event()
    got = [0, 0, 0]  # count, first ns, last ns

    def produce():
        put = q.put
        while not stop.is_set():
            for _ in range(1000):
                put(payload)

    def consume():
        get = q.get
        get()
        got[1] = now()
        n = 1
        end = got[1] + int(seconds * 1e9)
        while True:
            get()
            n += 1
            if not n % 1024 and now() >= end:
                break
        got[0], got[2] = n, now()
        stop.set()
    tp, tc = threading.Thread(target=produce), threading.Thread(target=consume)
    tc.start()
    tp.start()
    tc.join()
    tp.join()
    return (got[0] - 1) / ((got[2] - got[1]) / 1e9)


def raw_inproc_latency(size: int, rate: float, seconds: float) -> np.ndarray:
    q: queue.SimpleQueue = queue.SimpleQueue()
    payload = os.urandom(size)
    n = int(rate * seconds)
    lat = np.zeros(n, np.int64)

    def produce(t0):
        for i in range(n):
            intended = t0 + int(i * 1e9 / rate)
            d = intended - now()
            if d > 0:
                time.sleep(d / 1e9)
            q.put((intended, payload))

    def consume():
        for i in range(n):
            intended, _ = q.get()
            lat[i] = now() - intended
    t0 = now() + 50_000_000
    tc = threading.Thread(target=consume)
    tc.start()
    produce(t0)
    tc.join()
    return lat[int(n * 0.2):]


def _zmq_push(url, size, mode, seconds, rate, ready, start):
    import zmq
    ctx = zmq.Context()
    s = ctx.socket(zmq.PUSH)
    s.setsockopt(zmq.SNDHWM, 0)
    s.setsockopt(zmq.LINGER, 5000)
    s.bind(url)
    payload = os.urandom(size)
    copy = size < COPY_THRESHOLD
    ready.set()
    start.wait()
    if mode == "max":
        end = now() + int((seconds + 1.0) * 1e9)
        while now() < end:
            for _ in range(256):
                s.send(b"\0" * 8, zmq.SNDMORE)
                s.send(payload, copy=copy)
    else:
        t0 = now() + 50_000_000
        for i in range(int(rate * seconds)):
            intended = t0 + int(i * 1e9 / rate)
            d = intended - now()
            if d > 0:
                time.sleep(d / 1e9)
            s.send(struct.pack("<q", intended), zmq.SNDMORE)
            s.send(payload, copy=copy)
    s.send(b"END")
    time.sleep(1.0)
    s.close()
    ctx.term()


def _zmq_pull(url, mode, seconds, rate, conn):
    import zmq
    ctx = zmq.Context()
    s = ctx.socket(zmq.PULL)
    s.setsockopt(zmq.RCVHWM, 0)
    s.connect(url)
    conn.send_bytes(b"ready")
    if mode == "max":
        s.recv_multipart(copy=False)
        first = now()
        end = first + int(seconds * 1e9)
        n = 0
        while True:
            s.recv_multipart(copy=False)
            n += 1
            if not n % 256 and now() >= end:
                break
        conn.send_bytes(struct.pack("<qq", n, now() - first))
    else:
        total = int(rate * seconds)
        lat = np.zeros(total, np.int64)
        i = 0
        while i < total:
            frames = s.recv_multipart(copy=False)
            if len(frames) == 1:
                break
            lat[i] = now() - struct.unpack("<q", frames[0].buffer)[0]
            i += 1
        conn.send_bytes(lat[:i].tobytes())
    s.close(0)
    ctx.term()


def raw_zmq(size: int, mode: str, seconds: float, rate: float = 0.0):
    ctx = mp.get_context("spawn")
    url = f"tcp://127.0.0.1:{free_port()}"
    ready, start = ctx.Event(), ctx.Event()
    r, w = ctx.Pipe(duplex=False)
    push = ctx.Process(target=_zmq_push, args=(url, size, mode, seconds, rate, ready, start))
    pull = ctx.Process(target=_zmq_pull, args=(url, mode, seconds, rate, w))
    push.start()
    ready.wait(30)
    pull.start()
    r.recv_bytes()
    time.sleep(0.3)  # the PULL socket's connection is up before the first send
    start.set()
    data = r.recv_bytes()
    push.join(30)
    pull.join(30)
    for p in (push, pull):
        if p.is_alive():
            p.kill()
    if mode == "max":
        n, ns = struct.unpack("<qq", data)
        return n / (ns / 1e9)
    lat = np.frombuffer(data, np.int64)
    return lat[int(len(lat) * 0.2):]


# -- the harness -----------------------------------------------------------------------------------
def harness(broker: str, size: int, rate: float, seconds: float, out_root: str) -> dict:
    cfg = RunConfig(broker=broker, rate=rate, arrival="constant", fanout="1", producer_rate=float("inf"),
                    consumer_rate=float("inf"), message_bytes=max(size, 64), duration=seconds + 1.0,
                    warmup=1.0, drain=2.0, no_trace=True, seed=1,
                    out=os.path.join(out_root, f"{broker}-{size}-{int(rate)}"))
    validate(cfg)
    return execute(cfg).summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--sizes", default="1024,150528")
    ap.add_argument("--fixed-rate", type=float, default=1000.0, help="messages/s for the latency rows")
    ap.add_argument("--brokers", default="inproc,zeromq")
    ap.add_argument("--write", metavar="FILE", help="also write the table (markdown) to FILE")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    out_root = tempfile.mkdtemp(prefix="bench-embedded-")
    rows = []
    for broker in args.brokers.split(","):
        for size in sizes:
            print(f"{broker} {size} B: raw max ...", file=sys.stderr, flush=True)
            raw_max = raw_inproc_max(size, args.seconds) if broker == "inproc" else raw_zmq(size, "max", args.seconds)
            print(f"{broker} {size} B: harness max ...", file=sys.stderr, flush=True)
            h = harness(broker, size, min(max(2 * raw_max, 1000.0), MAX_OFFERED), args.seconds, out_root)
            h_max = h["throughput_out"]
            print(f"{broker} {size} B: latency at {args.fixed_rate:g}/s ...", file=sys.stderr, flush=True)
            lat = (raw_inproc_latency(size, args.fixed_rate, args.seconds) if broker == "inproc"
                   else raw_zmq(size, "latency", args.seconds, args.fixed_rate))
            hl = harness(broker, size, args.fixed_rate, args.seconds, out_root)
            r50, r99 = np.percentile(lat, 50) / 1e6, np.percentile(lat, 99) / 1e6
            rows.append({
                "broker": broker, "bytes": size, "raw_max": raw_max, "harness_max": h_max,
                "ratio": h_max / raw_max, "raw_p50": r50, "raw_p99": r99,
                "h_p50": hl["e2e_p50_ms"], "h_p99": hl["e2e_p99_ms"], "added_p50_us": (hl["e2e_p50_ms"] - r50) * 1e3,
            })
    head = (f"Machine: {socket.gethostname()}, {os.cpu_count()} CPUs, {platform.platform()}, "
            f"Python {platform.python_version()}; {args.seconds:g} s per measurement; latency at "
            f"{args.fixed_rate:g} msg/s constant.\n\n"
            "| broker | bytes | raw max msg/s | harness max msg/s | harness/raw | raw p50/p99 ms | "
            "harness e2e p50/p99 ms | added p50 us |\n|---|---|---|---|---|---|---|---|\n")
    body = "".join(
        f"| {r['broker']} | {r['bytes']} | {r['raw_max']:,.0f} | {r['harness_max']:,.0f} | {r['ratio']:.0%} | "
        f"{r['raw_p50']:.3f} / {r['raw_p99']:.3f} | {r['h_p50']:.3f} / {r['h_p99']:.3f} | {r['added_p50_us']:+.0f} |\n"
        for r in rows)
    print(head + body)
    if args.write:
        with open(args.write, "w") as fh:
            fh.write(head + body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
