"""Benchmark: NATS JetStream through the testbed's adapter against a raw nats-py loop, same run, same
server.

Layout for both sides: one producer process and one consumer process (multiprocessing spawn), a private
local nats-server (``--launcher local``: JetStream, file store) started once and shared. For each
measurement a fresh work-queue stream and one durable pull consumer with explicit acks.

- max rate: the producer publishes flat out for ``--seconds``; messages/s that reach the consumer (from
  its first message to the end of the window).
- latency at a fixed rate: constant arrivals at ``--fixed-rate`` msg/s; the producer puts its intended
  send time in the message's first 8 bytes and the consumer subtracts it from its clock (one monotonic
  clock on Linux). The first 20% is warm-up.

Raw side: nats-py's ordinary asyncio API, as its documentation shows it: ``js.publish`` (waits for the
PubAck) or, with ``--publish async``, ``js.publish_async`` and ``publish_async_completed`` at the end;
``pull_subscribe`` + ``fetch(--batch, timeout=0.05)`` + ``msg.ack()`` per message. Both sides wait for
each intended send time with ``time.sleep`` (asyncio's timers are up to a millisecond late); the raw
async producer then yields once, so nats-py's flusher task sends the message at once. Adapter side: the same
through ``brokers.nats.adapter.NatsBroker`` (``publish``, ``receive(--batch, 0.05)``, ``ack`` per batch)
with ``publish=--publish``; no harness bookkeeping (benchmarks/brokers.py measures the harness).

Raw and adapter sides alternate ``--repeat`` times (default 3; medians and min-max spread in the table).
A benchmark, not a test. Run it under the lock, it loads both cores for a few minutes:

    flock /tmp/testbed-bench.lock .venv/bin/python benchmarks/nats.py [--publish async] [--write FILE]
"""
from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import sys
import tempfile
import time

import _common as C  # noqa: E402 - first: the project's ``brokers`` package

from testbed.config import RunConfig  # noqa: E402

now = C.now
STAMP = C.STAMP
END = b"END"


# -- raw nats-py -------------------------------------------------------------------------------------
def _raw_producer(url, topic, size, mode, seconds, rate, publish, start):
    import nats

    async def main():
        nc = await nats.connect(url)
        js = nc.jetstream()
        payload = os.urandom(size)
        start.wait()
        for intended in C.send_times(mode, seconds, rate):
            data = STAMP.pack(intended) + payload
            if publish == "acked":
                await js.publish(topic, data)
            else:
                await js.publish_async(topic, data)
                if mode != "max":  # the open-loop wait (time.sleep) blocks the loop: let the flusher
                    await asyncio.sleep(0)  # task write this message now, not with the next one
        await js.publish(topic, END)
        if publish != "acked":
            await js.publish_async_completed()
        await nc.close()
    asyncio.run(main())


def _raw_consumer(url, topic, mode, seconds, batch, conn):
    import nats

    take, result = _taker(mode, seconds)

    async def main():
        nc = await nats.connect(url)
        js = nc.jetstream()
        sub = await js.pull_subscribe(topic, durable="bench", stream=_stream(topic))
        conn.send_bytes(b"ready")
        while not take.end:
            try:
                msgs = await sub.fetch(batch, timeout=0.05)
            except asyncio.TimeoutError:  # nothing within the timeout (nats-py raises both kinds)
                continue
            take([m.data for m in msgs])
            for m in msgs:
                await m.ack()
        await nc.close()
    asyncio.run(main())
    conn.send_bytes(result())


# -- through the adapter -----------------------------------------------------------------------------
def _adapter(url, publish):
    from brokers.base import Endpoint
    from brokers.nats.adapter import NatsBroker
    b = NatsBroker(Endpoint("nats", url, {"publish": publish}))
    b.connect(10)
    return b


def _adapter_producer(url, topic, size, mode, seconds, rate, publish, start):
    b = _adapter(url, publish)
    payload = os.urandom(size)
    start.wait()
    for intended in C.send_times(mode, seconds, rate):
        b.publish(topic, STAMP.pack(intended), payload)
    b.publish(topic, END, b"")
    b.flush()
    b.close()


def _adapter_consumer(url, topic, mode, seconds, batch, conn):
    take, result = _taker(mode, seconds)
    b = _adapter(url, "acked")
    b.subscribe(topic, "bench", "c0")
    conn.send_bytes(b"ready")
    while not take.end:
        ds = b.receive(batch, 0.05)
        if ds:
            take([d.data for d in ds])
            b.ack(ds)
    b.close()
    conn.send_bytes(result())


