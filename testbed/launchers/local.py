"""Local launcher: a broker's recipe (``spec.impl(...).local``) run as private processes.

In order, from the recipe: its binaries are found (a missing one is one line saying how to install it),
a free 127.0.0.1 port per named port is picked, a private temporary folder ``testbed-<server>-*`` is made
(with an owner file: cleanup leaves a live run's folder alone), the plan's folders and config files are
written into it, its steps run to completion (e.g. formatting storage), its helpers start (each until its
ready command answers), then the server. Logs go to ``broker-<name>.log`` in the run folder. Ready means a
real client round trip; the implementation string is what the server says (or its label with the version
it logged). It never touches a broker the machine already runs. On any failure, and on ``stop()``,
everything started is stopped (the server first) and the folder removed.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import brokers
from brokers.base import Endpoint
from brokers.spec import Context, Step
from testbed.config import RunConfig
from testbed.errors import BrokerError, ConfigError
from testbed.launchers import lifeline
from testbed.launchers.base import (LocalHandle, LocalProcess, ReadyProbe, advertised_ports, impl_string,
                                    named_ports, port_facts, private_tmp, resolve_binary, write_owner)
from testbed.launchers.limits import apply_limits, parse_cpus

HELPER_READY_S = 10.0


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def launch(cfg: RunConfig, run_id: str, run_dir: str) -> LocalHandle:
    spec = brokers.spec(cfg.broker)
    return start(cfg, run_id, run_dir, spec, spec.impl(cfg.broker_impl))


def start(cfg: RunConfig, run_id: str, run_dir: str, spec, impl) -> LocalHandle:
    """Start ``impl`` (one implementation of ``spec``) from its local recipe."""
    recipe = impl.local
    if recipe is None:
        raise ConfigError(f"--launcher local is not available for broker {spec.name!r}")
    if impl.check is not None:
        impl.check(cfg)  # bad input fails before anything starts
    if cfg.broker_cpus:
        parse_cpus(cfg.broker_cpus)
    binaries = {b.name: resolve_binary(b) for b in (recipe.server, *recipe.helpers)}
    ports = named_ports(recipe.ports)
    name = recipe.server.name
    tmp = private_tmp(name)
    procs: list[LocalProcess] = []
    try:
        write_owner(tmp)
        plan = recipe.plan(Context("local", tmp, ports, binaries, cfg, run_id, _say,
                                   advertised=advertised_ports(ports)))
        _write(tmp, plan)
        for step in plan.steps:
            _run_step(step, tmp)
        for h in plan.helpers:
            helper = LocalProcess(h.name, h.argv, os.path.join(run_dir, f"broker-{h.name}.log"), env=h.env, cwd=tmp)
            procs.append(helper)
            helper.wait_ready(lambda h=h: _ready_command(h), HELPER_READY_S, f" ({' '.join(h.ready_argv)})")
        log_path = os.path.join(run_dir, f"broker-{name}.log")
        server = LocalProcess(name, plan.argv, log_path, env=plan.env, cwd=tmp, tmp_dir=tmp,
                              stop_grace_s=recipe.stop_grace_s, on_exit=plan.on_exit)
        procs.append(server)
        extra = {"pid": server.pid, **port_facts(ports), "tmp_dir": tmp, "log": log_path,
                 "binary": binaries[name], **{f"{p.name}_pid": p.pid for p in procs[:-1]}, **plan.facts}
        apply_limits(cfg, server.pid, extra, log_path)
        url = recipe.url.format(**ports)
        probe = ReadyProbe(spec, recipe, url, impl.impl_label(), "local")
        try:
            answer = server.wait_ready(probe, recipe.start_timeout_s,
                                       f" on 127.0.0.1:{ports[recipe.ports[0]]} (log: {log_path})")
        finally:
            probe.close()
        if cfg.broker_cpus:
            apply_limits(cfg, server.pid, extra)  # threads the server started while booting
        label = impl_string(impl, recipe, answer, binaries[name], _read(log_path) if recipe.version else "")
    except FileNotFoundError as exc:
        _stop(procs, tmp)
        raise BrokerError(f"{exc.filename} could not be started: {recipe.server.install_hint()}") from None
    except BaseException:
        _stop(procs, tmp)
        raise
    handle = LocalHandle(Endpoint(cfg.broker, url, cfg.broker_opt, label, "local", extra), procs)

    def respawn() -> LocalProcess:
        """The server again, same argv, ports, folder and log (fault injection: restart-broker)."""
        again = LocalProcess(name, plan.argv, log_path, env=plan.env, cwd=tmp, tmp_dir=tmp,
                             stop_grace_s=recipe.stop_grace_s, on_exit=plan.on_exit)
        if cfg.broker_cpus:
            apply_limits(cfg, again.pid, {})
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


def _write(folder: str, plan) -> None:
    for sub in plan.dirs:
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    for rel, text in plan.files.items():
        with open(os.path.join(folder, rel), "w") as fh:
            fh.write(text)


def _run_step(step: Step, cwd: str) -> None:
    try:
        done = subprocess.run(step.argv, capture_output=True, text=True, timeout=step.timeout_s,
                              stdin=subprocess.DEVNULL, cwd=cwd, preexec_fn=lifeline.die_with_parent())
    except subprocess.TimeoutExpired:
        raise BrokerError(f"{step.name} did not finish within {step.timeout_s:g}s") from None
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or [f"exit {done.returncode}"]
        raise BrokerError(f"{step.name} failed: {last[0]}")


def _ready_command(helper) -> None:
    r = subprocess.run(helper.ready_argv, capture_output=True, timeout=5, stdin=subprocess.DEVNULL,
                       env={**os.environ, **helper.env})
    if r.returncode != 0:
        raise BrokerError(f"{helper.name} does not answer yet")


def _read(path: str) -> str:
    try:
        with open(path, errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


def _stop(procs: list[LocalProcess], tmp: str) -> None:
    for p in reversed(procs):
        p.stop()
    shutil.rmtree(tmp, ignore_errors=True)
