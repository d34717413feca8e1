"""Launchers: how the broker of a run comes to exist, and goes away again.

``launch(cfg, run_id, run_dir)`` returns a ``BrokerHandle`` (a context manager): its ``endpoint`` is
what every stage connects to; ``sample()`` gives the broker's CPU% and RSS once a second; ``stop()``
removes everything the launcher started (also on errors and Ctrl-C). Every launcher reads the broker's
spec (brokers/<name>/spec.py); none names a broker.

    embedded   a spec with no server (capability needs_server false): nothing to start
    local      the recipe as private processes on free 127.0.0.1 ports in a temporary folder (local.py)
    docker     the same recipe in a container through the docker SDK (docker.py)
    external   a broker the user runs, at --broker-url; never started or stopped by us (external.py)
    cluster    --broker-nodes N > 1: the broker's cluster recipe as N nodes, local or docker (cluster.py)
    auto       docker when an engine answers, else local

Shared: base.py (handle, processes, ports, readiness), limits.py (--broker-cpus/--broker-memory),
cleanup.py (what killed runs left; swept at the start of every launch), lifeline.py + watchdog.py
(everything started dies with the run, even a SIGKILLed one), engine.py (the Docker engine), images.py
(the image per broker).
"""
from __future__ import annotations

import brokers
from testbed.config import RunConfig
from testbed.launchers.base import BrokerHandle, free_port  # noqa: F401 (re-exported)


def resolve_launcher(cfg: RunConfig, on_hosts: bool = False) -> str:
    """The launcher a run will use (``auto`` resolved; over hosts, auto is local: a container's ports
    are published on this machine's addresses only)."""
    spec = brokers.spec(cfg.broker)
    if not spec.needs_server:
        takes_url = spec.embedded is not None and bool(spec.embedded.url_schemes)
        return "external" if (cfg.broker_url and takes_url) else "embedded"
    if cfg.launcher != "auto":
        return cfg.launcher
    if on_hosts:
        return "local"
    try:
        from testbed.launchers import docker as docker_launcher
        if docker_launcher.engine_answers():
            return "docker"
    except ImportError:
        pass
    return "local"


def launch(cfg: RunConfig, run_id: str, run_dir: str, place=None) -> BrokerHandle:
    """The run's broker, after a sweep of what killed runs left (``cleanup.sweep``; what it removed is
    listed in the endpoint's ``extra["swept"]``, so run.json records it).

    ``place``: a run over hosts (testbed/hosts/runs.py): ``place.broker_nodes()`` is a ``Node`` per broker
    node (a host's, or this machine on the hosts' network: 127.0.0.1 is not reachable from a host) and
    ``place.stream_nodes()`` one per camera stream (an embedded transport that stage A binds)."""
    spec = brokers.spec(cfg.broker)
    launcher = resolve_launcher(cfg, on_hosts=place is not None)
    from testbed.launchers.cleanup import sweep
    swept = sweep(docker=launcher == "docker")
    handle = _launch(cfg, run_id, run_dir, spec, launcher, place)
    if swept:
        handle.endpoint.extra["swept"] = swept
    return handle


def _launch(cfg: RunConfig, run_id: str, run_dir: str, spec, launcher: str, place=None) -> BrokerHandle:
    if not spec.needs_server:
        from testbed.launchers.embedded import launch as embedded
        return embedded(cfg, run_id, spec, stream_nodes=place.stream_nodes() if place is not None else None)
    if launcher == "external":
        from testbed.launchers.external import launch as external
        return external(cfg)
    if place is not None and launcher == "docker":
        from testbed.errors import ConfigError
        raise ConfigError("--launcher docker is not possible over hosts: a container's ports are published on "
                          "this machine's addresses only; use --launcher local")
    if cfg.broker_nodes > 1:  # a replicated cluster (brokers/<name>/cluster.py): one node per member
        from testbed.launchers.cluster import launch as cluster_launch
        return cluster_launch(cfg, run_id, run_dir, nodes=place.broker_nodes() if place is not None else None,
                              where="docker" if launcher == "docker" else "local")
    if launcher == "docker":
        from testbed.launchers.docker import launch as docker_launch
        return docker_launch(cfg, run_id, run_dir)
    from testbed.launchers.local import launch as local_launch
    if place is not None:
        return local_launch(cfg, run_id, run_dir, node=place.broker_nodes()[0])
    return local_launch(cfg, run_id, run_dir)
