"""The network-fault proxy against a real private redis-server: it passes traffic with little added
latency, its toxics delay, throttle, hold and drop it, and nothing of it is left after stop().

These tests need the Toxiproxy server that `make setup` builds with Go (scripts/setup.d/70-toxiproxy.sh);
without it they fail with a line saying so."""
import os
import socket
import statistics
import subprocess
import time

import pytest

from testbed.errors import BrokerError
from testbed.faults import parse, toxiproxy_bin
from testbed.faults.proxy import NetworkFaults, ToxiproxyServer, rewrite_address, split_address
from testbed.launchers.base import free_port

PONG = b"+PONG\r\n"


@pytest.fixture(scope="module")
def redis_port():
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                             "--appendonly", "no", "--unixsocket", ""], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 10
    while True:
        try:
            with connect(port) as s:
                assert ping(s) > 0
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("redis-server did not start (Debian package redis-server)")
            time.sleep(0.05)
    yield port
    proc.terminate()
    proc.wait(5)


@pytest.fixture(scope="module")
def binary():
    try:
        return toxiproxy_bin.require()
    except BrokerError as exc:
        pytest.fail(str(exc))


@pytest.fixture
def net(redis_port, binary):
    with NetworkFaults(f"redis://127.0.0.1:{redis_port}/0", binary=binary) as nf:
        yield nf


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def ping(s: socket.socket) -> int:
    """One PING round trip in nanoseconds."""
    t0 = time.monotonic_ns()
    s.sendall(b"PING\r\n")
    got = b""
    while len(got) < len(PONG):
        chunk = s.recv(64)
        if not chunk:
            raise ConnectionResetError("closed")
        got += chunk
    assert got == PONG
    return time.monotonic_ns() - t0


def p50_ms(port: int, n: int = 200) -> float:
    with connect(port) as s:
        for _ in range(10):
            ping(s)
        return statistics.median(ping(s) for _ in range(n)) / 1e6


def test_passes_traffic_with_small_added_latency(net, redis_port):
    direct, proxied = p50_ms(redis_port), p50_ms(net.proxy.port)
    print(f"\nPING p50 over 200: direct {direct:.3f} ms, through toxiproxy {proxied:.3f} ms "
          f"(added {proxied - direct:.3f} ms)")
    assert proxied < direct + 20.0  # loose: a shared machine; the figure itself is for the report
    assert net.proxy.toxics() == []


def test_latency_toxic_delays_and_removing_it_restores(net):
    with connect(net.proxy.port) as s:
        base = ping(s)
        one_way = net.proxy.add_toxic("latency", {"latency": 50, "jitter": 0}, stream="downstream")
        assert ping(s) >= 50e6
        net.proxy.remove_toxic(one_way)
        fault = parse("net-delay@1s:1s:50ms")
        net.apply(fault)  # both directions: a round trip grows by 2 x 50 ms
        assert {t["stream"] for t in net.proxy.toxics()} == {"upstream", "downstream"}
        assert ping(s) >= 100e6
        net.end(fault)
        assert net.proxy.toxics() == []
        assert min(ping(s) for _ in range(5)) < max(base, 1e6) + 40e6


def test_jitter_spreads_the_delay(net):
    fault = parse("net-jitter@1s:1s:20ms:20ms")
    with connect(net.proxy.port) as s:
        net.apply(fault)
        times = [ping(s) / 1e6 for _ in range(30)]
        net.end(fault)
    assert max(times) - min(times) > 10.0, times


def test_bandwidth_limits_the_rate(net):
    value = b"x" * 250_000
    command = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n%s\r\n" % (len(value), value)
    fault = parse("net-bandwidth@1s:1s:4mbit")  # 500 kB/s
    with connect(net.proxy.port) as s:
        net.apply(fault)
        t0 = time.monotonic_ns()
        s.sendall(command)
        assert s.recv(16) == b"+OK\r\n"
        elapsed = (time.monotonic_ns() - t0) / 1e9
        net.end(fault)
    assert elapsed >= 0.4, elapsed


