"""One timeline: each host's monotonic clock mapped onto the orchestrator's.

Host side, ``ClockServer``: a UDP socket on the host's own address (in its agent) answering each probe
with its ``time.monotonic_ns()``, read as the probe arrives. A probe carries the run's clock key; others
get no answer.

Orchestrator side, ``ClockMap``: Cristian / NTP exchanges on that socket, never through Ray calls.
One exchange: t1 (ours) -> T (the host's) -> t4 (ours); since T was read between t1 and t4, the host's
offset (host - ours) lies in [T - t4, T - t1]: the midpoint, within half the round trip. One *sample*
is ``exchanges`` exchanges in a row; its ``keep`` fastest are intersected (each interval holds the
true offset, so their intersection does, and it is no wider than the fastest one's): the sample's
offset is the intersection's middle, its uncertainty half its width. Samples are taken at the start,
every few seconds while a run goes (``start``/``stop``: a background thread) and at the end; offset and
drift are fitted by weighted least squares (weights 1/uncertainty^2, samples noisier than three times
the median left out), and the stated uncertainty is the worst, over the samples used, of the sample's
uncertainty plus its distance from the fit: where the clocks' rates are steady, every conversion within
the samples' span is that close to the truth.
"""
from __future__ import annotations

import hmac
import socket
import struct
import threading
import time
from dataclasses import dataclass

import numpy as np

now_ns = time.monotonic_ns
KEY_BYTES = 16
_SEQ = struct.Struct("<Q")
_REPLY = struct.Struct("<Qq")
EXCHANGES = 24
KEEP = 4
INTERVAL_S = 2.0
TIMEOUT_S = 0.2
GIVE_UP = 3  # unanswered exchanges in a row (and none answered) that end a sample


