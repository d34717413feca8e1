"""Stage B's message records (records.message_dtype), built in bulk.

Stage B's loop (testbed/harness/loops.py ``consumer_main``) keeps, per message, only the bytes of its
envelope header as it came off the broker, and per receive call and per batch one small tuple of the
harness's own stamps. When a chunk is shipped (every ``interval_ns`` or ``max_rows`` messages, at a batch
boundary) every header of the chunk is parsed at once (numpy; Python's struct for a few rows, where
numpy's fixed cost per call would dominate) and the records are filled: the fields and their meaning are
exactly records.py's, only the work moved off the per-message path. A per-message decode and a 17-field
record tuple took about 30 us of stage B's bookkeeping per message here at batch 1 with 10 ms of service
(the caches gone cold by then; docs/brokers.md "Stage B client costs").

    log.add(heads)                     # header bytes of each message a receive call returned (``head_of``)
    log.group(n, received, recv_call)  # ... how many it returned, when, how long the call took
    log.batch(n, start, end, free, ack_call, b_harness, b_steps)   # the batch those messages formed
    log.maybe_flush(now) / log.flush() # ships the batches given so far (not the one being formed)

A header that is not a well-formed envelope of this run (size, magic, dtype, ndim, the stage A step
count) is *corrupt*: its message gets no record, is counted in ``corrupt`` and does not count in its
batch's size (``batch``), as a message the per-message decode refused.
"""
from __future__ import annotations

import json
import struct

import numpy as np

from testbed.harness.envelope import DTYPES, MAGIC, Envelope, encode_header, header_size

#: the envelope header as numpy sees it (testbed/harness/envelope.py's layout, little endian, packed)
_FIXED_FIELDS = [("magic", "S4"), ("dtype", "u1"), ("ndim", "u1"), ("nsteps", "<u2"), ("seq", "<u8"),
                 ("frame_id", "<u8"), ("index", "<u4"), ("count", "<u4"), ("intended", "<i8"),
                 ("published", "<i8"), ("shape", "<u4", (4,))]
#: record field <- header field
_FROM_HEAD = (("seq", "seq"), ("frame_id", "frame_id"), ("index", "index"), ("count", "count"),
              ("intended", "intended"), ("published", "published"))
_BATCH_FIELDS = ("start", "end", "free", "ack_call", "b_harness")
#: envelope.py's fixed part, for the few-rows path (the same layout as ``_FIXED_FIELDS``)
_HEAD_FORMAT = "<4sBBHQQIIqq4I"
#: a chunk of at least this many messages is built with numpy
BULK_FROM = 32


def header_dtype(nsteps: int) -> np.dtype:
    return np.dtype(_FIXED_FIELDS + [(f"step{i}", "<i8") for i in range(nsteps)])


def head_of(data, size: int):
    """What ``MessageLog.add`` takes for a delivery's ``data``: the header part of ``[header, payload]``,
    the first ``size`` bytes of one buffer, or an in-process Envelope as it is."""
    if isinstance(data, (list, tuple)):
        if len(data) == 2:
            return data[0]
        return data[0][:size] if len(data) == 1 else b""  # decode takes one or two parts: else corrupt
    if data.__class__ is Envelope:
        return data
    try:
        return data[:size]
    except TypeError:  # not a buffer at all: corrupt
        return b""


