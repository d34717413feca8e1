"""A userspace TCP proxy in front of the broker, for network faults: a private Toxiproxy server.

This kernel has no netem, so the stages of a run with a network fault reach the broker through
Toxiproxy (``toxiproxy_bin.py`` finds or builds its server). ``NetworkFaults(upstream)`` starts a
private server (control API on a free 127.0.0.1 port, its own process group and temporary folder
``testbed-toxiproxy-*``, so ``python -m testbed.brokers cleanup`` finds an orphan), creates one proxy
``127.0.0.1:<free> -> upstream`` and turns schedule faults into toxics through the HTTP API
(``http.client``; the Python clients on PyPI are unmaintained). ``stop()`` ends the server's process
group (also at interpreter exit). Runs without a network fault never start it.

How faults map to toxics (on both directions, so the broker's replies and deliveries are hit too):

    net-delay / net-jitter   ``latency`` {latency, jitter} in whole ms (uniform in latency +/- jitter)
    net-bandwidth            ``bandwidth`` {rate} in kB/s (1000 bytes)
    net-blackhole            ``latency`` of a day: bytes are held, not lost, and flow again when the
                             fault ends, as TCP retransmits through a real outage. ``hold=False`` uses
                             ``timeout`` {timeout: 0} instead: the bytes are dropped and, when the
                             fault ends, Toxiproxy closes the connections it starved
    net-reset                no toxic: the proxy is disabled and enabled again, which closes every
                             client and upstream connection at once; ``reset_peer`` is there as a toxic

Later concern, not handled here: a broker that advertises its own address to clients (in the metadata
a client fetches after bootstrap, or a list of cluster URLs) lets them bypass the proxy once connected.
Such a broker must advertise the proxy's address (a listener per run), or the proxy must front each
address the broker hands out.
"""
from __future__ import annotations

import atexit
import http.client
import json
import os
import urllib.parse

from testbed.errors import BrokerError
from testbed.faults import toxiproxy_bin
from testbed.faults.schedule import Fault
from testbed.launchers.base import LocalProcess, free_port, private_tmp
from testbed.launchers.cleanup import write_owner

START_TIMEOUT_S = 10.0
API_TIMEOUT_S = 5.0
HOLD_MS = 24 * 3600 * 1000
STREAMS = ("upstream", "downstream")


class ToxiproxyServer:
    """A private Toxiproxy server process and a client for its control API."""

    def __init__(self, binary: str | None = None, log_path: str | None = None, attempts: int = 3):
        binary = binary or toxiproxy_bin.require()
        for attempt in range(attempts):  # the free port may be taken before the server binds it
            self._died_at_start = False
            try:
                self._start(binary, log_path)
                return
            except BrokerError:
                if not self._died_at_start or attempt == attempts - 1:
                    raise

    def _start(self, binary: str, log_path: str | None) -> None:
        self.tmp_dir = private_tmp("toxiproxy")
        write_owner(self.tmp_dir)
        self.port = free_port()
        self.log_path = log_path or os.path.join(self.tmp_dir, "toxiproxy.log")
        argv = [binary, "-host", "127.0.0.1", "-port", str(self.port)]
        try:
            self.process = LocalProcess("toxiproxy-server", argv, self.log_path, cwd=self.tmp_dir,
                                        tmp_dir=self.tmp_dir)
        except (FileNotFoundError, PermissionError) as exc:
            raise BrokerError(f"the Toxiproxy server {binary!r} could not be started: {exc}") from None
        atexit.register(self.stop)
        try:
            self.process.wait_ready(lambda: self.request("GET", "/version"), START_TIMEOUT_S,
                                    f" on 127.0.0.1:{self.port} (log: {self.log_path})")
        except BaseException:
            self._died_at_start = not self.process.alive()
            self.stop()
            raise

    @property
    def pid(self) -> int | None:
        return self.process.proc.pid if self.process.proc is not None else None

    def alive(self) -> bool:
        return self.process.alive()

    def request(self, method: str, path: str, body: dict | None = None):
        """One API call; the decoded JSON reply (or the text, or None). Errors name the call."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=API_TIMEOUT_S)
        try:
            payload = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"} if payload is not None else {}
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
            data = resp.read().decode("utf-8", "replace")
        finally:
            conn.close()
        if resp.status >= 400:
            try:
                detail = json.loads(data).get("error", data)
            except ValueError:
                detail = data.strip()
            raise BrokerError(f"toxiproxy {method} {path} failed ({resp.status}): {detail}")
        if not data:
            return None
        try:
            return json.loads(data)
        except ValueError:
            return data.strip()

    def create_proxy(self, name: str, upstream: str, listen: str = "127.0.0.1:0") -> "Proxy":
        """A proxy ``listen -> upstream`` (``host:port``); port 0 lets the server pick a free one."""
        info = self.request("POST", "/proxies", {"name": name, "listen": listen, "upstream": upstream,
                                                 "enabled": True})
        return Proxy(self, name, upstream, info["listen"])

    def stop(self) -> None:
        """End the server's process group and remove its folder (safe to call twice)."""
        self.process.stop(timeout_s=3.0)


