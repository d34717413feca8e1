"""The simulated network (testbed/hosts/netns.py) on this machine's kernel: a bridge, namespaces and veths
made and removed without a trace, links capped by tbf, partitions that cut and heal. Root only."""
from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from testbed.hosts import netns, spec as hosts_spec, teardown
from testbed.hosts.state import existing_ids, lock, new_state

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="simulated hosts need root (namespaces, a bridge, tc)")

MBIT = 50
MESSAGE = 150_528  # 3x224x224: the default message's payload
SERIALISATION_S = MESSAGE * 8 / (MBIT * 1e6)  # 24.1 ms

#: a server for the tests, run inside a namespace: "up N" (N bytes follow; answers b"k" once all came),
#: "down N" (sends N bytes), "ping" (answers b"p")
SERVER = r"""
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 0)); s.listen(16)
print(s.getsockname()[1], flush=True)
def exact(c, n):
    got = 0
    while got < n:
        b = c.recv(min(1 << 20, n - got))
        if not b: raise EOFError
        got += len(b)
def line(c):
    out = b""
    while not out.endswith(b"\n"):
        b = c.recv(1)
        if not b: raise EOFError
        out += b
    return out.decode().split()
def serve(c):
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while True:
            cmd = line(c)
            if cmd[0] == "up": exact(c, int(cmd[1])); c.sendall(b"k")
            elif cmd[0] == "down": c.sendall(b"\0" * int(cmd[1]))
            else: c.sendall(b"p")
    except (EOFError, OSError):
        c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


@pytest.fixture(scope="module")
def network():
    spec = hosts_spec.parse({"hosts": {"a": {}, "slow": {"link_mbit": MBIT}}})
    forward = open("/proc/sys/net/ipv4/ip_forward").read()
    with lock():
        st = new_state(spec.to_dict(), "")
        netns.plan(st, spec.hosts)
        st.save()
        netns.create_bridge(st)
    servers = []
    try:
        netns.create_hosts(st)
        ports = {}
        for name in st.hosts:
            h = st.host(name)
            p = subprocess.Popen(["ip", "netns", "exec", h.netns, sys.executable, "-c", SERVER, h.address],
                                 stdout=subprocess.PIPE, text=True)
            servers.append(p)
            ports[name] = int(p.stdout.readline())
        yield st, ports, forward
    finally:
        for p in servers:
            p.kill()
            p.wait()
        with lock():
            teardown.remove(st, force=True)


def _connect(st, ports, name, timeout=2.0) -> socket.socket:
    s = socket.create_connection((st.host(name).address, ports[name]), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _exact(s, n):
    got = 0
    while got < n:
        b = s.recv(min(1 << 20, n - got))
        assert b, "closed"
        got += len(b)


def test_namespaces_on_a_private_bridge(network):
    st, ports, forward = network
    assert st.id in existing_ids()
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for name in st.hosts:
        h = st.host(name)
        assert h.netns in names
        routes = subprocess.run(["ip", "-n", h.netns, "-j", "route"], capture_output=True, text=True).stdout
        assert not any(r.get("dst") == "default" for r in json.loads(routes)), "no way off the bridge"
        lo = subprocess.run(["ip", "-n", h.netns, "-j", "link", "show", "lo"], capture_output=True, text=True).stdout
        assert "UP" in json.loads(lo)[0]["flags"]
        with _connect(st, ports, name) as s:  # from the orchestrator, over the bridge
            s.sendall(b"ping\n")
            assert s.recv(1) == b"p"
    # host to host, inside the namespaces
    a = st.host("a")
    r = subprocess.run(["ip", "netns", "exec", a.netns, sys.executable, "-c",
                        "import socket,sys; s=socket.create_connection((sys.argv[1], int(sys.argv[2])), 2); "
                        "s.sendall(b'ping\\n'); print(s.recv(1))", st.host("slow").address, str(ports["slow"])],
                       capture_output=True, text=True, timeout=10)
    assert r.stdout.strip() == "b'p'", r.stderr
    assert open("/proc/sys/net/ipv4/ip_forward").read() == forward, "IP forwarding untouched"
    ours = ipaddress.ip_network(st.subnet)
    other = [n for n in netns.used_networks() if n.prefixlen > 0 and not n.subnet_of(ours)]
    assert other and not any(n.overlaps(ours) for n in other), "the subnet is the bridge's alone"


def _one_way(st, ports, name, n=MESSAGE, tries=3) -> float:
    """The fastest of ``tries`` sends of ``n`` bytes, until the host says it has them all."""
    with _connect(st, ports, name, timeout=10) as s:
        s.sendall(b"ping\n")
        s.recv(1)  # connection warm
        best = 1e9
        for _ in range(tries):
            time.sleep(0.05)  # the bucket refills: each message starts from a full (small) bucket
            t = time.monotonic()
            s.sendall(f"up {n}\n".encode() + b"\0" * n)
            assert s.recv(1) == b"k"
            best = min(best, time.monotonic() - t)
    return best


def test_link_cap_slows_transfers_both_ways(network):
    st, ports, _ = network
    fast, slow = _one_way(st, ports, "a", tries=5), _one_way(st, ports, "slow")
    assert slow - fast >= SERIALISATION_S, (fast, slow)  # a hop rises by at least the serialisation time
    cap = MBIT * 1e6 / 8
    n = 1_500_000
    with _connect(st, ports, "slow", timeout=10) as s:
        t = time.monotonic()
        s.sendall(f"up {n}\n".encode() + b"\0" * n)
        assert s.recv(1) == b"k"
        to_host = n / (time.monotonic() - t)
        t = time.monotonic()
        s.sendall(f"down {n}\n".encode())
        _exact(s, n)
        from_host = n / (time.monotonic() - t)
    assert 0.3 * cap < to_host < 1.5 * cap, to_host / cap
    assert 0.3 * cap < from_host < 1.5 * cap, from_host / cap


def test_partition_cuts_every_connection_and_heal_restores(network):
    st, ports, _ = network
    h = st.host("a")
    s = _connect(st, ports, "a")
    s.sendall(b"ping\n")
    assert s.recv(1) == b"p"
    netns.partition(h)
    try:
        assert not netns.link_up(h)
        s.settimeout(1.0)
        s.sendall(b"ping\n")
        with pytest.raises(socket.timeout):
            s.recv(1)  # the established connection is cut
        with pytest.raises(OSError):
            _connect(st, ports, "a", timeout=1.0)  # and no new one gets through
    finally:
        netns.heal(h)
    assert netns.link_up(h)
    s.settimeout(10.0)
    t = time.monotonic()
    assert s.recv(1) == b"p", "the same connection carries on (TCP retransmits)"
    assert time.monotonic() - t < 10
    s.close()
    with _connect(st, ports, "a") as s2:
        s2.sendall(b"ping\n")
        assert s2.recv(1) == b"p"


def test_removal_leaves_nothing():
    """A network of its own, made and removed: no namespace, link, state file or id left."""
    spec = hosts_spec.parse({"hosts": {"x": {"link_mbit": 10}, "y": {}}})
    with lock():
        st = new_state(spec.to_dict(), "")
        netns.plan(st, spec.hosts)
        st.save()
        netns.create_bridge(st)
    netns.create_hosts(st)
    assert os.path.exists(f"/sys/class/net/{st.bridge}") and os.path.exists(st.path)
    with lock():
        teardown.remove(st, force=True)
    assert st.id not in existing_ids()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert f"tbh{st.id}" not in listed and f"tbh{st.id}" not in links and not os.path.exists(st.path)
