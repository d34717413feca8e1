"""A run's ``--hosts`` / ``--ray-address`` / ``--place`` checked before anything starts (config.validate
calls ``check_run``): one line each, naming the value and what is allowed.

    the hosts file          read and checked (spec.py); simulated hosts need root, ip and tc
    Ray                     installed (the ``hosts`` extra)
    --place                 every role known and every host in the file (an existing cluster's hosts are
                            checked when the run connects to it: testbed/hosts/runs.py)
    counts                  no more stage_a hosts than streams, stage_b hosts than replicas, broker hosts
                            than broker nodes (a host named that nothing would run on is a mistake)
    the broker              placed only where there is a broker process the testbed starts (not an
                            embedded transport, not an external broker)
    the stages              processes (an in-process transport's stages are threads of the orchestrator)

``fault_hosts(cfg)``: the simulated hosts a ``partition-host`` fault may name (None: the run has none).
Nothing here imports Ray or starts anything.
"""
from __future__ import annotations

import importlib.util

import brokers
from testbed.errors import ConfigError
from testbed.hosts.spec import HostsSpec, check_place, load


def _spec(cfg) -> HostsSpec | None:
    return load(cfg.hosts) if cfg.hosts else None


def check_run(cfg) -> HostsSpec | None:
    """Every check of the module docstring; the hosts file's spec (None with --ray-address alone)."""
    if not (cfg.hosts or cfg.ray_address):
        return None
    flag = f"--hosts {cfg.hosts}" if cfg.hosts else f"--ray-address {cfg.ray_address}"
    spec = _spec(cfg)
    if cfg.ray_address:
        from testbed.hosts.spec import ADDRESS
        if not ADDRESS.match(cfg.ray_address):
            raise ConfigError(f"--ray-address {cfg.ray_address!r} is not allowed: write HEAD:PORT "
                              "(e.g. 10.0.0.5:6379)")
    if importlib.util.find_spec("ray") is None:
        raise ConfigError(f"{flag} needs Ray: pip install -e '.[hosts]' (ray==2.60.0)")
    if spec is not None and spec.simulated:
        from testbed.hosts.netns import require_root
        require_root()
    bspec = brokers.spec(cfg.broker)
    if bspec.capabilities.in_process:
        raise ConfigError(f"{flag} is not possible with --broker {cfg.broker}: its stages are threads of the "
                          "orchestrator, not processes that can run on a host")
    place = cfg.place or {}
    if spec is not None:
        check_place(place, spec)
    else:
        check_place(place, HostsSpec(cfg.ray_address, {h: None for hs in place.values() for h in hs}))
    a, b, br = place.get("stage_a", []), place.get("stage_b", []), place.get("broker", [])
    if len(a) > cfg.streams:
        raise ConfigError(f"--place stage_a={','.join(a)} names {len(a)} hosts for {cfg.streams} camera "
                          f"stream{'s' if cfg.streams != 1 else ''}: each stream runs on one host (add --streams "
                          f"{len(a)}, or name fewer hosts)")
    if len(b) > cfg.replicas:
        raise ConfigError(f"--place stage_b={','.join(b)} names {len(b)} hosts for {cfg.replicas} stage B "
                          f"replica{'s' if cfg.replicas != 1 else ''}: each replica runs on one host (add "
                          f"--replicas {len(b)}, or name fewer hosts)")
    if br:
        if not bspec.needs_server:
            raise ConfigError(f"--place broker={','.join(br)} is not possible with --broker {cfg.broker}: it has "
                              "no broker process (stage A binds the transport): place stage_a instead")
        if cfg.launcher == "external":
            raise ConfigError(f"--place broker={','.join(br)} is not possible with an external broker "
                              "(--broker-url): the testbed starts no broker to place")
        if len(br) > cfg.broker_nodes:
            raise ConfigError(f"--place broker={','.join(br)} names {len(br)} hosts for a broker of "
                              f"{cfg.broker_nodes} node{'s' if cfg.broker_nodes != 1 else ''}: add --broker-nodes "
                              f"{len(br)} for a cluster with a node per host, or name one host")
    return spec


def fault_hosts(cfg) -> list[str] | None:
    """The names of the run's simulated hosts (``partition-host`` may cut them), or None."""
    if not cfg.hosts:
        return None
    spec = _spec(cfg)
    return spec.names if spec.simulated else None
