"""Camera streams (``--streams N``): N stage A workers, each a camera with its own schedule, frame
numbers, seed stream and message numbers.

Stream s of N (0 <= s < N):

    rate       ``--rate-per-stream``, or ``--rate`` / N (the offered total stays ``--rate``)
    seed       ``stream_seed(seed, s)``: the run's own seed for stream 0, so ``--streams 1`` is exactly a
               run without streams (same schedule, same draws, same records); a seed drawn from
               (seed, s) for the others. Every random dimension of the stream (arrivals, fan-out,
               stage A's service, payload bytes) draws from it, by the names it always has
               (testbed/load/distributions.py ``rng_for``)
    schedule   ``schedule(arrival, rate_s, duration, seed_s)`` (open loop; closed loop has none)
    frames     numbered 0, 1, ... per stream (a frame is (stream, frame_id))
    seqs       the k-th message stream s publishes (k = 0, 1, ...) has seq ``k * N + s``: unique over the
               run, dense while the streams offer the same rate (the collector indexes a bool array by
               seq), in publish order within a stream, and ``seq % N`` is its stream

``stream_config(cfg, s)`` is the configuration stream s's stage A runs with (its rate and seed); it is
built from the run's configuration and the stream index alone, so a stream's worker can be started
anywhere (a host of its own) from plain values.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from testbed.load.arrivals import closed_window, schedule

#: mixed into the seed sequence of streams 1..N-1 (stream 0 uses the run's seed as it is)
STREAM_SALT = 0x53545245  # "STRE"


def stream_seed(seed: int, stream: int) -> int:
    """The seed of camera stream ``stream``: ``seed`` itself for stream 0, else one drawn from both."""
    if stream == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), STREAM_SALT, int(stream)]).generate_state(1, np.uint32)[0])


def total_rate(cfg) -> float:
    """Frames/s offered by all streams together (open loop)."""
    return cfg.rate_per_stream * cfg.streams if cfg.rate_per_stream else cfg.rate


def stream_rate(cfg) -> float:
    """Frames/s of each stream (open loop)."""
    return cfg.rate_per_stream if cfg.rate_per_stream else cfg.rate / cfg.streams


def stream_config(cfg, stream: int):
    """The configuration stream ``stream``'s stage A runs with: its own rate and seed; with one stream,
    ``cfg`` itself (unchanged)."""
    if cfg.streams == 1 and not cfg.rate_per_stream:
        return cfg
    return dataclasses.replace(cfg, rate=stream_rate(cfg), rate_per_stream=0.0,
                               seed=stream_seed(cfg.seed, stream), broker_opt=dict(cfg.broker_opt))


def stream_schedule(cfg, stream: int) -> np.ndarray:
    """Intended send times (ns offsets from the start) of stream ``stream``'s frames (open loop)."""
    scfg = stream_config(cfg, stream)
    return schedule(scfg.arrival, scfg.rate, scfg.duration, scfg.seed)


def offered_schedule(cfg) -> np.ndarray:
    """Every stream's intended send times together, sorted (open loop); empty for closed loop, whose
    frames are released as earlier ones finish (their records say when)."""
    if closed_window(cfg.arrival):
        return np.zeros(0, dtype=np.int64)
    if cfg.streams == 1:
        return stream_schedule(cfg, 0)
    return np.sort(np.concatenate([stream_schedule(cfg, s) for s in range(cfg.streams)]), kind="stable")


def seq_stream(seq, streams: int):
    """The stream of message ``seq`` (an int or an array)."""
    return seq % streams if streams > 1 else seq * 0
