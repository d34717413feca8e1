"""What the stages report to the orchestrator: fixed-size binary records, never pickles.

Stage A sends one ``frame`` record per frame and one ``publish`` record per message (how long the
broker client's publish call took); stage B one ``message`` record per message it finished. Records
travel in chunks over a one-way pipe, each chunk tagged by its first byte:

    R ready (JSON)   F frame records   P publish records   M message records   X failed frame (JSON)
    D stage A done (JSON)   E fatal error (text)   Z stopped (JSON)

Timestamps are monotonic ns; the fields named for a duration (``*_call``, ``*_harness``) are ns too.
Stage B's per-batch costs are repeated on each message of the batch (whole batch, not divided):

    free       when the replica was ready to receive again after the previous batch (its ack and
               bookkeeping done); for the first batch, when the loop started
    recv_call  duration of the receive call that returned this message
    ack_call   duration of the batch's ack call
    b_harness  the batch's bookkeeping: decode, stamps, records, shipping records; everything in the
               loop but the receive calls, the stage's work and the ack call
    publish_call  (joined from stage A's publish record of the same seq) duration of the publish call
    status     (publish record) ACKED, PUBLISH_FAILED or NOT_SENT: whether the broker acknowledged it
    a_harness  (frame record) stage A's bookkeeping for the frame: envelope building and encoding,
               stamps, records; the frame's loop time minus its work and its publish calls
    stream     the camera stream (stage A worker) of the frame / message: frame records carry it, message
               records get it from the seq (``seq % streams``, testbed/load/streams.py) in the orchestrator
               (``with_streams``); a frame is (stream, frame_id)
"""
from __future__ import annotations

import json
import struct

import numpy as np

FRAME_FIELDS = [
    ("frame_id", "<u8"), ("first_seq", "<u8"), ("n", "<u4"), ("failed", "<u1"),
    ("intended", "<i8"), ("start", "<i8"), ("end", "<i8"), ("published", "<i8"), ("a_harness", "<i8"),
    ("stream", "<u2"),
]
PUBLISH_FIELDS = [("seq", "<u8"), ("publish_call", "<i8"), ("status", "<u1")]
#: ``status`` of a publish record: the broker acknowledged it (its reply, confirm, PubAck; for a client
#: whose publish is asynchronous: no failure reported before the producer's final flush); it was handed
#: over with no acknowledgement to wait for (an adapter whose ``acknowledged`` is false: fire and
#: forget, or a mode that waits for no confirm); the publish failed with an error; or it was not attempted (no
#: connection to the broker at the time). Higher is worse: a seq recorded twice keeps the higher.
ACKED, SENT, PUBLISH_FAILED, NOT_SENT = 1, 2, 3, 4
MESSAGE_FIELDS = [
    ("seq", "<u8"), ("frame_id", "<u8"), ("index", "<u4"), ("count", "<u4"), ("replica", "<u2"),
    ("batch", "<u2"), ("intended", "<i8"), ("published", "<i8"), ("received", "<i8"),
    ("start", "<i8"), ("end", "<i8"), ("free", "<i8"), ("recv_call", "<i8"), ("ack_call", "<i8"),
    ("b_harness", "<i8"), ("publish_call", "<i8"), ("stream", "<u2"),
]
#: Filled in by the orchestrator, not by stage B: from stage A's publish records (``with_publish_calls``)
#: and from the seq (``with_streams``).
JOINED_FIELDS = ("publish_call", "stream")
FRAME_DTYPE = np.dtype(FRAME_FIELDS)
PUBLISH_DTYPE = np.dtype(PUBLISH_FIELDS)


def message_dtype(a_steps, b_steps) -> np.dtype:
    """Message record layout; stage step times (ns) follow the fixed fields: ``a_<step>``, ``b_<step>``."""
    return np.dtype(MESSAGE_FIELDS + [(f"a_{s}", "<i8") for s in a_steps] + [(f"b_{s}", "<i8") for s in b_steps])


READY, FRAMES, PUBLISHES, MESSAGES, FAILED, DONE, ERROR, STOPPED = b"R", b"F", b"P", b"M", b"X", b"D", b"E", b"Z"


