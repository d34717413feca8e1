"""Clock mapping (testbed/hosts/clock.py) and records onto one timeline (timeline.py), on this machine's
loopback: the exchanges, the fit, the conversions, the key. Real time namespaces: test_hosts_cluster.py."""
from __future__ import annotations

import os
import secrets
import socket

import numpy as np
import pytest

from testbed.harness import records
from testbed.hosts import timeline
from testbed.hosts.clock import ClockMap, ClockServer, IdentityClock, Sample


@pytest.fixture()
def server():
    key = secrets.token_bytes(16)
    s = ClockServer("127.0.0.1", key)
    yield s, key
    s.close()


def test_same_clock_is_found_within_its_uncertainty(server):
    srv, key = server
    cm = ClockMap("self", "127.0.0.1", srv.port, key)
    for _ in range(3):
        s = cm.sample()
        assert abs(s.offset_ns) <= s.uncertainty_ns, s  # one clock: the truth is 0
        assert s.uncertainty_ns <= s.rtt_ns / 2 + 1 and len(s.rtts_ns) == cm.keep
    f = cm.fit()
    assert abs(f.offset_ns) <= f.uncertainty_ns
    rep = cm.report()
    assert rep["clock_samples"] == 3 and rep["clock_rtt_us"]["min"] > 0 and rep["clock_lost_exchanges"] == 0
    assert srv.answered == 3 * cm.exchanges
    cm.close()


def test_background_samples(server):
    srv, key = server
    cm = ClockMap("self", "127.0.0.1", srv.port, key)
    cm.sample()
    cm.start(0.05)
    import time
    time.sleep(0.4)
    cm.stop()  # and a last sample
    assert len(cm.samples) >= 4
    cm.close()


def test_wrong_key_gets_no_answer(server):
    srv, _ = server
    cm = ClockMap("self", "127.0.0.1", srv.port, secrets.token_bytes(16), exchanges=3, timeout_s=0.05)
    with pytest.raises(OSError, match="no answer"):
        cm.sample()
    assert srv.answered == 0 and cm.lost == 3
    cm.close()


def _synthetic(offset_ns: float, drift: float, unc_ns: float = 20_000.0) -> ClockMap:
    """A map whose samples are given (offset + drift, each sample off by at most ``unc_ns``)."""
    cm = ClockMap.__new__(ClockMap)
    cm.host, cm.samples, cm.lost = "x", [], 0
    import threading
    cm._lock, cm._fit = threading.Lock(), None
    rng = np.random.default_rng(3)
    t0 = 5_000_000_000_000
    for i in range(12):
        t = t0 + i * 2_000_000_000
        err = rng.uniform(-0.5, 0.5) * unc_ns
        cm.samples.append(Sample(t, offset_ns + drift * (t - t0) + err, unc_ns, int(2 * unc_ns), [int(2 * unc_ns)]))
    return cm


def test_fit_recovers_offset_and_drift():
    cm = _synthetic(1_000_000_000_000.0, 20e-6)  # +1000 s, 20 ppm
    f = cm.fit()
    assert abs(f.drift - 20e-6) < 2e-6
    t = cm.samples[5].at_ns
    truth = 1_000_000_000_000.0 + 20e-6 * (t - cm.samples[0].at_ns)
    host = int(t + truth)
    back = cm.to_orchestrator(host)
    assert abs(back - t) <= f.uncertainty_ns
    assert cm.to_host(cm.to_orchestrator(host)) == pytest.approx(host, abs=2)
    arr = np.array([0, host, host + 1_000_000], dtype=np.int64)
    conv = cm.to_orchestrator(arr)
    assert conv[0] == 0, "not stamped stays not stamped"
    assert abs(conv[1] - back) <= 1 and abs((conv[2] - conv[1]) - 1_000_000) <= 100
    rep = cm.report()
    assert rep["clock_drift_ppm"] == pytest.approx(20, abs=2) and rep["clock_samples_used"] == 12


def test_noisy_samples_are_left_out():
    cm = _synthetic(-37_500_000_000.0, 0.0)
    cm.samples[3] = Sample(cm.samples[3].at_ns, -37_500_000_000.0 + 3e6, 2e6, int(4e6), [int(4e6)])
    f = cm.fit()
    assert f.used == 11 and abs(f.offset_ns + 37_500_000_000.0) < 20_000 and f.uncertainty_ns < 50_000


def test_records_onto_one_timeline():
    a = _synthetic(1_000_000_000_000.0, 0.0)   # stage A's host: +1000 s
    b = _synthetic(-37_500_000_000.0, 0.0)     # the replica's host: -37.5 s
    t = a.samples[4].at_ns
    frames = np.zeros(2, records.FRAME_DTYPE)
    frames["intended"] = [t + 1_000_000_000_000, t + 1_000_000_000_000 + 10]
    frames["published"] = frames["intended"] + 5
    mdt = records.message_dtype((), ())
    m = np.zeros(3, mdt)
    m["intended"] = t + 1_000_000_000_000
    m["published"] = m["intended"] + 1000
    m["replica"] = [0, 1, 1]
    m["received"] = t - 37_500_000_000 + 50_000
    m["end"] = m["received"] + 2_000_000
    m["free"] = [0, m["received"][1] - 10, 0]
    fr = timeline.convert_frames(frames, a)
    assert abs(fr["intended"][0] - t) <= a.fit().uncertainty_ns and fr["published"][0] - fr["intended"][0] == 5
    out = timeline.convert_messages(m, a, {0: IdentityClock(), 1: b})
    assert out["received"][0] == m["received"][0], "replica 0 is on this machine: unchanged"
    transit = out["received"][1] - out["published"][1]
    assert abs(transit - (50_000 - 1000)) <= a.fit().uncertainty_ns + b.fit().uncertainty_ns
    assert out["free"][0] == 0 and out["free"][2] == 0 and out["free"][1] != 0
    assert out["end"][1] - out["received"][1] == 2_000_000, "a duration on one host is unchanged"
    neg = timeline.negative(out, 1_000)
    assert neg["transit"]["count"] == 1 and neg["transit"]["worst_us"] < -1_000_000  # replica 0: wrong clock
    by_stream = np.zeros(2, records.FRAME_DTYPE)
    by_stream["stream"] = [0, 1]
    by_stream["intended"] = [t + 1_000_000_000_000, t - 37_500_000_000]
    both = timeline.convert_frames(by_stream, {0: a, 1: b})
    assert abs(both["intended"][0] - t) < 50_000 and abs(both["intended"][1] - t) < 50_000


def test_identity_clock():
    c = IdentityClock()
    arr = np.arange(3, dtype=np.int64)
    assert c.to_orchestrator(arr) is arr and c.to_host(7) == 7


def test_udp_probe_from_elsewhere_is_ignored(server):
    srv, key = server
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.1)
        s.sendto(os.urandom(24), ("127.0.0.1", srv.port))
        with pytest.raises(socket.timeout):
            s.recv(64)
