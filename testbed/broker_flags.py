"""The broker flags: every value checked whatever the broker, and one table of where each flag applies.

``check(cfg)`` (called by ``config.validate``) checks every broker flag's value, whichever broker and
launcher the run has (``--broker-cpus 99`` is refused with an embedded broker too), makes a
``--broker-url`` with ``--launcher auto`` mean external, and refuses a flag the table says must be
refused where it cannot apply. ``ignored(cfg)`` lists, one line each, the flags that apply nowhere in
this run and are ignored (``config.resolve``, sweeps and validate print them on stderr).

``SCOPES`` is the table: a flag given (its value differs from RunConfig's default) that the run's
broker or launcher cannot use is, per flag,

    refuse   when it picks *which* broker the run measures (--broker-url, --broker-impl): ignoring it
             would measure another broker than the one asked for
    warn     when it is a setting of a broker the testbed starts (--launcher, --broker-cpus,
             --broker-memory, --broker-heap, --no-build): the run measures the broker asked for without
             that setting, so a sweep's fixed settings can span brokers that do not all use them

A new flag says where it applies by adding one row. The launcher as the table sees it (``kind``):
``embedded`` (no server; an embedded transport given a URL it takes is ``external``), ``external``,
``local``, ``docker``, or ``auto`` (docker when an engine answers, else local: a flag applies under auto
when it applies to either, and the local launcher records what it could not apply, e.g. a memory cap).
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass

import brokers
from testbed.errors import ConfigError

KINDS = ("embedded", "external", "local", "docker")
STARTED = ("local", "docker")  # launchers that start the broker themselves


@dataclass(frozen=True)
class Scope:
    launchers: tuple[str, ...]  # launcher kinds that use the flag
    action: str                 # "refuse" or "warn" where it does not apply
    needs: str                  # what it needs, in the message ("it needs ...")
    #: (spec, impl or None) -> whether the broker (and implementation) uses it; None: every broker
    broker: Callable | None = None
    broker_needs: str = ""      # the message where the broker does not fit (default: needs)


def _has_impls(spec, impl) -> bool:
    return bool(spec.impl_names())


def _impl_reads(field: str) -> Callable:
    """A flag only implementations listing it in their spec's ``Impl.flags`` use."""
    return lambda spec, impl: impl is not None and field in impl.flags


SCOPES: dict[str, Scope] = {
    "broker_url": Scope(("external",), "refuse", "--launcher external or auto: a URL means a broker you run",
                        broker_needs="a broker with a server or a transport that takes an address"),
    "broker_impl": Scope(KINDS, "refuse", "a broker with several implementations", _has_impls),
    "launcher": Scope(KINDS, "warn", "a broker with a server (an embedded one has nothing to start)",
                      lambda spec, impl: spec.needs_server),
    "broker_cpus": Scope(STARTED, "warn", "a broker process the testbed starts (--launcher local or docker)"),
    "broker_memory": Scope(("docker",), "warn", "the docker launcher (a container's memory cap)"),
    "broker_heap": Scope(STARTED, "warn", "a JVM broker the testbed starts", _impl_reads("broker_heap")),
    "no_build": Scope(("docker",), "warn", "the docker launcher (it builds missing images)"),
    # stages and brokers on hosts (testbed/hosts/): a broker the testbed starts binds a host's address or
    # the orchestrator's on the hosts' network; a container's ports are published on this machine's only
    "hosts": Scope(("embedded", "external", "local"), "refuse", "a broker that hosts can reach: --launcher local "
                   "(or auto: local on hosts), an embedded transport or an external broker"),
    "ray_address": Scope(("embedded", "external", "local"), "refuse", "a broker that hosts can reach: --launcher "
                         "local (or auto: local on hosts), an embedded transport or an external broker"),
}

def _given(cfg, name: str) -> bool:
    """Whether the run sets this flag: a value other than RunConfig's default (and not empty)."""
    f = next(f for f in dataclasses.fields(cfg) if f.name == name)
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    value = getattr(cfg, name)
    return value != default and value not in ("", None, False)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def kind(cfg, spec) -> str:
    """The launcher as the checks see it, without probing an engine (``auto`` stays auto)."""
    if not spec.needs_server:
        return "external" if (cfg.broker_url and spec.schemes()) else "embedded"
    return cfg.launcher