# -- shared --------------------------------------------------------------------------------------------
def _taker(mode, seconds):
    """A callable that counts (and times) received messages, and the result to send back."""
    lat: list[int] = []
    state = {"n": 0, "first": 0, "last": 0}
    window = int(seconds * 1e9)

    def take(datas):
        t = now()
        for data in datas:
            if data[:3] == END:
                take.end = True
                return
            if not state["first"]:
                state["first"] = t
            elif mode == "max" and t - state["first"] > window:
                take.end = True
                return
            state["n"] += 1
            state["last"] = t
            if mode != "max":
                lat.append(t - STAMP.unpack_from(data)[0])
    take.end = False

    def result() -> bytes:
        if mode == "max":
            return C.max_result(state["n"], state["last"] - state["first"])
        return C.latency_result(lat)
    return take, result


def _stream(topic: str) -> str:
    from brokers.nats.adapter import _name
    return _name(topic)


def measure(side: str, url: str, size: int, mode: str, seconds: float, rate: float, batch: int, publish: str):
    topic = f"bench-{side}-{mode}-{size}-{os.getpid()}-{now()}"
    admin = _adapter(url, "acked")
    admin.ensure_topic(topic, 1)
    producer, consumer = ((_raw_producer, _raw_consumer) if side == "raw" else
                          (_adapter_producer, _adapter_consumer))
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    r, w = ctx.Pipe(duplex=False)
    cons = ctx.Process(target=consumer, args=(url, topic, mode, seconds, batch, w))
    prod = ctx.Process(target=producer, args=(url, topic, size, mode, seconds, rate, publish, start))
    cons.start()
    prod.start()
    try:
        assert r.poll(60) and r.recv_bytes() == b"ready", f"{side} consumer did not get ready"
        start.set()
        assert r.poll(seconds + 60), f"{side} consumer sent no result"
        data = r.recv_bytes()
    finally:
        C.join_all((prod, cons))
        admin.delete_topic(topic)
        admin.close()
    return C.read_result(mode, data)


def side(name: str, url: str, size: int, args) -> dict:
    C.say(f"{name} {size} B: max, latency at {args.fixed_rate:g}/s ...")
    top = measure(name, url, size, "max", args.seconds, 0, args.batch, args.publish)
    lat = measure(name, url, size, "latency", args.seconds, args.fixed_rate, args.batch, args.publish)
    p50, p99 = C.percentiles_ms(lat)
    return {"max": top, "p50": p50, "p99": p99}


def main(argv=None) -> int:
    ap = C.parser(__doc__, seconds=3.0, sizes="1024,153600", fixed_rate=200.0)
    ap.add_argument("--batch", type=int, default=100, help="consumer batch (fetch / receive size)")
    ap.add_argument("--publish", choices=("acked", "async"), default="acked",
                    help="wait for each PubAck (acked) or check them at the end (async), both sides")
    args = ap.parse_args(argv)
    from testbed.launchers import launch
    out_root = tempfile.mkdtemp(prefix="bench-nats-")
    handle = launch(RunConfig(broker="nats", launcher="local"), "bench-nats", out_root)
    url, impl = handle.endpoint.url, handle.endpoint.impl
    rows = []
    t_start = time.monotonic()
    try:
        for size in [int(s) for s in args.sizes.split(",")]:
            got = C.alternate({"raw": lambda size=size: side("raw", url, size, args),
                               "adapter": lambda size=size: side("adapter", url, size, args)}, args.repeat)
            rw, ad = got["raw"], got["adapter"]
            rows.append([size, C.cell(rw, "max", "{:,.0f}"), C.cell(ad, "max", "{:,.0f}"),
                         f"{C.med(ad, 'max') / C.med(rw, 'max'):.0%}",
                         f"{C.cell(rw, 'p50')} / {C.cell(rw, 'p99')}",
                         f"{C.cell(ad, 'p50')} / {C.cell(ad, 'p99')}"])
    finally:
        handle.stop()
    took = time.monotonic() - t_start
    head = (f"{C.machine()}; shared with other jobs, so noisy. {impl}, file store, publish={args.publish}; "
            f"{args.seconds:g} s per measurement, latency at {args.fixed_rate:g} msg/s constant, consumer "
            f"batch {args.batch}; {args.repeat} alternating raw/adapter measurements per row (median, "
            f"min-max in brackets); whole benchmark {took:.0f} s.\n\n")
    C.emit(head + C.table(["bytes", "raw nats-py max msg/s", "adapter max msg/s", "adapter/raw",
                           "raw p50/p99 ms", "adapter p50/p99 ms"], rows, ["r", "r", "r", "r", "l", "l"]),
           args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
