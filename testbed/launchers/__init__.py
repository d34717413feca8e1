"""Launchers: how the broker of a run comes to exist, and goes away again.

``launch(cfg, run_id, run_dir)`` returns a ``BrokerHandle`` (a context manager): its ``endpoint`` is
what every stage connects to; ``sample()`` gives the broker's CPU% and RSS once a second; ``stop()``
removes everything the launcher started (also on errors and Ctrl-C). Every launcher reads the broker's
spec (brokers/<name>/spec.py); none names a broker.

    embedded   a spec with no server (capability needs_server false): nothing to start
    local      the recipe as private processes on free 127.0.0.1 ports in a temporary folder (local.py)
    docker     the same recipe in a container through the docker SDK (docker.py)
    external   a broker the user runs, at --broker-url; never started or stopped by us (external.py)
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


def resolve_launcher(cfg: RunConfig) -> str:
    """The launcher a run will use (``auto`` resolved)."""
    spec = brokers.spec(cfg.broker)
    if not spec.needs_server:
        takes_url = spec.embedded is not None and bool(spec.embedded.url_schemes)
        return "external" if (cfg.broker_url and takes_url) else "embedded"
    if cfg.launcher != "auto":
        return cfg.launcher
    try:
        from testbed.launchers import docker as docker_launcher
        if docker_launcher.engine_answers():
            return "docker"
    except ImportError:
        pass
    return "local"


def launch(cfg: RunConfig, run_id: str, run_dir: str) -> BrokerHandle:
    """The run's broker, after a sweep of what killed runs left (``cleanup.sweep``; what it removed is
    listed in the endpoint's ``extra["swept"]``, so run.json records it)."""
    spec = brokers.spec(cfg.broker)
    launcher = resolve_launcher(cfg)
    from testbed.launchers.cleanup import sweep
    swept = sweep(docker=launcher == "docker")
    handle = _launch(cfg, run_id, run_dir, spec, launcher)
    if swept:
        handle.endpoint.extra["swept"] = swept
    return handle


def _launch(cfg: RunConfig, run_id: str, run_dir: str, spec, launcher: str) -> BrokerHandle:
    if not spec.needs_server:
        from testbed.launchers.embedded import launch as embedded
        return embedded(cfg, run_id, spec)
    if launcher == "external":
        from testbed.launchers.external import launch as external
        return external(cfg)
    if launcher == "docker":
        from testbed.launchers.docker import launch as docker_launch
        return docker_launch(cfg, run_id, run_dir)
    from testbed.launchers.local import launch as local_launch
    return local_launch(cfg, run_id, run_dir)
