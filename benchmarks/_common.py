"""What the benchmark scripts share: the import preamble, the raw loops' send timing and result
passing, harness runs, alternating the raw and harness sides (median and spread over repetitions),
and the markdown table they print and write.

Import it first, before anything of the project: ``import _common`` (the script's folder is on
``sys.path``) puts the project root first on the path and this folder last, so ``brokers`` is the
project's package even from benchmarks/brokers.py, and one script can still import another's raw loop.
"""
from __future__ import annotations

import argparse
import csv
import os
import platform
import socket
import statistics
import struct
import sys
import time
from collections.abc import Callable, Iterator

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]
sys.path.insert(0, ROOT)
sys.path.append(HERE)

import numpy as np  # noqa: E402

now = time.monotonic_ns
RESULT = struct.Struct("<qq")  # (messages, nanoseconds) of a max-rate window
STAMP = struct.Struct("<q")    # an intended send time in a raw message
WARMUP_SHARE = 0.2             # the first 20% of a raw latency run is warm-up
DEFAULT_REPEAT = 3


# -- raw loops --------------------------------------------------------------------------------------
def send_times(mode: str, seconds: float, rate: float = 0.0, extra_s: float = 1.0, chunk: int = 64
               ) -> Iterator[int]:
    """The intended send time of each raw message. ``max``: flat out for ``seconds + extra_s`` (the
    consumer measures ``seconds`` of it), each message's time is now; else constant arrivals at ``rate``
    for ``seconds``, sleeping until each intended time (open loop: a late sender does not shift them)."""
    if mode == "max":
        end = now() + int((seconds + extra_s) * 1e9)
        while now() < end:
            for _ in range(chunk):
                yield now()
    else:
        t0 = now() + 50_000_000
        for i in range(int(rate * seconds)):
            intended = t0 + int(i * 1e9 / rate)
            d = intended - now()
            if d > 0:
                time.sleep(d / 1e9)
            yield intended


def max_result(n: int, ns: int) -> bytes:
    return RESULT.pack(n, ns)


def latency_result(lat) -> bytes:
    return np.asarray(lat, np.int64).tobytes()


def read_result(mode: str, data: bytes):
    """What a raw consumer sent back: messages/s (``max``) or latencies in ns, warm-up dropped."""
    if mode == "max":
        n, ns = RESULT.unpack(data)
        return n / (ns / 1e9)
    lat = np.frombuffer(data, np.int64)
    return lat[int(len(lat) * WARMUP_SHARE):]


def percentiles_ms(lat_ns) -> tuple[float, float]:
    """(p50, p99) in ms of a latency array in ns."""
    return float(np.percentile(lat_ns, 50) / 1e6), float(np.percentile(lat_ns, 99) / 1e6)


def join_all(procs, timeout: float = 30) -> None:
    for p in procs:
        p.join(timeout)
        if p.is_alive():
            p.kill()
            p.join(5)


# -- the harness ------------------------------------------------------------------------------------
def harness(cfg, handle=None, partial_ok: bool = False) -> dict:
    """One testbed run (``execute``) on ``handle`` (or a broker of its own); its summary. With
    ``partial_ok`` a run that failed late (a max-rate run that did not drain) still gives its rates,
    read back from its summary.csv."""
    from testbed.config import validate
    from testbed.orchestration.execute import execute
    validate(cfg)
    try:
        return execute(cfg, broker_handle=handle).summary
    except Exception as exc:  # noqa: BLE001
        if not partial_ok or not os.path.exists(os.path.join(cfg.out, "summary.csv")):
            raise
        say(f"  harness run: {exc}")
        with open(os.path.join(cfg.out, "summary.csv"), newline="") as fh:
            return {k: _num(v) for k, v in next(csv.DictReader(fh)).items()}


def _num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


# -- repetitions --------------------------------------------------------------------------------------
def alternate(sides: dict[str, Callable[[], dict]], repeat: int = DEFAULT_REPEAT) -> dict[str, list[dict]]:
    """Measure every side ``repeat`` times, rotating which goes first each round (raw, harness; harness,
    raw; ...), so the machine's drift and noise fall on every side alike. {side: [result, ...]}."""
    names = list(sides)
    got: dict[str, list[dict]] = {n: [] for n in names}
    for i in range(repeat):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            got[name].append(sides[name]())
    return got


def med(xs: list[dict], key: str) -> float:
    return statistics.median(float(x[key]) for x in xs)


def cell(xs: list[dict], key: str, fmt: str = "{:.3f}") -> str:
    """The median, and the min-max spread in brackets when there was more than one measurement."""
    vals = [float(x[key]) for x in xs]
    m = fmt.format(statistics.median(vals))
    return m if len(vals) < 2 else f"{m} ({fmt.format(min(vals))}-{fmt.format(max(vals))})"


# -- output -----------------------------------------------------------------------------------------
def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def machine() -> str:
    return (f"Machine: {socket.gethostname()}, {os.cpu_count()} CPUs "
            f"({platform.processor() or platform.machine()}), {platform.platform()}, "
            f"Python {platform.python_version()}")


def table(columns: list[str], rows: list[list], align: list[str] | None = None) -> str:
    """A markdown table; ``align`` per column: "l" (default) or "r"."""
    sep = ["---:" if a == "r" else "---" for a in (align or ["l"] * len(columns))]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(sep) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def emit(text: str, path: str | None) -> None:
    """Print the result, and write it to ``path`` (``--write``) too."""
    print(text)
    if path:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text if text.endswith("\n") else text + "\n")


def parser(doc: str, seconds: float | None = None, sizes: str | None = None,
           fixed_rate: float | None = None) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark has (--repeat, --write) and, where a default
    is given, the raw-vs-harness ones (--seconds, --sizes, --fixed-rate)."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=DEFAULT_REPEAT,
                    help=f"measurements per side, raw and harness alternating (default {DEFAULT_REPEAT}; "
                         "the table gives the median and the min-max spread)")
    ap.add_argument("--write", metavar="FILE", help="also write the table (markdown) to FILE")
    if seconds is not None:
        ap.add_argument("--seconds", type=float, default=seconds, help="measured seconds per measurement")
    if sizes is not None:
        ap.add_argument("--sizes", default=sizes, help="payload sizes in bytes, comma-separated")
    if fixed_rate is not None:
        ap.add_argument("--fixed-rate", type=float, default=fixed_rate, help="messages/s for the latency rows")
    return ap
