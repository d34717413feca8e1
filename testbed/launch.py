"""Launchers: how the broker of a run comes to exist, and goes away again.

``launch(cfg, run_id, run_dir)`` returns a ``BrokerHandle`` (a context manager): its ``endpoint`` is
what every stage connects to; ``sample()`` gives the broker process's CPU% and RSS once a second;
``stop()`` removes everything the launcher started (also on errors and Ctrl-C).

- embedded (inproc, zeromq): nothing to start; zeromq gets a free 127.0.0.1 port.
- external: a broker the user runs, at ``--broker-url``; never started or stopped by us.
"""
from __future__ import annotations

import socket
import sys

from brokers.base import Endpoint
from testbed.config import RunConfig
from testbed.errors import ConfigError

EMBEDDED = ("inproc", "zeromq")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BrokerHandle:
    def __init__(self, endpoint: Endpoint):
        self.endpoint = endpoint

    def sample(self) -> dict:
        """Broker-side resource figures for timeseries.csv (empty when not observable)."""
        return {}

    def stop(self) -> None:
        pass

    def __enter__(self) -> "BrokerHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _embedded(cfg: RunConfig, run_id: str) -> BrokerHandle:
    if cfg.broker == "inproc":
        impl = f"queue.SimpleQueue (python {sys.version.split()[0]})"
        return BrokerHandle(Endpoint("inproc", f"inproc://{run_id}", cfg.broker_opt, impl, "embedded"))
    import zmq
    url = cfg.broker_url or f"tcp://127.0.0.1:{free_port()}"
    if not (url.startswith("tcp://") or url.startswith("ipc://")):
        raise ConfigError(f"--broker-url {url!r} is not allowed for zeromq: use tcp://HOST:PORT or ipc://PATH")
    impl = f"pyzmq {zmq.__version__} (libzmq {zmq.zmq_version()})"
    launcher = "external" if cfg.broker_url else "embedded"
    return BrokerHandle(Endpoint("zeromq", url, cfg.broker_opt, impl, launcher))


def launch(cfg: RunConfig, run_id: str, run_dir: str) -> BrokerHandle:
    if cfg.broker in EMBEDDED:
        return _embedded(cfg, run_id)
    raise ConfigError(f"--broker {cfg.broker!r}: no launcher for it yet")