class ClockServer:
    """Answers clock probes on ``address`` (a UDP port of its own) from a daemon thread."""

    def __init__(self, address: str, key: bytes):
        if len(key) != KEY_BYTES:
            raise ValueError("a clock key is 16 bytes")
        self.key = key
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((address, 0))
        self.port = self.sock.getsockname()[1]
        self.answered = 0
        self._thread = threading.Thread(target=self._serve, name="clock-server", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        recv, send, clock, key, pack = self.sock.recvfrom, self.sock.sendto, now_ns, self.key, _REPLY.pack
        while True:
            try:
                data, peer = recv(64)
            except OSError:
                return
            t = clock()
            if len(data) == KEY_BYTES + 8 and hmac.compare_digest(data[:KEY_BYTES], key):
                try:
                    send(pack(_SEQ.unpack_from(data, KEY_BYTES)[0], t), peer)
                    self.answered += 1
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


@dataclass
class Sample:
    at_ns: int            # our clock, the middle of the fastest exchange
    offset_ns: float      # host - ours
    uncertainty_ns: float
    rtt_ns: int           # the fastest exchange's round trip
    rtts_ns: list         # the kept exchanges' round trips


@dataclass
class Fit:
    ref_ns: int           # our clock: the samples' weighted middle
    offset_ns: float      # host - ours at ref_ns
    drift: float          # d(offset)/d(our time), dimensionless (1e-6 = 1 ppm)
    uncertainty_ns: float
    used: int


class ClockMap:
    """The clock of one host as seen from here: samples, their fit, conversions both ways."""

    def __init__(self, host: str, address: str, port: int, key: bytes, exchanges: int = EXCHANGES,
                 keep: int = KEEP, timeout_s: float = TIMEOUT_S):
        self.host, self.address, self.port, self.key = host, address, port, key
        self.exchanges, self.keep, self.timeout_s = exchanges, keep, timeout_s
        self.samples: list[Sample] = []
        self.lost = 0
        self._seq = 0
        self._lock = threading.Lock()
        self._sock_lock = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.connect((address, port))
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._fit: Fit | None = None

    # -- measuring ----------------------------------------------------------------------------------
    def _exchange(self) -> tuple[int, int, int] | None:
        self._seq += 1
        seq = self._seq
        probe = self.key + _SEQ.pack(seq)
        sock = self._sock
        sock.settimeout(self.timeout_s)
        t1 = now_ns()
        try:
            sock.send(probe)
        except OSError:  # e.g. refused after a partition: this exchange is lost, the sample goes on
            self.lost += 1
            return None
        while True:
            try:
                data = sock.recv(64)
            except (socket.timeout, ConnectionRefusedError, OSError):
                self.lost += 1
                return None
            t4 = now_ns()
            if len(data) == _REPLY.size:
                got, t = _REPLY.unpack(data)
                if got == seq:
                    return t1, t, t4
            # a late answer to an earlier probe: keep waiting for ours

    def sample(self) -> Sample:
        """One sample (``exchanges`` exchanges); recorded and returned. Raises OSError when the host
        answers none of them."""
        got, missed = [], 0
        with self._sock_lock:
            for _ in range(self.exchanges):
                x = self._exchange()
                if x is not None:
                    got.append(x)
                    missed = 0
                else:
                    missed += 1
                    if missed >= GIVE_UP and not got:
                        break  # a partitioned or dead host: do not wait out every exchange
        if not got:
            raise OSError(f"host {self.host}: no answer from its clock at {self.address}:{self.port}")
        got.sort(key=lambda x: x[2] - x[0])
        fast = got[:self.keep]
        lo = max(t - t4 for t1, t, t4 in fast)
        hi = min(t - t1 for t1, t, t4 in fast)
        t1, t, t4 = fast[0]
        if lo <= hi:
            offset, unc = (lo + hi) / 2, (hi - lo) / 2
        else:  # cannot happen with one steady clock per side; the fastest exchange alone then
            offset, unc = t - (t1 + t4) / 2, (t4 - t1) / 2
        s = Sample((t1 + t4) // 2, offset, max(unc, 1.0), t4 - t1, [b - a for a, _, b in fast])
        with self._lock:
            self.samples.append(s)
            self._fit = None
        return s

    def start(self, interval_s: float = INTERVAL_S) -> None:
        """Take a sample every ``interval_s`` in a background thread (until ``stop``)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._every, args=(interval_s,), name=f"clock-{self.host}",
                                        daemon=True)
        self._thread.start()

    def _every(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                self.sample()
            except OSError:
                pass  # a partitioned or dead host: the samples before and after it remain

    def stop(self, final: bool = True) -> None:
        """Stop the background samples; with ``final``, take the last one now."""
        t, self._thread = self._thread, None
        if t is not None:
            self._stop.set()
            t.join(5)
        if final:
            try:
                self.sample()
            except OSError:
                pass

    def close(self) -> None:
        self.stop(final=False)
        self._sock.close()

    # -- the fit ------------------------------------------------------------------------------------
    def fit(self) -> Fit:
        with self._lock:
            if self._fit is not None:
                return self._fit
            samples = list(self.samples)
        if not samples:
            raise ValueError(f"host {self.host}: no clock sample yet")
        u = np.array([s.uncertainty_ns for s in samples])
        use = u <= 3 * np.median(u)
        t = np.array([s.at_ns for s in samples], dtype=np.int64)[use]
        o = np.array([s.offset_ns for s in samples])[use]
        uu = u[use]
        w = 1.0 / uu ** 2
        ref = int(t[0] + round(float(np.sum(w * (t - t[0]).astype(float)) / np.sum(w))))
        dt = (t - ref).astype(float)
        o_mean = float(np.sum(w * o) / np.sum(w))
        den = float(np.sum(w * dt * dt))
        drift = float(np.sum(w * dt * (o - o_mean)) / den) if len(t) >= 2 and (t.max() - t.min()) > 5e8 else 0.0
        resid = np.abs(o_mean + drift * dt - o)
        fit = Fit(ref, o_mean, drift, float(np.max(uu + resid)), int(use.sum()))
        with self._lock:
            self._fit = fit
        return fit

    def to_orchestrator(self, host_ns):
        """Host timestamps (an int or an int64 array; zeros, "not stamped", stay zero) on our clock."""
        f = self.fit()
        if np.isscalar(host_ns):
            if not host_ns:
                return 0
            d = int(host_ns) - f.ref_ns - round(f.offset_ns)
            return f.ref_ns + round(d / (1.0 + f.drift))
        a = np.asarray(host_ns, dtype=np.int64)
        d = (a - np.int64(f.ref_ns) - np.int64(round(f.offset_ns))).astype(np.float64)
        out = np.int64(f.ref_ns) + np.rint(d / (1.0 + f.drift)).astype(np.int64)
        return np.where(a == 0, 0, out)

    def to_host(self, our_ns: int) -> int:
        """One of our timestamps on the host's clock (a start time sent to a stage there)."""
        f = self.fit()
        return int(our_ns) + round(f.offset_ns + f.drift * (int(our_ns) - f.ref_ns))

    def report(self) -> dict:
        """What run.json keeps of this host's clock."""
        f = self.fit()
        rtts = [r for s in self.samples for r in s.rtts_ns]
        return {"clock_offset_ns": int(round(f.offset_ns)), "clock_drift_ppm": round(f.drift * 1e6, 4),
                "clock_uncertainty_us": round(f.uncertainty_ns / 1e3, 3), "clock_samples": len(self.samples),
                "clock_samples_used": f.used, "clock_lost_exchanges": self.lost,
                "clock_rtt_us": {"min": round(min(rtts) / 1e3, 1), "p50": round(float(np.median(rtts)) / 1e3, 1),
                                 "max": round(max(rtts) / 1e3, 1)} if rtts else {},
                "clock_sample_rtt_us": [round(s.rtt_ns / 1e3, 1) for s in self.samples]}


class IdentityClock:
    """The orchestrator's own clock (a stage or broker left on this machine): nothing to map."""

    host = ""

    def to_orchestrator(self, host_ns):
        return host_ns

    def to_host(self, our_ns: int) -> int:
        return int(our_ns)
