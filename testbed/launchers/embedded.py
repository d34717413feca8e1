"""Embedded brokers: nothing to start. inproc is a queue in this process; zeromq binds a free port."""
from __future__ import annotations

import sys

from brokers.base import Endpoint
from testbed.config import RunConfig
from testbed.errors import ConfigError
from testbed.launchers.base import BrokerHandle, free_port


def launch(cfg: RunConfig, run_id: str) -> BrokerHandle:
    if cfg.broker != "zeromq":  # the in-process queue (or a test's variant of it)
        impl = f"queue.SimpleQueue (python {sys.version.split()[0]})"
        return BrokerHandle(Endpoint(cfg.broker, f"inproc://{run_id}", cfg.broker_opt, impl, "embedded"))
    import zmq
    url = cfg.broker_url or f"tcp://127.0.0.1:{free_port()}"
    if not (url.startswith("tcp://") or url.startswith("ipc://")):
        raise ConfigError(f"--broker-url {url!r} is not allowed for zeromq: use tcp://HOST:PORT or ipc://PATH")
    impl = f"pyzmq {zmq.__version__} (libzmq {zmq.zmq_version()})"
    return BrokerHandle(Endpoint("zeromq", url, cfg.broker_opt, impl, "external" if cfg.broker_url else "embedded"))
