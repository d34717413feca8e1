"""The network-fault proxy's own cost: a request/reply round trip to a real redis-server, direct and
through the run's Toxiproxy with no toxic active, alternating in blocks (median of the blocks' p50/p99).

    .venv/bin/python benchmarks/proxy_latency.py [--n 2000] [--blocks 5] [--bytes 1024]

Prints one markdown table (docs/faults.md quotes it). Needs redis-server and the Toxiproxy server
(scripts/setup.d/70-toxiproxy.sh).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import numpy as np  # noqa: E402
import redis  # noqa: E402

from testbed.config import RunConfig  # noqa: E402
from testbed.faults.proxy import NetworkFaults  # noqa: E402
from testbed.launchers.local import launch  # noqa: E402


def block(client, n: int, value: bytes) -> np.ndarray:
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        t = time.monotonic_ns()
        client.set("k", value)
        out[i] = time.monotonic_ns() - t
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--bytes", type=int, default=1024)
    a = ap.parse_args()
    import tempfile
    run_dir = tempfile.mkdtemp(prefix="testbed-proxybench-")
    handle = launch(RunConfig(broker="redis", launcher="local"), "proxybench", run_dir)
    try:
        with NetworkFaults(handle.endpoint.url) as net:
            direct = redis.Redis.from_url(handle.endpoint.url)
            proxied = redis.Redis.from_url(net.address_for(handle.endpoint.url))
            value = os.urandom(a.bytes)
            block(direct, 200, value), block(proxied, 200, value)  # warm both paths
            res = {"direct": [], "proxy": []}
            for _ in range(a.blocks):
                for name, c in (("direct", direct), ("proxy", proxied)):
                    res[name].append(block(c, a.n, value))
    finally:
        handle.stop()
    row = {k: (statistics.median(float(np.percentile(b, 50)) for b in v) / 1e3,
               statistics.median(float(np.percentile(b, 99)) for b in v) / 1e3) for k, v in res.items()}
    print(f"machine {platform.node()}, {os.cpu_count()} CPUs; redis SET of {a.bytes} B, {a.blocks} blocks of "
          f"{a.n}, alternating")
    print("| path | round trip p50 (us) | p99 (us) |\n|---|---|---|")
    for k, (p50, p99) in row.items():
        print(f"| {k} | {p50:.1f} | {p99:.1f} |")
    print(f"| proxy adds | {row['proxy'][0] - row['direct'][0]:.1f} | {row['proxy'][1] - row['direct'][1]:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
