"""Benchmark: the same runs with the broker as a local process and as a container (host network).

For each broker (redis, rabbitmq, kafka = Apache Kafka) the broker is started with ``--launcher local``,
measured, stopped, then started with ``--launcher docker`` (the image of docker_images' table: official
or our local build; ``network_mode=host``, bound to 127.0.0.1 like the local one), measured, stopped.
Each side gets the same two harness runs (``testbed.orchestration.execute``, one producer and one consumer
process), with ``--repeat`` alternating local/docker to spread the machine's noise over both:

- max rate: ``--producer-rate inf --consumer-rate inf`` and an offered rate far above what the broker
  takes; the run's ``throughput_out`` (messages/s through the broker).
- latency at a fixed rate: constant arrivals at ``--fixed-rate`` messages/s; e2e p50/p99.

Goal (issue #8): the container costs under 5% of either figure. A benchmark, not a test; it loads both
cores for two to three minutes, so run it under the lock:

    flock /tmp/testbed-bench.lock .venv/bin/python benchmarks/docker_vs_local.py [--write docs/docker-bench.md]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from testbed.config import RunConfig, validate  # noqa: E402
from testbed.launchers import launch  # noqa: E402
from testbed.orchestration.execute import execute  # noqa: E402

MAX_OFFERED = 150_000.0


def run(broker: str, launcher: str, handle, size: int, rate: float, seconds: float, batch: int, out: str) -> dict:
    unlimited = rate >= MAX_OFFERED
    cfg = RunConfig(broker=broker, launcher=launcher, rate=rate, arrival="constant", fanout="1",
                    producer_rate=float("inf"), consumer_rate=float("inf"), message_bytes=max(size, 64),
                    duration=seconds + 1.0, warmup=1.0, drain=3.0 if unlimited else 2.0, no_trace=True,
                    seed=1, batch_max=batch, out=os.path.join(out, f"{broker}-{launcher}-{int(rate)}-{time.monotonic_ns()}"))
    validate(cfg)
    try:
        return execute(cfg, broker_handle=handle).summary
    except Exception as exc:  # noqa: BLE001 - a max-rate run that did not drain still has its rates
        print(f"  {broker}/{launcher}: {exc}", file=sys.stderr)
        import csv
        with open(os.path.join(cfg.out, "summary.csv")) as fh:
            return next(csv.DictReader(fh))


def measure(broker: str, launcher: str, args, out: str) -> dict:
    t = time.monotonic()
    handle = launch(RunConfig(broker=broker, launcher=launcher), f"bench-{launcher}-{broker}", out)
    started = time.monotonic() - t
    try:
        print(f"{broker} via {launcher} ({handle.endpoint.impl}, ready in {started:.1f} s) ...",
              file=sys.stderr, flush=True)
        m = run(broker, launcher, handle, args.size, MAX_OFFERED, args.seconds, args.batch, out)
        f = run(broker, launcher, handle, args.size, args.fixed_rate, args.seconds, args.batch, out)
    finally:
        handle.stop()
    return {"impl": handle.endpoint.impl, "image": handle.endpoint.extra.get("image", ""), "start_s": started,
            "max": float(m["throughput_out"]), "p50": float(f["e2e_p50_ms"]), "p99": float(f["e2e_p99_ms"])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--brokers", default="redis,rabbitmq,kafka")
    ap.add_argument("--seconds", type=float, default=3.0, help="measured seconds per run (plus 1 s warm-up)")
    ap.add_argument("--size", type=int, default=1024, help="bytes per message")
    ap.add_argument("--fixed-rate", type=float, default=500.0, help="messages/s for the latency rows")
    ap.add_argument("--batch", type=int, default=100, help="consumer batch (--batch-max)")
    ap.add_argument("--repeat", type=int, default=1, help="local/docker pairs per broker (alternating)")
    ap.add_argument("--write", metavar="FILE", help="also write the table (markdown) to FILE")
    args = ap.parse_args(argv)
    from testbed.launchers import docker_engine
    engine = docker_engine.find()
    if not engine:
        print(f"docker_vs_local: {docker_engine.no_engine_reason()}", file=sys.stderr)
        return 1
    out = tempfile.mkdtemp(prefix="bench-docker-")
    t0 = time.monotonic()
    rows = []
    for broker in args.brokers.split(","):
        got = {"local": [], "docker": []}
        for i in range(args.repeat):
            for launcher in (("local", "docker") if i % 2 == 0 else ("docker", "local")):
                got[launcher].append(measure(broker, launcher, args, out))
        rows.append((broker, got))
    took = time.monotonic() - t0

    def med(xs, k):
        return statistics.median(x[k] for x in xs)
    def spread(xs, k, fmt):
        if len(xs) < 2:
            return ""
        vals = [x[k] for x in xs]
        return f" ({fmt.format(min(vals))}-{fmt.format(max(vals))})"
    head = (f"Machine: {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
            f"{platform.platform()}, Python {platform.python_version()}, Docker engine {engine[1]} "
            f"({engine[0]}); shared with other developers' jobs, so noisy. {args.size} B messages, one "
            f"producer and one consumer process, consumer batch {args.batch}, {args.seconds:g} s per "
            f"measurement, latency at {args.fixed_rate:g} msg/s constant; {args.repeat} local/docker pair(s) "
            f"per broker (median, and min-max in brackets); whole benchmark {took:.0f} s.\n\n"
            "| broker | launcher | image | ready in s | max msg/s | e2e p50 ms | e2e p99 ms |\n"
            "|---|---|---|---|---|---|---|\n")
    body = ""
    for broker, got in rows:
        for launcher in ("local", "docker"):
            xs = got[launcher]
            body += (f"| {broker} ({xs[0]['impl']}) | {launcher} | {xs[0]['image'] or '-'} | "
                     f"{med(xs, 'start_s'):.1f} | {med(xs, 'max'):,.0f}{spread(xs, 'max', '{:,.0f}')} | "
                     f"{med(xs, 'p50'):.3f}{spread(xs, 'p50', '{:.3f}')} | "
                     f"{med(xs, 'p99'):.3f}{spread(xs, 'p99', '{:.3f}')} |\n")
        loc, doc = got["local"], got["docker"]
        body += (f"| {broker} | docker vs local | | | {med(doc, 'max') / med(loc, 'max') - 1:+.1%} | "
                 f"{med(doc, 'p50') / med(loc, 'p50') - 1:+.1%} | {med(doc, 'p99') / med(loc, 'p99') - 1:+.1%} |\n")
    print(head + body)
    if args.write:
        with open(args.write, "w") as fh:
            fh.write(head + body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
