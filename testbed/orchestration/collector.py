"""The orchestrator's side of the stages' pipes: it keeps every record and counts what the progress line
and the drain need (messages sent, finished, distinct messages finished, the backlog between them).

With several camera streams, stage A is several workers: ``done`` is set once every one of them has said it
is done (their figures summed), and a message's seq says its stream (testbed/load/streams.py)."""
from __future__ import annotations

import multiprocessing.connection as mpc
import time

import numpy as np

from testbed.harness import records


class Collector:
    """Reads the record pipes (one per worker slot) until each one closes."""

    def __init__(self, conns, msg_dtype, streams: int = 1):
        self.msg_dtype = msg_dtype
        self.streams = streams
        self.frames: list[np.ndarray] = []
        self.messages: list[np.ndarray] = []
        self.publishes: list[np.ndarray] = []  # stage A's publish-call records, joined into messages
        self.ready: dict[int, dict] = {}
        self.stopped: set[int] = set()
        self.done: dict | None = None       # every stream's stage A done: their figures together
        self._done: dict[int, dict] = {}    # stream -> its stage A's done record
        self.errors: list[str] = []
        self.failed: list[dict] = []
        self.corrupt = 0
        self.survived: dict[str, int] = {}  # stage B's errors and reconnects in a fault run
        self.sent = 0          # messages stage A reported (frame records)
        self.finished = 0      # message records from stage B (duplicates included)
        self.distinct = 0      # distinct seqs finished at least once
        self.seq_top = 0       # per stream, its highest seq finished + 1 (in its own count), summed: stage A
        self._tops = np.zeros(streams, dtype=np.int64)  # sent at least this many
        self._seen = np.zeros(1024, dtype=bool)  # seq -> finished at least once
        self.open = dict(enumerate(conns))

    @property
    def backlog(self) -> int:
        """Messages sent and not yet finished. Stage B's records may arrive before stage A's frame
        records of the same messages, so what was sent counts what stage B saw too: never negative."""
        return max(0, max(self.sent, self.seq_top) - self.distinct)

    def replace(self, slot: int, conn) -> None:
        """A restarted worker's new pipe for ``slot`` (its ready/stopped state starts afresh); what the
        old worker wrote before it died is read first."""
        old = self.open.get(slot)
        try:
            while old is not None and old.poll():
                self.handle(slot, old.recv_bytes())
        except (EOFError, OSError):
            pass
        self.open[slot] = conn
        self.ready.pop(slot, None)
        self.stopped.discard(slot)

    def poll(self, timeout: float) -> None:
        if not self.open:
            time.sleep(timeout)
            return
        for conn in mpc.wait(list(self.open.values()), timeout):
            idx = next((i for i, c in self.open.items() if c is conn), None)
            if idx is None:
                continue
            while True:
                try:
                    chunk = conn.recv_bytes()
                except (EOFError, OSError):
                    if self.open.get(idx) is conn:
                        del self.open[idx]
                    break
                self.handle(idx, chunk)
                if not conn.poll():
                    break

    def handle(self, idx: int, chunk: bytes) -> None:
        tag, body = records.parse(chunk, self.msg_dtype)
        if tag == records.MESSAGES:
            self._messages(body.copy())
        elif tag == records.PUBLISHES:
            self.publishes.append(body.copy())
        elif tag == records.FRAMES:
            body = body.copy()
            self.frames.append(body)
            self.sent += int(body["n"].sum())
        elif tag == records.READY:
            self.ready[idx] = body
        elif tag == records.DONE:
            self._done[int(body.get("stream", 0))] = body
            if len(self._done) >= self.streams:
                self.done = _together(list(self._done.values()))
        elif tag == records.STOPPED:
            self.stopped.add(idx)
            self.corrupt += int(body.get("corrupt", 0))
            for k in ("receive_errors", "ack_errors", "reconnects"):  # fault runs: what stage B survived
                if body.get(k):
                    self.survived[k] = self.survived.get(k, 0) + int(body[k])
        elif tag == records.FAILED:
            self.failed.append(body)
        elif tag == records.ERROR:
            self.errors.append(body)

    def _messages(self, body: np.ndarray) -> None:
        self.messages.append(body)
        self.finished += len(body)
        seqs = np.unique(body["seq"]).astype(np.int64)
        if not len(seqs):
            return
        top = int(seqs[-1]) + 1
        if self.streams == 1:
            self.seq_top = max(self.seq_top, top)
        else:
            np.maximum.at(self._tops, seqs % self.streams, seqs // self.streams + 1)
            self.seq_top = int(self._tops.sum())
        if top > len(self._seen):
            grown = np.zeros(max(top, 2 * len(self._seen)), dtype=bool)
            grown[:len(self._seen)] = self._seen
            self._seen = grown
        new = seqs[~self._seen[seqs]]
        self._seen[new] = True
        self.distinct += len(new)

    def frames_array(self) -> np.ndarray:
        return np.concatenate(self.frames) if self.frames else np.zeros(0, records.FRAME_DTYPE)

    def publishes_array(self) -> np.ndarray:
        return np.concatenate(self.publishes) if self.publishes else np.zeros(0, records.PUBLISH_DTYPE)

    def messages_array(self) -> np.ndarray:
        m = np.concatenate(self.messages) if self.messages else np.zeros(0, self.msg_dtype)
        return records.with_streams(records.with_publish_calls(m, self.publishes), self.streams)


def _together(done: list[dict]) -> dict:
    """Every stream's stage A done record as one: counts summed, publish errors merged by reason."""
    if len(done) == 1:
        return done[0]
    out = {"frames": 0, "sent": 0, "reconnects": 0, "publish_errors": {}}
    for d in done:
        for k in ("frames", "sent", "reconnects"):
            out[k] += int(d.get(k, 0))
        for why, n in (d.get("publish_errors") or {}).items():
            out["publish_errors"][why] = out["publish_errors"].get(why, 0) + int(n)
    bins = [d["ack_bins"] for d in done if d.get("ack_bins") is not None]
    if bins:  # when acknowledgements arrived, any stream's (testbed/analysis/availability.py)
        out["ack_bins"] = sorted(set().union(*bins))
    return out
