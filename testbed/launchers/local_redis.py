"""Local launcher for Redis: a private ``redis-server`` (Debian package ``redis-server``).

Bound to 127.0.0.1 on a free port, working directory in a private temporary folder (``testbed-redis-*``),
no snapshots and no append-only file (``--save '' --appendonly no``): the run's data lives in memory
and dies with the process. It never touches a Redis the machine already runs. Ready means a real PING.
"""
from __future__ import annotations

import os

from brokers.base import Endpoint
from testbed.config import RunConfig
from testbed.errors import BrokerError
from testbed.launchers.base import LocalHandle, LocalProcess, free_port, private_tmp, require_binary
from testbed.launchers.cleanup import write_owner
from testbed.launchers.local_limits import apply_limits, parse_cpus

START_TIMEOUT_S = 20.0


def launch(cfg: RunConfig, run_id: str, run_dir: str) -> LocalHandle:
    if cfg.broker_cpus:
        parse_cpus(cfg.broker_cpus)  # bad input fails before anything starts
    binary = require_binary("redis-server", "redis-server")
    port = free_port()
    tmp = private_tmp("redis")
    write_owner(tmp)  # cleanup_all() leaves a live run alone
    log_path = os.path.join(run_dir, "broker-redis.log")
    argv = [binary, "--bind", "127.0.0.1", "--port", str(port), "--protected-mode", "yes",
            "--save", "", "--appendonly", "no", "--dir", tmp, "--daemonize", "no", "--logfile", "",
            "--databases", "1", "--unixsocket", ""]
    try:
        proc = LocalProcess("redis-server", argv, log_path, cwd=tmp, tmp_dir=tmp)
    except FileNotFoundError:
        raise BrokerError("redis-server could not be started: install the Debian package 'redis-server'") from None
    url = f"redis://127.0.0.1:{port}/0"
    extra = {"pid": proc.pid, "port": port, "tmp_dir": tmp, "log": log_path, "binary": binary}
    try:
        apply_limits(cfg, proc.pid, extra, log_path)
        probe = _ready_probe(url, cfg)
        impl = proc.wait_ready(probe, START_TIMEOUT_S, f" on 127.0.0.1:{port} (log: {log_path})")
        if cfg.broker_cpus:
            apply_limits(cfg, proc.pid, extra)
    except BaseException:
        proc.stop()
        raise
    ep = Endpoint("redis", url, cfg.broker_opt, impl, "local", extra)
    return LocalHandle(ep, [proc])


def _ready_probe(url: str, cfg: RunConfig):
    import redis

    def check() -> str:
        r = redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=2.0)
        try:
            r.ping()
            return f"redis {r.info('server').get('redis_version', '?')}"
        finally:
            r.close()
    return check
