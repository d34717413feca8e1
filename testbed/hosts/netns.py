"""The simulated network: a private bridge, and per host a network namespace on it through a veth pair.

    orchestrator (root namespace) -- bridge tbhXXXXbr, .1 of a free /24
        -- veth tbhXXXXr<i> == tbhXXXXn<i> -- namespace tbhXXXX-<host>, .10+i

The subnet is one that no interface or route of the machine touches (checked when it is picked), the
namespaces have loopback up and no default route, and IP forwarding is left as it is: traffic stays on the
bridge. ``link_mbit`` is a token bucket (``tc ... tbf``) on both ends of the host's veth: the bridge side
shapes what goes to the host, the namespace side what comes from it. ``partition``/``heal`` set the
host's veth down/up: every connection to and from the host is cut (and resumes: TCP retransmits) —
a real partition. No netem here (this kernel has none; delay and jitter go through the proxy).
"""
from __future__ import annotations

import ipaddress
import json
import os
import random
import shutil
import subprocess

from testbed.errors import ConfigError
from testbed.hosts.errors import HostError
from testbed.hosts.state import HostState, State

#: the /24 subnets tried for the bridge (a random one of those free on this machine)
CANDIDATES = ipaddress.ip_network("10.213.0.0/16")
FIRST_HOST = 10
#: tbf: the queue in front of the link holds this much time at the link's rate (no drops for a few
#: TCP flows; HOSTS.md: checked with 400ms here); the bucket is small so a message pays its
#: serialisation time: about half a millisecond of traffic, at least three full frames
TBF_LATENCY = "400ms"
TBF_MIN_BURST = 3 * 1514


def require_root() -> None:
    """Simulated hosts need root (namespaces, a bridge, tc): one line otherwise."""
    if os.geteuid() != 0:
        raise ConfigError("simulated hosts need root (network and time namespaces, a bridge, tc): run as root, "
                          "or give the address of an existing Ray cluster (ray: HEAD:PORT, --ray-address)")
    missing = [t for t in ("ip", "tc") if shutil.which(t) is None]
    if missing:
        raise ConfigError(f"simulated hosts need {' and '.join(missing)} (apt-get install iproute2)")


def ip(*args: str, check: bool = True, timeout: float = 10.0) -> subprocess.CompletedProcess:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and r.returncode != 0:
        raise HostError(f"ip {' '.join(args)} failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")
    return r


def tc(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(["tc", *args], capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    if check and r.returncode != 0:
        raise HostError(f"tc {' '.join(args)} failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")
    return r


def used_networks() -> list:
    """Every network an interface address or a route of this machine is on (default routes aside)."""
    nets = []
    try:
        for link in json.loads(ip("-j", "addr").stdout or "[]"):
            for a in link.get("addr_info", []):
                if a.get("family") == "inet":
                    nets.append(ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}").network)
        for r in json.loads(ip("-j", "-4", "route", "show", "table", "all").stdout or "[]"):
            dst = r.get("dst", "")
            if dst and dst != "default":
                nets.append(ipaddress.ip_network(dst, strict=False))
    except (ValueError, KeyError) as exc:
        raise HostError(f"cannot read this machine's addresses and routes: {exc}") from None
    return nets


def free_subnet() -> ipaddress.IPv4Network:
    """A /24 of ``CANDIDATES`` that no interface or route of this machine overlaps."""
    used = used_networks()
    subnets = list(CANDIDATES.subnets(new_prefix=24))
    random.shuffle(subnets)
    for net in subnets:
        if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
            return net
    raise HostError(f"no free /24 in {CANDIDATES} for the simulated hosts' bridge")


def tbf_args(mbit: float) -> list[str]:
    rate_bytes = mbit * 1e6 / 8
    burst = max(TBF_MIN_BURST, int(rate_bytes * 0.0005))
    return ["tbf", "rate", f"{mbit:g}mbit", "burst", str(burst), "latency", TBF_LATENCY]


def plan(state: State, spec_hosts: dict) -> None:
    """Fill ``state`` with the subnet, the bridge and each host's names and address (nothing is made)."""
    names = state.names
    net = free_subnet()
    addrs = list(net.hosts())
    state.subnet = str(net)
    state.bridge = names.bridge
    state.bridge_address = str(addrs[0])
    for i, (name, h) in enumerate(spec_hosts.items()):
        state.hosts[name] = HostState(name, i, names.netns(name), str(addrs[FIRST_HOST - 1 + i]),
                                      names.veth_bridge_side(i), names.veth_host_side(i), h.cpus,
                                      h.clock_offset_ns, h.link_mbit).__dict__


def create_bridge(state: State) -> None:
    """The bridge with the orchestrator's address (from ``plan``): from now on the subnet is taken."""
    prefix = ipaddress.ip_network(state.subnet).prefixlen
    ip("link", "add", state.bridge, "type", "bridge", "forward_delay", "0", "stp_state", "0")
    ip("addr", "add", f"{state.bridge_address}/{prefix}", "dev", state.bridge)
    ip("link", "set", state.bridge, "up")


def create_hosts(state: State) -> None:
    """Every host's namespace, veth pair on the bridge, address and link shaping (from ``plan``)."""
    prefix = ipaddress.ip_network(state.subnet).prefixlen
    for name in state.hosts:
        h = state.host(name)
        ip("netns", "add", h.netns)
        ip("link", "add", h.veth_bridge_side, "type", "veth", "peer", "name", h.veth_host_side)
        ip("link", "set", h.veth_host_side, "netns", h.netns)
        ip("link", "set", h.veth_bridge_side, "master", state.bridge, "up")
        ip("-n", h.netns, "link", "set", "lo", "up")
        ip("-n", h.netns, "addr", "add", f"{h.address}/{prefix}", "dev", h.veth_host_side)
        ip("-n", h.netns, "link", "set", h.veth_host_side, "up")
        if h.link_mbit:
            shape(h, h.link_mbit)


def shape(h: HostState, mbit: float) -> None:
    """A token bucket of ``mbit`` on both ends of the host's veth."""
    tc("qdisc", "replace", "dev", h.veth_bridge_side, "root", *tbf_args(mbit))
    r = subprocess.run(["ip", "netns", "exec", h.netns, "tc", "qdisc", "replace", "dev", h.veth_host_side, "root",
                        *tbf_args(mbit)], capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise HostError(f"tc in {h.netns} failed: {r.stderr.strip()}")


def partition(h: HostState) -> None:
    """Cut the host off: its veth down (both ends lose the link: every connection to and from it stops)."""
    ip("link", "set", h.veth_bridge_side, "down")


def heal(h: HostState) -> None:
    """The host's link up again (connections resume; the bridge forwards at once: no STP, no delay)."""
    ip("link", "set", h.veth_bridge_side, "up")


def link_up(h: HostState) -> bool:
    r = ip("-j", "link", "show", h.veth_bridge_side, check=False)
    try:
        return "UP" in json.loads(r.stdout)[0].get("flags", [])
    except (ValueError, IndexError):
        return False


def netns_pids(netns: str) -> list[int]:
    r = ip("netns", "pids", netns, check=False)
    return [int(p) for p in r.stdout.split() if p.isdigit()]


def remove_netns(netns: str) -> None:
    """Delete the namespace (its veth end goes with it, and so does the pair)."""
    if os.path.exists(os.path.join("/run/netns", netns)):
        ip("netns", "del", netns, check=False)


def remove_link(name: str) -> None:
    if os.path.exists(os.path.join("/sys/class/net", name)):
        ip("link", "del", name, check=False)
