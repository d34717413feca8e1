"""Embedded transports: nothing to start. The spec's ``Embedded`` says what a run's endpoint is (an
in-process queue named after the run, or a free 127.0.0.1 port stage A binds); a ``--broker-url`` is
taken where the spec lists its schemes (the launcher is then called external)."""
from __future__ import annotations

from brokers.base import Endpoint
from testbed.config import RunConfig
from testbed.errors import ConfigError
from testbed.launchers.base import BrokerHandle, free_port


def launch(cfg: RunConfig, run_id: str, spec, host: str = "127.0.0.1") -> BrokerHandle:
    """``host``: the address stage A binds (a simulated host's own address when stage A is placed on one)."""
    emb = spec.embedded
    if emb is None:
        raise ConfigError(f"broker {spec.name!r} needs no server but declares no embedded endpoint")
    if cfg.broker_url and emb.url_schemes:
        if not cfg.broker_url.startswith(emb.url_schemes):
            raise ConfigError(f"--broker-url {cfg.broker_url!r} is not allowed for {spec.name}: "
                              f"use {spec.url_form or ' or '.join(emb.url_schemes)}")
        url, launcher = cfg.broker_url, "external"
    else:
        url = emb.url.format(run_id=run_id, host=host, port=free_port() if "{port}" in emb.url else 0)
        launcher = "embedded"
    return BrokerHandle(Endpoint(cfg.broker, url, cfg.broker_opt, emb.impl(), launcher))