def _impl(cfg, spec):
    return spec.impl(cfg.broker_impl) if spec.impls else None


def _applies(scope: Scope, k: str, spec, impl) -> str:
    """"" when the flag applies; else what does not fit: "broker" or "launcher"."""
    if scope.broker is not None and not scope.broker(spec, impl):
        return "broker"
    if k == "auto":
        return "" if any(x in scope.launchers for x in STARTED) else "launcher"
    if k not in scope.launchers:
        return "broker" if k == "embedded" else "launcher"
    return ""


def _what(cfg, spec, impl, misfit: str) -> str:
    if misfit == "launcher":
        return f"--launcher {cfg.launcher}"
    named = f" --broker-impl {impl.name}" if impl is not None and impl.name and len(spec.impls) > 1 else ""
    return f"--broker {cfg.broker}{named}"


def _shown(value) -> str:
    return "" if value is True else f" {value!r}" if isinstance(value, str) else f" {value}"


def _misfits(cfg):
    """(flag, value, what it needs, action, what does not fit) for every given flag the run cannot use."""
    spec = brokers.spec(cfg.broker)
    impl = _impl(cfg, spec)
    k = kind(cfg, spec)
    for name, scope in SCOPES.items():
        if not _given(cfg, name):
            continue
        value = getattr(cfg, name)
        misfit = _applies(scope, k, spec, impl)
        if misfit:
            needs = scope.broker_needs if misfit == "broker" and scope.broker_needs else scope.needs
            yield name, value, needs, scope.action, _what(cfg, spec, impl, misfit)


# -- values, whatever the broker ------------------------------------------------------------------

_SIZE = re.compile(r"[1-9]\d*[bkmgBKMG]?")
_JVM_SIZE = re.compile(r"[1-9]\d*[kKmMgG]?")


def check_values(cfg) -> None:
    spec = brokers.spec(cfg.broker)
    if cfg.broker_cpus:
        from testbed.launchers.limits import parse_cpus
        parse_cpus(cfg.broker_cpus)
    if cfg.broker_memory and not _SIZE.fullmatch(str(cfg.broker_memory)):
        raise ConfigError(f"--broker-memory {cfg.broker_memory!r} is not allowed: use a size such as 512m or 2g")
    if cfg.broker_heap and not _JVM_SIZE.fullmatch(str(cfg.broker_heap)):
        raise ConfigError(f"--broker-heap {cfg.broker_heap!r} is not allowed: use a JVM size such as 512m or 1g")
    if cfg.broker_impl and spec.impl_names():
        spec.impl(cfg.broker_impl)  # one line naming the implementations
    if cfg.broker_url:
        schemes = spec.schemes()
        low = cfg.broker_url.lower()
        if "://" not in low or (schemes and not low.startswith(schemes)):
            form = spec.url_form or " or ".join(s + "..." for s in schemes) or "SCHEME://..."
            extra = f" ({', '.join(schemes)})" if any(x not in form for x in schemes) else ""
            raise ConfigError(f"--broker-url {_safe(cfg.broker_url)!r} is not allowed for {cfg.broker}: "
                              f"use {form}{extra}")


def _safe(url: str) -> str:
    """The URL without a password."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def check(cfg) -> None:
    """Values, ``--broker-url`` with ``--launcher auto`` = external, then the table's refusals."""
    check_values(cfg)
    spec = brokers.spec(cfg.broker)
    if cfg.broker_url and cfg.launcher == "auto" and spec.needs_server:
        cfg.launcher = "external"
    for name, value, needs, action, what in _misfits(cfg):
        if action == "refuse":
            raise ConfigError(f"{_flag(name)}{_shown(_safe(value) if name == 'broker_url' else value)} is not "
                              f"allowed with {what}: it needs {needs}")


def ignored(cfg) -> list[str]:
    """One warning line per given flag the run ignores (the table's ``warn`` rows that do not apply)."""
    return [f"testbed: warning: {_flag(name)}{_shown(value)} is ignored with {what}: it needs {needs}"
            for name, value, needs, action, what in _misfits(cfg) if action == "warn"]