def test_blackhole_holds_bytes_until_it_ends(net):
    fault = parse("net-blackhole@1s:1s")
    with connect(net.proxy.port) as s:
        ping(s)
        net.apply(fault)
        s.sendall(b"PING\r\n")
        s.settimeout(0.5)
        with pytest.raises(socket.timeout):
            s.recv(64)
        net.end(fault)
        s.settimeout(5.0)
        assert s.recv(64) == PONG  # held, not lost
        ping(s)


def test_blackhole_drop_mode_loses_bytes_and_closes(redis_port, binary):
    fault = parse("net-blackhole@1s:1s")
    with NetworkFaults(f"127.0.0.1:{redis_port}", binary=binary, hold=False) as nf, connect(nf.proxy.port) as s:
        nf.apply(fault)
        s.sendall(b"PING\r\n")
        s.settimeout(0.5)
        with pytest.raises(socket.timeout):
            s.recv(64)
        nf.end(fault)  # the starved connection is closed, its PING never answered
        s.settimeout(5.0)
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            ping(s)
        with connect(nf.proxy.port) as fresh:
            ping(fresh)


def test_reset_peer_toxic_drops_the_connection(net):
    with connect(net.proxy.port) as s:
        ping(s)
        name = net.proxy.add_toxic("reset_peer", {"timeout": 0}, stream="upstream")
        with pytest.raises((ConnectionResetError, BrokenPipeError, AssertionError)):
            ping(s)
        net.proxy.remove_toxic(name)
    with connect(net.proxy.port) as s:
        ping(s)


def test_net_reset_drops_every_connection(net):
    a, b = connect(net.proxy.port), connect(net.proxy.port)
    try:
        ping(a), ping(b)
        net.apply(parse("net-reset@1s"))
        for s in (a, b):
            with pytest.raises((ConnectionResetError, BrokenPipeError)):
                ping(s)
    finally:
        a.close(), b.close()
    with connect(net.proxy.port) as s:
        ping(s)


def test_stop_leaves_nothing(redis_port, binary):
    nf = NetworkFaults(f"redis://127.0.0.1:{redis_port}/0", binary=binary)
    pid, api, listen, tmp = nf.server.pid, nf.server.port, nf.proxy.port, nf.server.tmp_dir
    assert os.path.isdir(tmp) and nf.server.alive()
    assert nf.info()["upstream"] == f"127.0.0.1:{redis_port}"
    nf.stop()
    nf.stop()  # twice is fine
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    assert not os.path.exists(tmp)
    for port in (api, listen):
        with pytest.raises(OSError):
            connect(port, timeout=1.0)


def test_missing_binary_is_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setenv(toxiproxy_bin.ENV, str(tmp_path / "nope"))
    with pytest.raises(BrokerError, match="TESTBED_TOXIPROXY=.*nope.* is not an executable"):
        ToxiproxyServer()
    monkeypatch.delenv(toxiproxy_bin.ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(BrokerError, match="not built .*make setup"):
        ToxiproxyServer()


def test_addresses():
    assert split_address("redis://127.0.0.1:6379/0") == ("127.0.0.1", 6379)
    assert split_address("amqp://guest:guest@127.0.0.1:5672/%2F") == ("127.0.0.1", 5672)
    assert split_address("127.0.0.1:9092") == ("127.0.0.1", 9092)
    assert rewrite_address("amqp://guest:guest@127.0.0.1:5672/%2F", "127.0.0.1:40000") == \
        "amqp://guest:guest@127.0.0.1:40000/%2F"
    assert rewrite_address("127.0.0.1:9092", "127.0.0.1:40000") == "127.0.0.1:40000"
    with pytest.raises(BrokerError, match="'redis://localhost' has no host:port"):
        split_address("redis://localhost")
