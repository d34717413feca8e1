"""Broker adapters and their specs, found by name through one lazy registry (as kombu finds its transports).

A broker is one folder, ``brokers/<name>/``: ``adapter.py`` (the client side, ``brokers.base.Broker``),
``spec.py`` (``SPEC``: capabilities, how to start it locally and in a container, test settings) and
whatever files its recipe needs. ``REGISTRY`` below is the one list of brokers, in display order:

    names()       every broker, in display order (compare's order, the CLI's choices, the docs tables)
    spec(name)    its ``BrokerSpec`` (imports no client library)
    get(name)     its adapter class (imports the client library; a missing one names the pip extra)

Adding a broker: the folder, and one line here.
"""
from __future__ import annotations

import difflib
import importlib

from testbed.errors import ConfigError

# The dataclasses module is imported first, so that the function ``spec`` below (not the submodule
# ``brokers.spec``) is what ``brokers.spec`` names; import from the module with ``from brokers.spec import``.
from brokers.spec import BrokerSpec, Capabilities, with_name  # noqa: E402

#: name -> "adapter module:class"; the spec is ``SPEC`` in the adapter's folder (``<folder>.spec``)
REGISTRY = {
    "inproc": "brokers.inproc.adapter:InprocBroker",
    "zeromq": "brokers.zeromq.adapter:ZeroMQBroker",
    "redis": "brokers.redis.adapter:RedisStreamsBroker",
    "rabbitmq": "brokers.rabbitmq.adapter:RabbitMQBroker",
    "kafka": "brokers.kafka.adapter:KafkaBroker",
    "nats": "brokers.nats.adapter:NatsBroker",
}

#: the broker a run gets when it names none: the no-transport baseline
DEFAULT = next(iter(REGISTRY))

_SPECS: dict = {}


def names() -> list[str]:
    return list(REGISTRY)


def check_name(name: str) -> str:
    if name not in REGISTRY:
        hint = difflib.get_close_matches(name, REGISTRY, n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(f"--broker {name!r} is not a known broker{extra}; allowed: {', '.join(REGISTRY)}")
    return name


def _spec_module(name: str) -> str:
    module = REGISTRY[name].split(":")[0]
    return module.rsplit(".", 1)[0] + ".spec" if module.endswith(".adapter") else ""


def spec(name: str):
    """The ``BrokerSpec`` of ``name``. A registry entry outside a broker folder (a test's adapter)
    gets the spec its adapter class carries, under its own name."""
    key = (name, REGISTRY.get(name))
    if key not in _SPECS:
        module = _spec_module(check_name(name))
        if module:
            found = importlib.import_module(module).SPEC
        else:
            cls = get(name)
            found = getattr(cls, "spec", None)
            if found is None:
                found = BrokerSpec(name, cls.__doc__ or name, Capabilities(
                    needs_server=not cls.in_process, in_process=cls.in_process, redelivers=cls.redelivers,
                    competing_consumers=cls.competing_consumers))
        _SPECS[key] = found if found.name == name else with_name(found, name)
    return _SPECS[key]


def specs() -> list:
    return [spec(n) for n in names()]


def get(name: str):
    """The adapter class for ``name``."""
    module_name, cls_name = REGISTRY[check_name(name)].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        pkg, extra = exc.name, ""
        if _spec_module(name):
            try:
                s = spec(name)
                pkg, extra = s.client or pkg, s.extra
            except Exception:  # noqa: BLE001 - the spec is missing too: say what failed to import
                pass
        how = f"pip install -e .[{extra}]" if extra else "pip install -e .[all]"
        raise ConfigError(f"broker {name!r} needs the Python package {pkg!r} ({exc}); "
                          f"run `make setup` or `{how}`") from None
    return getattr(module, cls_name)
