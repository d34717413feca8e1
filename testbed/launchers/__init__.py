"""Launchers: how the broker of a run comes to exist, and goes away again.

``launch(cfg, run_id, run_dir)`` returns a ``BrokerHandle`` (a context manager): its ``endpoint`` is
what every stage connects to; ``sample()`` gives the broker's CPU% and RSS once a second; ``stop()``
removes everything the launcher started (also on errors and Ctrl-C).

    embedded   inproc and zeromq: nothing to start (zeromq gets a free 127.0.0.1 port)
    local      private broker processes on free 127.0.0.1 ports in a temporary folder
               (testbed/launchers/local_<broker>.py)
    docker     containers through the docker SDK (testbed/launchers/docker.py)
    external   a broker the user runs, at --broker-url; never started or stopped by us
    auto       docker when an engine answers, else local
"""
from __future__ import annotations

import importlib

from testbed.config import RunConfig
from testbed.errors import ConfigError
from testbed.launchers.base import BrokerHandle, free_port  # noqa: F401 (re-exported)

EMBEDDED = ("inproc", "zeromq")


def _embedded(broker: str) -> bool:
    import brokers
    return broker in EMBEDDED or brokers.get(broker).in_process


def resolve_launcher(cfg: RunConfig) -> str:
    """The launcher a run will use (``auto`` resolved)."""
    if _embedded(cfg.broker):
        return "external" if (cfg.broker == "zeromq" and cfg.broker_url) else "embedded"
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
    launcher = resolve_launcher(cfg)
    if launcher == "embedded" or _embedded(cfg.broker):
        from testbed.launchers.embedded import launch as embedded
        return embedded(cfg, run_id)
    if launcher == "external":
        from testbed.launchers.external import launch as external
        return external(cfg)
    if launcher == "docker":
        from testbed.launchers.docker import launch as docker_launch
        return docker_launch(cfg, run_id, run_dir)
    try:
        module = importlib.import_module(f"testbed.launchers.local_{cfg.broker}")
    except ModuleNotFoundError:
        raise ConfigError(f"--launcher local is not available for broker {cfg.broker!r}") from None
    return module.launch(cfg, run_id, run_dir)