class MessageLog:
    def __init__(self, conn, dtype: np.dtype, tag: bytes, a_steps, b_steps, replica: int,
                 skip: tuple = (), interval_ns: int = 50_000_000, max_rows: int = 4096):
        self.conn, self.dtype, self.tag = conn, dtype, tag
        self.a_steps, self.b_steps = tuple(a_steps), tuple(b_steps)
        self.replica = replica
        self.skip = tuple(skip)
        self.interval_ns, self.max_rows = interval_ns, max_rows
        self.size = header_size(len(self.a_steps))
        self.head_dtype = header_dtype(len(self.a_steps))
        self._unpack = struct.Struct(_HEAD_FORMAT + "q" * len(self.a_steps)).unpack
        # rows as tuples, without the fields someone else fills (at their offsets: a view gives the records)
        names = [f for f in dtype.names if f not in self.skip]
        self.row_dtype = np.dtype({"names": names, "formats": [dtype.fields[f][0] for f in names],
                                   "offsets": [dtype.fields[f][1] for f in names], "itemsize": dtype.itemsize})
        self.heads: list = []
        self.groups: list[tuple] = []   # (n, received, recv_call)
        self.batches: list[tuple] = []  # (n, start, end, free, ack_call, b_harness, *b_steps)
        self.last = 0
        self.corrupt = 0
        self.shipped = 0  # records sent (well-formed messages)

    # -- the hot path: appends only --------------------------------------------------------------
    def add(self, heads) -> None:
        self.heads.extend(heads)

    def group(self, n: int, received: int, recv_call: int) -> None:
        self.groups.append((n, received, recv_call))

    def batch(self, n: int, start: int, end: int, free: int, ack_call: int, b_harness: int, b_steps=()) -> None:
        self.batches.append((n, start, end, free, ack_call, b_harness, *b_steps))

    def maybe_flush(self, now_ns: int) -> None:
        if self.batches and (now_ns - self.last >= self.interval_ns or len(self.heads) >= self.max_rows):
            self.flush(now_ns)

    # -- shipping ----------------------------------------------------------------------------------
    def flush(self, now_ns: int = 0) -> None:
        """Ship the records of every batch given so far; headers and receive groups added for a batch
        not given yet (the one in service) stay for the next chunk."""
        self.last = now_ns
        if not self.batches:
            return
        n = sum(b[0] for b in self.batches)
        k, g = 0, 0
        for g, grp in enumerate(self.groups, start=1):
            k += grp[0]
            if k >= n:
                break
        if k != n or len(self.heads) < n:
            raise ValueError(f"stage B records: {len(self.heads)} headers and receive groups of {k} messages "
                             f"for batches of {n}")
        arr = self.build(self.heads[:n], self.groups[:g], self.batches)
        del self.heads[:n], self.groups[:g]  # in place: stage B's loop holds their ``append``
        self.batches.clear()
        if len(arr):
            self.conn.send_bytes(self.tag + arr.tobytes())

    def build(self, heads: list, groups: list, batches: list) -> np.ndarray:
        """The records of these messages (the corrupt left out and counted): a few rows in Python (numpy's
        fixed cost per call would dominate), many with numpy; both give the same records."""
        heads = [h if h.__class__ is bytes else _as_bytes(h) for h in heads]
        out = (self._build_rows if len(heads) < BULK_FROM else self._build_bulk)(heads, groups, batches)
        self.shipped += len(out)
        return out

    def _build_rows(self, heads: list, groups: list, batches: list) -> np.ndarray:
        unpack, size, nsteps, replica = self._unpack, self.size, len(self.a_steps), self.replica
        ndtypes = len(DTYPES)
        rows = []
        at = gi = left = 0
        received = recv_call = 0
        bad = 0
        for bn, start, end, free, ack_call, b_harness, *b_steps in batches:
            good = []
            for _ in range(bn):
                if not left:
                    left, received, recv_call = groups[gi]
                    gi += 1
                left -= 1
                h = heads[at]
                at += 1
                f = unpack(h) if len(h) == size else None
                if f is None or f[0] != MAGIC or f[1] >= ndtypes or f[2] > 4 or f[3] != nsteps:
                    bad += 1
                    continue
                good.append((f, received, recv_call))
            k = len(good)
            for f, r, c in good:
                rows.append((f[4], f[5], f[6], f[7], replica, k, f[8], f[9], r, start, end, free, c, ack_call,
                             b_harness, *f[14:], *b_steps))
        self.corrupt += bad
        out = np.array(rows, dtype=self.row_dtype).view(self.dtype) if rows else np.zeros(0, self.dtype)
        for name in self.skip:
            out[name] = 0
        return out

    def _build_bulk(self, heads: list, groups: list, batches: list) -> np.ndarray:
        n = len(heads)
        size = self.size
        lens = np.fromiter(map(len, heads), dtype=np.int64, count=n)
        ok = lens == size
        if ok.all():
            h = np.frombuffer(b"".join(heads), dtype=self.head_dtype)
        else:
            blank = bytes(size)
            h = np.frombuffer(b"".join([x if good else blank for x, good in zip(heads, ok.tolist())]),
                              dtype=self.head_dtype)
        ok &= (h["magic"] == MAGIC) & (h["dtype"] < len(DTYPES)) & (h["ndim"] <= 4) \
            & (h["nsteps"] == len(self.a_steps))
        out = np.zeros(n, dtype=self.dtype)
        for rec, field in _FROM_HEAD:
            out[rec] = h[field]
        for i, s in enumerate(self.a_steps):
            out[f"a_{s}"] = h[f"step{i}"]
        out["replica"] = self.replica
        g = np.array(groups, dtype=np.int64).reshape(-1, 3)
        b = np.array(batches, dtype=np.int64).reshape(-1, 6 + len(self.b_steps))
        out["received"] = np.repeat(g[:, 1], g[:, 0])
        out["recv_call"] = np.repeat(g[:, 2], g[:, 0])
        bn = b[:, 0]
        for j, name in enumerate(_BATCH_FIELDS, start=1):
            out[name] = np.repeat(b[:, j], bn)
        for j, s in enumerate(self.b_steps, start=6):
            out[f"b_{s}"] = np.repeat(b[:, j], bn)
        # a batch's size counts its well-formed messages only (every batch holds at least one message)
        out["batch"] = np.repeat(np.add.reduceat(ok.astype(np.int64), np.cumsum(bn) - bn), bn)
        for name in self.skip:
            out[name] = 0
        bad = int(n - ok.sum())
        self.corrupt += bad
        return out[ok] if bad else out

    def send_json(self, tag: bytes, obj) -> None:
        self.conn.send_bytes(tag + json.dumps(obj).encode())


def _as_bytes(h) -> bytes:
    if h.__class__ is Envelope:
        return encode_header(h)
    try:
        return bytes(h)
    except TypeError:
        return b""
