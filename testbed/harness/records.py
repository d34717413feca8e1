"""What the stages report to the orchestrator: fixed-size binary records, never pickles.

Stage A sends one ``frame`` record per frame; stage B one ``message`` record per message it finished.
Records travel in chunks over a one-way pipe, each chunk tagged by its first byte:

    R ready (JSON)   F frame records   M message records   X failed frame (JSON)
    D stage A done (JSON)   E fatal error (text)   Z stopped (JSON)
"""
from __future__ import annotations

import json

import numpy as np

FRAME_FIELDS = [
    ("frame_id", "<u8"), ("first_seq", "<u8"), ("n", "<u4"), ("failed", "<u1"),
    ("intended", "<i8"), ("start", "<i8"), ("end", "<i8"), ("published", "<i8"),
]
MESSAGE_FIELDS = [
    ("seq", "<u8"), ("frame_id", "<u8"), ("index", "<u4"), ("count", "<u4"), ("replica", "<u2"),
    ("batch", "<u2"), ("intended", "<i8"), ("published", "<i8"), ("received", "<i8"),
    ("start", "<i8"), ("end", "<i8"),
]
FRAME_DTYPE = np.dtype(FRAME_FIELDS)


def message_dtype(a_steps, b_steps) -> np.dtype:
    """Message record layout; stage step times (ns) follow the fixed fields: ``a_<step>``, ``b_<step>``."""
    return np.dtype(MESSAGE_FIELDS + [(f"a_{s}", "<i8") for s in a_steps] + [(f"b_{s}", "<i8") for s in b_steps])


READY, FRAMES, MESSAGES, FAILED, DONE, ERROR, STOPPED = b"R", b"F", b"M", b"X", b"D", b"E", b"Z"


class Reporter:
    """Buffers records in a stage and ships them in chunks (every ``interval_ns`` or ``max_rows``)."""

    def __init__(self, conn, dtype: np.dtype, tag: bytes, interval_ns: int = 50_000_000, max_rows: int = 4096):
        self.conn, self.dtype, self.tag = conn, dtype, tag
        self.rows: list[tuple] = []
        self.interval_ns, self.max_rows = interval_ns, max_rows
        self.last = 0

    def add(self, row: tuple) -> None:
        self.rows.append(row)

    def maybe_flush(self, now_ns: int) -> None:
        if self.rows and (now_ns - self.last >= self.interval_ns or len(self.rows) >= self.max_rows):
            self.flush(now_ns)

    def flush(self, now_ns: int = 0) -> None:
        self.last = now_ns
        if self.rows:
            arr = np.array(self.rows, dtype=self.dtype)
            self.rows = []
            self.conn.send_bytes(self.tag + arr.tobytes())

    def send_json(self, tag: bytes, obj) -> None:
        self.conn.send_bytes(tag + json.dumps(obj).encode())


def parse(chunk: bytes, message_dtype_: np.dtype):
    """(tag, payload) where payload is a record array, a JSON object or text."""
    tag, body = chunk[:1], chunk[1:]
    if tag == FRAMES:
        return tag, np.frombuffer(body, dtype=FRAME_DTYPE)
    if tag == MESSAGES:
        return tag, np.frombuffer(body, dtype=message_dtype_)
    if tag == ERROR:
        return tag, body.decode("utf-8", "replace")
    return tag, json.loads(body or b"{}")
