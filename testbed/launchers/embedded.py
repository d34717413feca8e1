"""Embedded transports: nothing to start. The spec's ``Embedded`` says what a run's endpoint is (an
in-process queue named after the run, or a free 127.0.0.1 port stage A binds); a ``--broker-url`` is
taken where the spec lists its schemes (the launcher is then called external)."""
from __future__ import annotations

from brokers.base import Endpoint
from testbed.config import RunConfig
from testbed.errors import ConfigError
from testbed.launchers.base import BrokerHandle, free_port


def launch(cfg: RunConfig, run_id: str, spec, host: str = "127.0.0.1", stream_hosts=None,
           stream_nodes=None) -> BrokerHandle:
    """``host``: the address stage A binds (a simulated host's own address when stage A is placed on one).
    A spec whose endpoint stage A binds per camera stream (``per_stream``) gets one URL per stream,
    comma-separated: stream s at ``stream_hosts[s]`` (default ``host`` for every stream). Over hosts,
    ``stream_nodes`` (a launchers ``Node`` per stream: testbed/launchers/nodes.py) gives each stream's
    address and picks its port there (a host's address cannot be bound here)."""
    emb = spec.embedded
    if emb is None:
        raise ConfigError(f"broker {spec.name!r} needs no server but declares no embedded endpoint")
    n = cfg.streams if emb.per_stream else 1
    if cfg.broker_url and emb.url_schemes:
        urls = [u.strip() for u in cfg.broker_url.split(",")] if emb.per_stream else [cfg.broker_url]
        for u in urls:
            if not u.startswith(emb.url_schemes):
                raise ConfigError(f"--broker-url {cfg.broker_url!r} is not allowed for {spec.name}: "
                                  f"use {spec.url_form or ' or '.join(emb.url_schemes)}")
        if len(urls) != n:
            raise ConfigError(f"--broker-url {cfg.broker_url!r} is not allowed for {spec.name} with --streams {n}: "
                              f"stage A binds one endpoint per stream, so give {n}, comma-separated")
        url, launcher = ",".join(urls), "external"
    elif stream_nodes:
        url = ",".join(emb.url.format(run_id=run_id, host=nd.address,
                                      port=nd.free_ports(("port",))["port"] if "{port}" in emb.url else 0)
                       for nd in list(stream_nodes)[:n])
        launcher = "embedded"
    else:
        hosts = list(stream_hosts) if stream_hosts else [host] * n
        url = ",".join(emb.url.format(run_id=run_id, host=h, port=free_port(h) if "{port}" in emb.url else 0)
                       for h in hosts[:n])
        launcher = "embedded"
    return BrokerHandle(Endpoint(cfg.broker, url, cfg.broker_opt, emb.impl(), launcher))
