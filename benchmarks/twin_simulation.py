"""The twin's simulation (exact recursions, testbed/twin/simulate.py) against the same queue written with
simpy, on 100,000 messages: the time each takes and whether they give the same departures.

    .venv/bin/pip install simpy          # for this benchmark only; the twin does not use it
    .venv/bin/python benchmarks/twin_simulation.py [--messages 100000] [--repeat 3]

Cases: one replica (a Lindley recursion, vectorised), two replicas behind one shared queue (a heap of
replicas), two replicas with batches of up to 4 within 2 ms. Service exponential at rho 0.8, Poisson
arrivals, no broker costs (so both sides model exactly the same system).
"""
from __future__ import annotations

import argparse
import math
import statistics
import time

import _common  # noqa: F401  (the project's root first on sys.path)
import numpy as np

from testbed.config import RunConfig
from testbed.load.distributions import rng_for
from testbed.twin.simulate import Model, service_draws, simulate

CASES = (("1 replica", 1, 1, 0.0), ("2 replicas, shared queue", 2, 1, 0.0),
         ("2 replicas, batch 4 / 2 ms", 2, 4, 2.0))


def config(messages: int, replicas: int, batch: int, wait_ms: float) -> RunConfig:
    rate = 800.0
    return RunConfig(rate=rate, arrival="poisson", fanout="1", producer_rate=math.inf, replicas=replicas,
                     consumer_rate=rate / (0.8 * replicas), service_dist="exponential", batch_max=batch,
                     batch_wait_ms=wait_ms, duration=messages / rate, warmup=0.0, drain=60.0, seed=1)


def with_simpy(cfg: RunConfig, arrivals: np.ndarray) -> np.ndarray:
    """The same system as a simpy process model: a FIFO store, one process per replica taking the head
    of the queue, batching up to batch_max within batch_wait of the first."""
    import simpy
    env = simpy.Environment()
    store = simpy.Store(env)
    n = len(arrivals)
    dep = np.zeros(n, dtype=np.int64)
    wait = int(cfg.batch_wait_ms * 1e6)

    def source():
        last = 0
        for i, t in enumerate(arrivals.tolist()):
            yield env.timeout(t - last)
            last = t
            store.put(i)

    def replica(r: int):
        stream = service_draws(cfg.service_dist, cfg.consumer_rate, rng_for(cfg.seed, f"service-b-{r}"), n).tolist()
        pos = 0
        while True:
            first = yield store.get()
            batch = [first]
            while len(batch) < cfg.batch_max and store.items:
                batch.append((yield store.get()))
            if len(batch) < cfg.batch_max and wait:
                deadline = env.now + wait
                while len(batch) < cfg.batch_max:
                    get = store.get()
                    left = deadline - env.now
                    res = yield get | env.timeout(max(0, left))
                    if get in res:
                        batch.append(res[get])
                    else:
                        get.cancel()
                        break
            cost = sum(stream[pos:pos + len(batch)])
            pos += len(batch)
            yield env.timeout(cost)
            for i in batch:
                dep[i] = env.now

    env.process(source())
    for r in range(cfg.replicas):
        env.process(replica(r))
    env.run()
    return dep


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=100_000)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    try:
        import simpy  # noqa: F401
        have_simpy = True
    except ImportError:
        have_simpy = False
    print("| case | messages | twin (s) | simpy (s) | simpy / twin | same departures |")
    print("|---|---:|---:|---:|---:|---|")
    for name, c, bm, w in CASES:
        cfg = config(a.messages, c, bm, w)
        model = Model(cfg, "shared", {})
        times, sims = [], None
        for _ in range(a.repeat):
            t = time.perf_counter()
            sims = simulate(model)
            times.append(time.perf_counter() - t)
        twin_s = statistics.median(times)
        if have_simpy:
            t = time.perf_counter()
            dep = with_simpy(cfg, sims.intended)
            simpy_s = time.perf_counter() - t
            same = "yes" if np.array_equal(dep, sims.end) else \
                f"no (max diff {np.abs(dep - sims.end).max() / 1e6:.3f} ms)"
            print(f"| {name} | {len(sims.end)} | {twin_s:.3f} | {simpy_s:.2f} | {simpy_s / twin_s:.0f}x | {same} |")
        else:
            print(f"| {name} | {len(sims.end)} | {twin_s:.3f} | (simpy not installed) | | |")


if __name__ == "__main__":
    main()