def with_publish_calls(messages: np.ndarray, publishes: list[np.ndarray]) -> np.ndarray:
    """``messages`` with ``publish_call`` set from stage A's publish records (by seq; 0 where none)."""
    if not len(messages) or not publishes:
        return messages
    pub = np.concatenate(publishes)
    order = np.argsort(pub["seq"], kind="stable")
    seqs, calls = pub["seq"][order], pub["publish_call"][order]
    at = np.clip(np.searchsorted(seqs, messages["seq"]), 0, len(seqs) - 1)
    found = seqs[at] == messages["seq"]
    messages["publish_call"] = np.where(found, calls[at], 0)
    return messages


def with_streams(messages: np.ndarray, streams: int) -> np.ndarray:
    """``messages`` with ``stream`` set from the seq (testbed/load/streams.py: seq % streams)."""
    if len(messages):
        messages["stream"] = messages["seq"] % streams if streams > 1 else 0
    return messages


def frame_of(frames: np.ndarray, seqs, streams: int = 1) -> np.ndarray:
    """For each seq, the index into ``frames`` of the frame it belongs to (stream s's k-th message has
    seq k * streams + s; each frame's ``first_seq`` is its first message's seq), or -1 where none does.
    ``frames`` in any order."""
    seqs = np.asarray(seqs, dtype=np.int64)
    out = np.full(len(seqs), -1, dtype=np.int64)
    if not len(frames) or not len(seqs):
        return out
    n = frames["n"].astype(np.int64)
    first = frames["first_seq"].astype(np.int64)
    stream_of = seqs % streams if streams > 1 else np.zeros(len(seqs), np.int64)
    for s in np.unique(stream_of):
        fsel = np.flatnonzero((frames["stream"] == s) & (n > 0)) if streams > 1 else np.flatnonzero(n > 0)
        if not len(fsel):
            continue
        order = fsel[np.argsort(first[fsel], kind="stable")]
        msel = np.flatnonzero(stream_of == s)
        at = np.searchsorted(first[order], seqs[msel], side="right") - 1
        ok = at >= 0
        k = order[np.clip(at, 0, len(order) - 1)]
        inside = ok & ((seqs[msel] - first[k]) // max(1, streams) < n[k])
        out[msel[inside]] = k[inside]
    return out


def _without(dtype: np.dtype, left_out) -> np.dtype:
    """``dtype`` with fields ``left_out`` left out but every other field at its offset (same item size)."""
    names = [n for n in dtype.names if n not in left_out]
    return np.dtype({"names": names, "formats": [dtype.fields[n][0] for n in names],
                     "offsets": [dtype.fields[n][1] for n in names], "itemsize": dtype.itemsize})


class Reporter:
    """Buffers records in a stage and ships them in chunks (every ``interval_ns`` or ``max_rows``).

    With ``tail`` (a field name), rows are added without that field and it is given once per group of
    rows by ``end_batch`` (a batch's cost is known only after its rows are built); ship only after
    ``end_batch``. Rows also leave out ``skip`` (fields someone else fills; sent as 0).
    """

    def __init__(self, conn, dtype: np.dtype, tag: bytes, interval_ns: int = 50_000_000, max_rows: int = 4096,
                 tail: str | None = None, skip: tuple = ()):
        self.conn, self.dtype, self.tag = conn, dtype, tag
        self.rows: list[tuple] = []
        self.interval_ns, self.max_rows = interval_ns, max_rows
        self.last = 0
        self.tail = tail
        self.skip = tuple(skip)
        self.row_dtype = _without(dtype, (tail, *skip)) if tail or skip else dtype
        self.tail_n: list[int] = []
        self.tail_v: list[int] = []

    def add(self, row: tuple) -> None:
        self.rows.append(row)

    def end_batch(self, n: int, value: int) -> None:
        """The ``tail`` field of the last ``n`` rows added."""
        self.tail_n.append(n)
        self.tail_v.append(value)

    def maybe_flush(self, now_ns: int) -> None:
        if self.rows and (now_ns - self.last >= self.interval_ns or len(self.rows) >= self.max_rows):
            self.flush(now_ns)

    def flush(self, now_ns: int = 0) -> None:
        self.last = now_ns
        if self.rows:
            arr = np.array(self.rows, dtype=self.row_dtype).view(self.dtype)
            if self.tail:
                vals = np.repeat(np.asarray(self.tail_v, dtype=np.int64), self.tail_n)
                k = min(len(vals), len(arr))
                arr[self.tail][:k] = vals[:k]
                arr[self.tail][k:] = 0
                self.tail_n.clear()
                self.tail_v.clear()
            for name in self.skip:
                arr[name] = 0
            self.rows.clear()  # in place: the loops hold ``rows.append``
            self.conn.send_bytes(self.tag + arr.tobytes())

    def send_json(self, tag: bytes, obj) -> None:
        self.conn.send_bytes(tag + json.dumps(obj).encode())


#: struct codes of the integer field types the flat records use
_CODES = {"<u8": "Q", "<i8": "q", "<u4": "I", "<u2": "H", "|u1": "B", "<u1": "B"}


class FlatReporter:
    """A ``Reporter`` for records whose fields are all integers (frames, publishes), built for a hot loop:
    each row is packed straight into a preallocated buffer in the record's own layout (``struct.pack_into``,
    one C call; no tuple kept per row, nothing converted when it ships: the buffer is the chunk, behind its
    tag). ``add(row)`` packs one row (a tuple, every field in dtype order); stage A's loop packs itself,
    with no call layer (``at`` is the one-element list holding the next row's byte offset)::

        o = at[0]
        if o >= end:
            flush(now); o = at[0]
        pack_into(buf, o, *fields); at[0] = o + size

    Ships every ``interval_ns`` (``maybe_flush``), and when the buffer is full (``max_rows``)."""

    def __init__(self, conn, dtype: np.dtype, tag: bytes, interval_ns: int = 50_000_000, max_rows: int = 4096):
        self.conn, self.dtype, self.tag = conn, dtype, tag
        self.width = len(dtype.names)
        self.struct = struct.Struct("<" + "".join(_CODES[dtype.fields[n][0].str] for n in dtype.names))
        if self.struct.size != dtype.itemsize:
            raise ValueError(f"record layout {dtype} is not packed")
        self.size = self.struct.size
        self.pack_into = self.struct.pack_into
        self.interval_ns, self.max_rows = interval_ns, max_rows
        self.last = 0
        self.first = len(tag)  # byte offset of the first row
        self.buf = bytearray(tag + bytes(max_rows * self.size))
        self.end = len(self.buf)  # full when the next row would start here
        self.at = [self.first]

    def __len__(self) -> int:
        """Rows buffered, not yet shipped."""
        return (self.at[0] - self.first) // self.size

    def add(self, row: tuple) -> None:
        at = self.at
        o = at[0]
        if o >= self.end:
            self.flush(self.last)
            o = at[0]
        self.pack_into(self.buf, o, *row)
        at[0] = o + self.size

    def maybe_flush(self, now_ns: int) -> None:
        if self.at[0] > self.first and now_ns - self.last >= self.interval_ns:
            self.flush(now_ns)

    def flush(self, now_ns: int = 0) -> None:
        self.last = now_ns
        o = self.at[0]
        if o > self.first:
            self.conn.send_bytes(self.buf[:o])  # a copy: the buffer is written again at once
            self.at[0] = self.first

    def send_json(self, tag: bytes, obj) -> None:
        self.conn.send_bytes(tag + json.dumps(obj).encode())


def parse(chunk: bytes, message_dtype_: np.dtype):
    """(tag, payload) where payload is a record array, a JSON object or text."""
    tag, body = chunk[:1], chunk[1:]
    if tag == FRAMES:
        return tag, np.frombuffer(body, dtype=FRAME_DTYPE)
    if tag == PUBLISHES:
        return tag, np.frombuffer(body, dtype=PUBLISH_DTYPE)
    if tag == MESSAGES:
        return tag, np.frombuffer(body, dtype=message_dtype_)
    if tag == ERROR:
        return tag, body.decode("utf-8", "replace")
    return tag, json.loads(body or b"{}")
