"""Local launcher: a broker's recipe (``spec.impl(...).local``) run as private processes.

In order, from the recipe: its binaries are found (a missing one is one line saying how to install it),
a free 127.0.0.1 port per named port is picked, a private temporary folder ``testbed-<server>-*`` is made
(with an owner file: cleanup leaves a live run's folder alone), the plan's folders and config files are
written into it, its steps run to completion (e.g. formatting storage), its helpers start (each until its
ready command answers), then the server. Logs go to ``broker-<name>.log`` in the run folder. Ready means a
real client round trip; the implementation string is what the server says (or its label with the version
it logged). It never touches a broker the machine already runs. On any failure, and on ``stop()``,
everything started is stopped (the server first) and the folder removed. Every step goes through a
``Node`` (nodes.py): this machine, or a host the broker is placed on.
"""
from __future__ import annotations

import os
import sys

import brokers
from brokers.base import Endpoint
from brokers.spec import Context
from testbed.config import RunConfig
from testbed.errors import BrokerError, ConfigError
from testbed.launchers.base import LocalHandle, ReadyProbe, advertised_ports, impl_string, port_facts
from testbed.launchers.limits import parse_cpus
from testbed.launchers.nodes import LOCAL, Node

HELPER_READY_S = 10.0


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def launch(cfg: RunConfig, run_id: str, run_dir: str, node: Node = LOCAL) -> LocalHandle:
    spec = brokers.spec(cfg.broker)
    return start(cfg, run_id, run_dir, spec, spec.impl(cfg.broker_impl), node)


def start(cfg: RunConfig, run_id: str, run_dir: str, spec, impl, node: Node = LOCAL) -> LocalHandle:
    """Start ``impl`` (one implementation of ``spec``) from its local recipe on ``node`` (this machine,
    bound to 127.0.0.1, or a host's agent, bound to the host's address: testbed/launchers/nodes.py)."""
    recipe = impl.local
    if recipe is None:
        raise ConfigError(f"--launcher local is not available for broker {spec.name!r}")
    if impl.check is not None:
        impl.check(cfg)  # bad input fails before anything starts
    if cfg.broker_cpus:
        parse_cpus(cfg.broker_cpus)
    binaries = {b.name: node.resolve_binary(b) for b in (recipe.server, *recipe.helpers)}
    host = node.address
    ports = node.free_ports(recipe.ports)
    name = recipe.server.name
    tmp = node.make_dir(name)
    procs: list = []
    try:
        plan = recipe.plan(Context("local", tmp, ports, binaries, cfg, run_id, _say,
                                   advertised=advertised_ports(ports), host=host))
        node.write_plan(tmp, plan)
        for step in plan.steps:
            node.run_step(step, tmp)
        for h in plan.helpers:
            helper = node.start_process(h.name, h.argv, os.path.join(run_dir, f"broker-{h.name}.log"), env=h.env,
                                        cwd=tmp)
            procs.append(helper)
            helper.wait_ready(lambda h=h: _ready_command(node, h), HELPER_READY_S, f" ({' '.join(h.ready_argv)})")
        log_path = os.path.join(run_dir, f"broker-{name}.log")
        server = node.start_process(name, plan.argv, log_path, env=plan.env, cwd=tmp, tmp_dir=tmp,
                                    stop_grace_s=recipe.stop_grace_s, on_exit=plan.on_exit)
        procs.append(server)
        extra = {"pid": server.pid, **port_facts(ports), "tmp_dir": tmp, "log": log_path,
                 "binary": binaries[name], **{f"{p.name}_pid": p.pid for p in procs[:-1]}, **plan.facts}
        if node.name:
            extra["host"] = node.name
        node.apply_limits(cfg, server.pid, extra, log_path)
        url = recipe.url.format(host=host, **ports)
        probe = ReadyProbe(spec, recipe, url, impl.impl_label(), "local")
        try:
            answer = server.wait_ready(probe, recipe.start_timeout_s,
                                       f" on {host}:{ports[recipe.ports[0]]} (log: {log_path})")
        finally:
            probe.close()
        if cfg.broker_cpus:
            node.apply_limits(cfg, server.pid, extra)  # threads the server started while booting
        label = impl_string(impl, recipe, answer, binaries[name], node.read_text(log_path) if recipe.version else "")
    except FileNotFoundError as exc:
        _stop(procs, tmp, node)
        raise BrokerError(f"{exc.filename} could not be started: {recipe.server.install_hint()}") from None
    except BaseException:
        _stop(procs, tmp, node)
        raise
    handle = LocalHandle(Endpoint(cfg.broker, url, cfg.broker_opt, label, "local", extra), procs)

    def respawn():
        """The server again, same argv, ports, folder and log (fault injection: restart-broker)."""
        again = node.start_process(name, plan.argv, log_path, env=plan.env, cwd=tmp, tmp_dir=tmp,
                                   stop_grace_s=recipe.stop_grace_s, on_exit=plan.on_exit)
        if cfg.broker_cpus:
            node.apply_limits(cfg, again.pid, {})
        ready = ReadyProbe(spec, recipe, url, impl.impl_label(), "local")
        try:
            again.wait_ready(ready, recipe.start_timeout_s, f" after a restart (log: {log_path})")
        except BaseException:
            again.tmp_dir = None  # the handle's stop() removes the folder
            again.stop(timeout_s=1.0)
            raise
        finally:
            ready.close()
        return again

    handle.respawn = respawn
    return handle


def _ready_command(node: Node, helper) -> None:
    if node.run_command(helper.ready_argv, env=helper.env) != 0:
        raise BrokerError(f"{helper.name} does not answer yet")


def _stop(procs: list, tmp: str, node: Node) -> None:
    for p in reversed(procs):
        p.stop()
    node.remove_dir(tmp)