class Proxy:
    """One proxy of a ``ToxiproxyServer``: where clients connect instead of the broker."""

    def __init__(self, server: ToxiproxyServer, name: str, upstream: str, listen: str):
        self.server = server
        self.name = name
        self.upstream = upstream
        self.listen = listen
        self._path = f"/proxies/{urllib.parse.quote(name, safe='')}"
        self._count = 0

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    def add_toxic(self, type_: str, attributes: dict, stream: str = "downstream", name: str | None = None,
                  toxicity: float = 1.0) -> str:
        """Add one toxic (``latency``, ``bandwidth``, ``timeout``, ``reset_peer``, ...); returns its name."""
        if stream not in STREAMS:
            raise ValueError(f"stream {stream!r}: use one of {', '.join(STREAMS)}")
        self._count += 1
        name = name or f"{type_}-{stream}-{self._count}"
        self.server.request("POST", f"{self._path}/toxics", {"name": name, "type": type_, "stream": stream,
                                                             "toxicity": toxicity, "attributes": attributes})
        return name

    def remove_toxic(self, name: str) -> None:
        self.server.request("DELETE", f"{self._path}/toxics/{urllib.parse.quote(name, safe='')}")

    def toxics(self) -> list[dict]:
        return self.server.request("GET", f"{self._path}/toxics") or []

    def clear(self) -> None:
        """Remove every toxic of this proxy."""
        for t in self.toxics():
            self.remove_toxic(t["name"])

    def set_enabled(self, enabled: bool) -> None:
        """Disabled, the proxy closes every connection and refuses new ones."""
        self.server.request("POST", self._path, {"enabled": bool(enabled)})

    def reset_connections(self) -> None:
        """Drop every open connection (both sides); new connections work again at once."""
        self.set_enabled(False)
        self.set_enabled(True)

    def apply(self, fault: Fault, hold: bool = True) -> list[str]:
        """Start ``fault`` (a network fault); returns the toxics to pass to ``remove`` when it ends."""
        if fault.kind == "net-reset":
            self.reset_connections()
            return []
        return [self.add_toxic(t, attrs, stream) for t, stream, attrs in toxics_for(fault, hold)]

    def remove(self, names: list[str]) -> None:
        for name in names:
            self.remove_toxic(name)

    def address_for(self, url: str) -> str:
        """``url`` (``scheme://[user@]host:port/...`` or ``host:port``) with the proxy's address instead."""
        return rewrite_address(url, self.listen)


def toxics_for(fault: Fault, hold: bool = True) -> list[tuple[str, str, dict]]:
    """(type, stream, attributes) of the toxics that make ``fault``; none for net-reset."""
    if fault.kind in ("net-delay", "net-jitter"):
        attrs = {"latency": fault.latency_ms, "jitter": fault.jitter_ms}
        return [("latency", s, attrs) for s in STREAMS]
    if fault.kind == "net-bandwidth":
        return [("bandwidth", s, {"rate": max(1, round(fault.rate_bps / 8 / 1000))}) for s in STREAMS]
    if fault.kind == "net-blackhole":
        if hold:
            return [("latency", s, {"latency": HOLD_MS, "jitter": 0}) for s in STREAMS]
        return [("timeout", s, {"timeout": 0}) for s in STREAMS]
    if fault.kind == "net-reset":
        return []
    raise ValueError(f"{fault} is not a network fault")


def split_address(url: str) -> tuple[str, int]:
    """(host, port) of ``scheme://[user@]host:port/...`` or ``host:port``."""
    netloc = urllib.parse.urlsplit(url).netloc if "://" in url else url
    hostport = netloc.rsplit("@", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise BrokerError(f"broker address {url!r} has no host:port to put a proxy in front of")
    return host.strip("[]"), int(port)


def rewrite_address(url: str, listen: str) -> str:
    split_address(url)  # the same check
    if "://" not in url:
        return listen
    parts = urllib.parse.urlsplit(url)
    user = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urllib.parse.urlunsplit(parts._replace(netloc=user + listen))


class NetworkFaults:
    """A private Toxiproxy server with one proxy in front of ``upstream`` (a URL or ``host:port``).

    Stages connect to ``address_for(broker_url)``; ``apply(fault)`` starts a network fault and
    ``end(fault)`` ends it. A context manager; ``stop()`` is safe to call twice."""

    def __init__(self, upstream: str, log_path: str | None = None, binary: str | None = None,
                 hold: bool = True, listen_host: str = "127.0.0.1"):
        host, port = split_address(upstream)
        self.hold = hold
        self.server = ToxiproxyServer(binary, log_path)
        try:  # listen_host: the orchestrator's address on simulated hosts' network, where stages on hosts reach it
            self.proxy = self.server.create_proxy("broker", f"{host}:{port}", listen=f"{listen_host}:0")
        except BaseException:
            self.server.stop()
            raise
        self._active: dict[Fault, list[str]] = {}

    @property
    def listen(self) -> str:
        return self.proxy.listen

    def address_for(self, url: str) -> str:
        return self.proxy.address_for(url)

    def apply(self, fault: Fault) -> None:
        self._active[fault] = self.proxy.apply(fault, self.hold)

    def end(self, fault: Fault) -> None:
        self.proxy.remove(self._active.pop(fault, []))

    def info(self) -> dict:
        """For run.json: the proxy in the path and its server."""
        return {"proxy": "toxiproxy", "version": toxiproxy_bin.VERSION, "listen": self.proxy.listen,
                "upstream": self.proxy.upstream, "pid": self.server.pid}

    def stop(self) -> None:
        self._active.clear()
        self.server.stop()

    def __enter__(self) -> "NetworkFaults":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
