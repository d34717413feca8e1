"""Local launcher for RabbitMQ: a private ``rabbitmq-server`` node (Debian package ``rabbitmq-server``).

Everything is private, so it never touches a RabbitMQ or an epmd the machine already runs:
- its own epmd (Erlang's port mapper) on a free port bound to 127.0.0.1, started by us in the
  foreground (``ERL_EPMD_PORT``; the node is told ``-start_epmd false``, so no daemon escapes);
- node name ``testbed-<id>@localhost``, AMQP on 127.0.0.1:<free port>, distribution on
  127.0.0.1:<free port>;
- data (mnesia), config, enabled-plugins (none: no management plugin), env file and Erlang cookie
  (``HOME``) in a temporary folder ``testbed-rabbitmq-*``; logs go to stdout, that is the log file in
  the run folder.
``/usr/lib/rabbitmq/bin/rabbitmq-server`` is started directly (the ``/usr/sbin`` wrapper switches to
the ``rabbitmq`` user and writes to /var/log). Ready means a real AMQP login. Start-up takes a few
seconds (Erlang VM boot plus RabbitMQ's boot steps; about 4-5 s on a quiet 2-core machine).
"""
from __future__ import annotations

import os
import secrets

from brokers.base import Endpoint
from testbed.config import RunConfig
from testbed.errors import BrokerError
from testbed.launchers.base import LocalHandle, LocalProcess, free_port, private_tmp, require_binary
from testbed.launchers.cleanup import write_owner
from testbed.launchers.local_limits import apply_limits, parse_cpus

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 5.0

CONFIG = """\
listeners.tcp.1 = 127.0.0.1:{port}
# guest may log in: every listener is on the loopback interface anyway
loopback_users = none
# a private temporary node: do not refuse publishes because the temp disk is nearly full
disk_free_limit.absolute = 1MB
log.console = true
log.console.level = warning
log.file = false
"""


class RabbitHandle(LocalHandle):
    """Stops the node (TERM, then KILL after a few seconds: its data is temporary), then its epmd."""

    def sample(self) -> dict:
        return self.processes[-1].sample()  # the node (its process tree), not epmd

    def stop(self) -> None:
        for p in reversed(self.processes):
            p.stop(STOP_TIMEOUT_S)


def launch(cfg: RunConfig, run_id: str, run_dir: str) -> RabbitHandle:
    if cfg.broker_cpus:
        parse_cpus(cfg.broker_cpus)  # bad input fails before anything starts
    server = require_binary(SERVER, "rabbitmq-server")
    epmd_bin = require_binary("epmd", "erlang-base")
    amqp_port, dist_port, epmd_port = free_port(), free_port(), free_port()
    while len({amqp_port, dist_port, epmd_port}) < 3:
        dist_port, epmd_port = free_port(), free_port()
    tmp = private_tmp("rabbitmq")
    write_owner(tmp)  # cleanup_all() leaves a live run alone
    node = f"testbed-{secrets.token_hex(4)}@localhost"
    for sub in ("mnesia", "log"):
        os.makedirs(os.path.join(tmp, sub))
    _write(tmp, "rabbitmq.conf", CONFIG.format(port=amqp_port))
    _write(tmp, "enabled_plugins", "[].\n")
    _write(tmp, "rabbitmq-env.conf", "")
    env = {
        "HOME": tmp, "ERL_EPMD_PORT": str(epmd_port), "ERL_EPMD_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODENAME": node, "RABBITMQ_USE_LONGNAME": "false",
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1", "RABBITMQ_NODE_PORT": str(amqp_port),
        "RABBITMQ_DIST_PORT": str(dist_port),
        "RABBITMQ_MNESIA_BASE": os.path.join(tmp, "mnesia"), "RABBITMQ_LOG_BASE": os.path.join(tmp, "log"),
        "RABBITMQ_LOGS": "-", "RABBITMQ_CONFIG_FILE": os.path.join(tmp, "rabbitmq.conf"),
        "RABBITMQ_ADVANCED_CONFIG_FILE": os.path.join(tmp, "advanced.config"),
        "RABBITMQ_CONF_ENV_FILE": os.path.join(tmp, "rabbitmq-env.conf"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": os.path.join(tmp, "enabled_plugins"),
        "RABBITMQ_PID_FILE": os.path.join(tmp, "rabbitmq.pid"),
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-start_epmd false -kernel inet_dist_use_interface {127,0,0,1}",
    }
    epmd_log = os.path.join(run_dir, "broker-epmd.log")
    log_path = os.path.join(run_dir, "broker-rabbitmq.log")
    procs: list[LocalProcess] = []
    try:
        epmd = LocalProcess("epmd", [epmd_bin, "-port", str(epmd_port), "-address", "127.0.0.1"],
                            epmd_log, env={"HOME": tmp}, cwd=tmp)
        procs.append(epmd)
        epmd.wait_ready(lambda: _tcp_probe(epmd_port), 10.0, f" on 127.0.0.1:{epmd_port}")
        node_proc = LocalProcess("rabbitmq-server", [server], log_path, env=env, cwd=tmp, tmp_dir=tmp)
        procs.append(node_proc)
        extra = {"pid": node_proc.pid, "epmd_pid": epmd.pid, "node": node, "port": amqp_port,
                 "dist_port": dist_port, "epmd_port": epmd_port, "tmp_dir": tmp, "log": log_path}
        apply_limits(cfg, node_proc.pid, extra, log_path)
        url = f"amqp://guest:guest@127.0.0.1:{amqp_port}/%2F"
        impl = node_proc.wait_ready(lambda: _amqp_probe(url), START_TIMEOUT_S,
                                    f" on 127.0.0.1:{amqp_port} (log: {log_path})")
        if cfg.broker_cpus:
            apply_limits(cfg, node_proc.pid, extra)  # threads the VM started while booting
    except FileNotFoundError as exc:
        _stop(procs, tmp)
        raise BrokerError(f"{exc.filename} could not be started: "
                          "install the Debian package 'rabbitmq-server'") from None
    except BaseException:
        _stop(procs, tmp)
        raise
    return RabbitHandle(Endpoint("rabbitmq", url, cfg.broker_opt, impl, "local", extra), procs)


def _stop(procs: list[LocalProcess], tmp: str) -> None:
    for p in reversed(procs):
        p.stop(STOP_TIMEOUT_S)
    import shutil
    shutil.rmtree(tmp, ignore_errors=True)


def _write(folder: str, name: str, text: str) -> None:
    with open(os.path.join(folder, name), "w") as fh:
        fh.write(text)


def _tcp_probe(port: int) -> None:
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=1.0):
        pass


def _amqp_probe(url: str) -> str:
    import pika
    params = pika.URLParameters(url)
    params.connection_attempts = 1
    params.socket_timeout = 2.0
    params.stack_timeout = 3.0
    conn = pika.BlockingConnection(params)
    try:
        version = conn._impl.server_properties.get("version", "?")
        return f"rabbitmq {version.decode() if isinstance(version, bytes) else version}"
    finally:
        conn.close()
