"""External: a broker the user runs, reached at --broker-url. We never start or stop it.

The broker's implementation and version are asked of the broker itself (a real round trip), so an
unreachable broker or wrong credentials fail here, before any stage starts.
"""
from __future__ import annotations

import brokers
from brokers.base import Endpoint
from testbed.config import RunConfig
from testbed.errors import ConfigError
from testbed.launchers.base import BrokerHandle


def launch(cfg: RunConfig) -> BrokerHandle:
    if not cfg.broker_url:
        raise ConfigError("--launcher external needs --broker-url (the address of the broker you run)")
    ep = Endpoint(cfg.broker, cfg.broker_url, cfg.broker_opt, "", "external")
    probe = brokers.get(cfg.broker)(ep)
    probe.connect(cfg.connect_timeout)
    try:
        ep.impl = probe.server_impl()
    finally:
        probe.close()
    return BrokerHandle(ep)
