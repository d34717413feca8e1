"""Records onto one timeline: each timestamp converted from the clock of the host that stamped it to the
orchestrator's, before metrics (testbed/analysis/metrics.py) see it.

Who stamps what (testbed/harness/records.py, loops.py):

    frame records     intended, start, end, published             stage A's host
    message records   intended, published                         stage A's host (carried in the envelope)
                      received, start, end, free                  the host of the replica that finished it
    durations         *_call, *_harness, a_<step>, b_<step>       one host's clock each: unchanged

A clock is anything with ``to_orchestrator(int64 array)`` (clock.ClockMap; clock.IdentityClock for a
stage left on this machine). Stage A's clock is one clock, or a mapping stream -> clock (camera streams
dealt over hosts: the records' ``stream`` field says whose). Zeros ("not stamped") stay zero.
"""
from __future__ import annotations

import numpy as np

FRAME_FIELDS = ("intended", "start", "end", "published")
MESSAGE_A_FIELDS = ("intended", "published")
MESSAGE_B_FIELDS = ("received", "start", "end", "free")


def _by(records: np.ndarray, field: str, clocks):
    """(selection, clock) pairs covering ``records``: one clock for all, or one per value of ``field``."""
    if hasattr(clocks, "to_orchestrator"):
        return [(slice(None), clocks)]
    if field not in records.dtype.names:
        raise ValueError(f"records have no {field!r} field to choose a clock by")
    return [(records[field] == v, clocks[int(v)]) for v in np.unique(records[field])]


def _convert(out: np.ndarray, fields, field: str, clocks) -> None:
    for sel, clock in _by(out, field, clocks):
        for f in fields:
            if f in out.dtype.names:
                out[f][sel] = clock.to_orchestrator(out[f][sel])


def convert_frames(frames: np.ndarray, a_clock) -> np.ndarray:
    """Frame records on our clock; ``a_clock``: stage A's clock, or stream -> clock."""
    out = frames.copy()
    if len(out):
        _convert(out, FRAME_FIELDS, "stream", a_clock)
    return out


def convert_messages(messages: np.ndarray, a_clock, replica_clocks) -> np.ndarray:
    """Message records on our clock (their ``stream`` joined first, when stage A's clock is per stream);
    ``replica_clocks``: replica -> clock (a dict, or a list indexed by replica), or one clock."""
    out = messages.copy()
    if len(out):
        _convert(out, MESSAGE_A_FIELDS, "stream", a_clock)
        _convert(out, MESSAGE_B_FIELDS, "replica", replica_clocks)
    return out


def negative(messages: np.ndarray, bound_ns: float) -> dict:
    """Latencies that cross hosts and came out below zero by more than ``bound_ns`` after mapping (the
    clocks' stated uncertainty): count and worst per quantity, reported, never clamped away."""
    out = {}
    if not len(messages):
        return out
    for name, a, b in (("transit", "published", "received"), ("e2e", "intended", "end")):
        d = messages[b].astype(np.int64) - messages[a].astype(np.int64)
        bad = d < -bound_ns
        out[name] = {"count": int(bad.sum()), "worst_us": round(float(d.min()) / 1e3, 3) if bad.any() else 0.0}
    return out
