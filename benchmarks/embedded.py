"""Benchmark: the harness on the embedded brokers against a raw loop of the same transport, same run.

For each embedded broker (inproc, zeromq) and payload size:
- max rate: the producer flat out for a few seconds; messages/s that reach the consumer. The raw loop is
  a bare ``queue.SimpleQueue`` between two threads, or bare pyzmq PUSH/PULL between two processes (same
  high-water mark and zero-copy threshold as the adapter). The harness runs ``testbed.run`` with
  ``--producer-rate inf --consumer-rate inf`` and an offered rate far above capacity.
- latency at a fixed rate: constant arrivals at ``--fixed-rate`` messages/s; the raw loop sends its intended
  send time in the message and the consumer subtracts it from its clock; the harness reports e2e p50/p99.

Raw and harness sides alternate ``--repeat`` times (default 3); the table gives medians and the min-max
spread. Goals: harness throughput at least 90% of the raw loop's, added p50 latency under 50 us.
This is a benchmark, not a test: it prints a table (and writes it with --write FILE).

    python benchmarks/embedded.py [--seconds 4] [--sizes 1024,150528] [--fixed-rate 1000] [--repeat 3] [--write FILE]
"""
from __future__ import annotations

import multiprocessing as mp
import os
import queue
import sys
import tempfile
import threading
import time

import numpy as np

import _common as C  # noqa: E402 - first: it sets up the import path

from testbed.config import RunConfig  # noqa: E402
from testbed.launchers import free_port  # noqa: E402

now = C.now
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

    def produce():
        for intended in C.send_times("latency", seconds, rate):
            q.put((intended, payload))

    def consume():
        for i in range(n):
            intended, _ = q.get()
            lat[i] = now() - intended
    tc = threading.Thread(target=consume)
    tc.start()
    produce()
    tc.join()
    return lat[int(n * C.WARMUP_SHARE):]


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
    if mode == "max":  # flat out: no stamp to compute
        end = now() + int((seconds + 1.0) * 1e9)
        while now() < end:
            for _ in range(256):
                s.send(b"\0" * 8, zmq.SNDMORE)
                s.send(payload, copy=copy)
    else:
        for intended in C.send_times(mode, seconds, rate):
            s.send(C.STAMP.pack(intended), zmq.SNDMORE)
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
        conn.send_bytes(C.max_result(n, now() - first))
    else:
        total = int(rate * seconds)
        lat = np.zeros(total, np.int64)
        i = 0
        while i < total:
            frames = s.recv_multipart(copy=False)
            if len(frames) == 1:
                break
            lat[i] = now() - C.STAMP.unpack(frames[0].buffer)[0]
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
    C.join_all((push, pull))
    return C.read_result(mode, data)


# -- the harness -----------------------------------------------------------------------------------
def harness(broker: str, size: int, rate: float, seconds: float, out_root: str) -> dict:
    cfg = RunConfig(broker=broker, rate=rate, arrival="constant", fanout="1", producer_rate=float("inf"),
                    consumer_rate=float("inf"), message_bytes=max(size, 64), duration=seconds + 1.0,
                    warmup=1.0, drain=2.0, no_trace=True, seed=1,
                    out=os.path.join(out_root, f"{broker}-{size}-{int(rate)}-{now()}"))
    return C.harness(cfg)


def raw_side(broker: str, size: int, args) -> dict:
    C.say(f"{broker} {size} B: raw max, raw latency at {args.fixed_rate:g}/s ...")
    if broker == "inproc":
        top, lat = raw_inproc_max(size, args.seconds), raw_inproc_latency(size, args.fixed_rate, args.seconds)
    else:
        top, lat = raw_zmq(size, "max", args.seconds), raw_zmq(size, "latency", args.seconds, args.fixed_rate)
    p50, p99 = C.percentiles_ms(lat)
    return {"max": top, "p50": p50, "p99": p99}


def harness_side(broker: str, size: int, args, out_root: str, offered: list) -> dict:
    C.say(f"{broker} {size} B: harness max, harness latency at {args.fixed_rate:g}/s ...")
    rate = offered[0] if offered else MAX_OFFERED
    h = harness(broker, size, rate, args.seconds, out_root)
    hl = harness(broker, size, args.fixed_rate, args.seconds, out_root)
    return {"max": h["throughput_out"], "p50": hl["e2e_p50_ms"], "p99": hl["e2e_p99_ms"]}


def main(argv=None) -> int:
    ap = C.parser(__doc__, seconds=4.0, sizes="1024,150528", fixed_rate=1000.0)
    ap.add_argument("--brokers", default="inproc,zeromq")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    out_root = tempfile.mkdtemp(prefix="bench-embedded-")
    rows = []
    for broker in args.brokers.split(","):
        for size in sizes:
            offered: list = []  # the harness is offered twice the first raw max (the schedule is precomputed)

            def raw(broker=broker, size=size, offered=offered):
                r = raw_side(broker, size, args)
                if not offered:
                    offered.append(min(max(2 * r["max"], 1000.0), MAX_OFFERED))
                return r
            got = C.alternate({"raw": raw, "harness": lambda broker=broker, size=size, offered=offered:
                               harness_side(broker, size, args, out_root, offered)}, args.repeat)
            rw, hs = got["raw"], got["harness"]
            rows.append([broker, size, C.cell(rw, "max", "{:,.0f}"), C.cell(hs, "max", "{:,.0f}"),
                         f"{C.med(hs, 'max') / C.med(rw, 'max'):.0%}",
                         f"{C.cell(rw, 'p50')} / {C.cell(rw, 'p99')}", f"{C.cell(hs, 'p50')} / {C.cell(hs, 'p99')}",
                         f"{(C.med(hs, 'p50') - C.med(rw, 'p50')) * 1e3:+.0f}"])
    head = (f"{C.machine()}; {args.seconds:g} s per measurement; latency at {args.fixed_rate:g} msg/s constant; "
            f"{args.repeat} alternating raw/harness measurements per row (median, min-max in brackets).\n\n")
    C.emit(head + C.table(["broker", "bytes", "raw max msg/s", "harness max msg/s", "harness/raw",
                           "raw p50/p99 ms", "harness e2e p50/p99 ms", "added p50 us"], rows), args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
