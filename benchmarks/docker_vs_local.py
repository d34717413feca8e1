"""Benchmark: the same runs with the broker as a local process and as a container (host network).

For each broker (redis, rabbitmq, kafka = Apache Kafka) the broker is started with ``--launcher local``,
measured, stopped, then started with ``--launcher docker`` (the image of the images table: official
or our local build; ``network_mode=host``, bound to 127.0.0.1 like the local one), measured, stopped.
Each side gets the same two harness runs (``testbed.orchestration.execute``, one producer and one consumer
process), ``--repeat`` times (default 3), alternating local/docker to spread the machine's noise over both:

- max rate: ``--producer-rate inf --consumer-rate inf`` and an offered rate far above what the broker
  takes; the run's ``throughput_out`` (messages/s through the broker).
- latency at a fixed rate: constant arrivals at ``--fixed-rate`` messages/s; e2e p50/p99.

Goal: the container costs under 5% of either figure. A benchmark, not a test; it loads both
cores for two to three minutes, so run it under the lock:

    flock /tmp/testbed-bench.lock .venv/bin/python benchmarks/docker_vs_local.py [--write docs/docker-bench.md]
"""
from __future__ import annotations

import os
import sys
import tempfile
import time

import _common as C  # noqa: E402 - first: it sets up the import path

from testbed.config import RunConfig  # noqa: E402
from testbed.launchers import launch  # noqa: E402

MAX_OFFERED = 150_000.0


def run(broker: str, launcher: str, handle, size: int, rate: float, seconds: float, batch: int, out: str) -> dict:
    unlimited = rate >= MAX_OFFERED
    cfg = RunConfig(broker=broker, launcher=launcher, rate=rate, arrival="constant", fanout="1",
                    producer_rate=float("inf"), consumer_rate=float("inf"), message_bytes=max(size, 64),
                    duration=seconds + 1.0, warmup=1.0, drain=3.0 if unlimited else 2.0, no_trace=True,
                    seed=1, batch_max=batch, out=os.path.join(out, f"{broker}-{launcher}-{int(rate)}-{C.now()}"))
    return C.harness(cfg, handle, partial_ok=True)


def measure(broker: str, launcher: str, args, out: str) -> dict:
    t = time.monotonic()
    handle = launch(RunConfig(broker=broker, launcher=launcher), f"bench-{launcher}-{broker}",
                    os.path.join(out, f"broker-{launcher}-{broker}-{C.now()}"))
    started = time.monotonic() - t
    try:
        C.say(f"{broker} via {launcher} ({handle.endpoint.impl}, ready in {started:.1f} s) ...")
        m = run(broker, launcher, handle, args.size, MAX_OFFERED, args.seconds, args.batch, out)
        f = run(broker, launcher, handle, args.size, args.fixed_rate, args.seconds, args.batch, out)
    finally:
        handle.stop()
    return {"impl": handle.endpoint.impl, "image": handle.endpoint.extra.get("image", ""), "start_s": started,
            "max": float(m["throughput_out"]), "p50": float(f["e2e_p50_ms"]), "p99": float(f["e2e_p99_ms"])}


def main(argv=None) -> int:
    ap = C.parser(__doc__)
    ap.add_argument("--brokers", default="redis,rabbitmq,kafka")
    ap.add_argument("--seconds", type=float, default=3.0, help="measured seconds per run (plus 1 s warm-up)")
    ap.add_argument("--size", type=int, default=1024, help="bytes per message")
    ap.add_argument("--fixed-rate", type=float, default=500.0, help="messages/s for the latency rows")
    ap.add_argument("--batch", type=int, default=100, help="consumer batch (--batch-max)")
    args = ap.parse_args(argv)
    from testbed.launchers import engine as docker_engine
    engine = docker_engine.find()
    if not engine:
        print(f"docker_vs_local: {docker_engine.no_engine_reason()}", file=sys.stderr)
        return 1
    out = tempfile.mkdtemp(prefix="bench-docker-")
    t0 = time.monotonic()
    rows = []
    for broker in args.brokers.split(","):
        got = C.alternate({lc: (lambda broker=broker, lc=lc: measure(broker, lc, args, out))
                           for lc in ("local", "docker")}, args.repeat)
        for launcher in ("local", "docker"):
            xs = got[launcher]
            rows.append([f"{broker} ({xs[0]['impl']})", launcher, xs[0]["image"] or "-",
                         f"{C.med(xs, 'start_s'):.1f}", C.cell(xs, "max", "{:,.0f}"), C.cell(xs, "p50"),
                         C.cell(xs, "p99")])
        loc, doc = got["local"], got["docker"]
        rows.append([broker, "docker vs local", "", "", f"{C.med(doc, 'max') / C.med(loc, 'max') - 1:+.1%}",
                     f"{C.med(doc, 'p50') / C.med(loc, 'p50') - 1:+.1%}",
                     f"{C.med(doc, 'p99') / C.med(loc, 'p99') - 1:+.1%}"])
    took = time.monotonic() - t0
    head = (f"{C.machine()}, Docker engine {engine[1]} ({engine[0]}); shared with other developers' jobs, so "
            f"noisy. {args.size} B messages, one producer and one consumer process, consumer batch {args.batch}, "
            f"{args.seconds:g} s per measurement, latency at {args.fixed_rate:g} msg/s constant; {args.repeat} "
            f"alternating local/docker measurements per broker (median, and min-max in brackets); whole "
            f"benchmark {took:.0f} s.\n\n")
    C.emit(head + C.table(["broker", "launcher", "image", "ready in s", "max msg/s", "e2e p50 ms", "e2e p99 ms"],
                          rows), args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
