"""Broker adapters, found by name through a lazy registry (as kombu finds its transports).

Adding a broker: one module here, one line in REGISTRY, one test-config class in tests/conformance,
one compose file.
"""
from __future__ import annotations

import difflib
import importlib

from testbed.errors import ConfigError

REGISTRY = {
    "inproc": "brokers.inproc:InprocBroker",
    "zeromq": "brokers.zeromq:ZeroMQBroker",
    "redis": "brokers.redis_streams:RedisStreamsBroker",
    "rabbitmq": "brokers.rabbitmq:RabbitMQBroker",
    "kafka": "brokers.kafka:KafkaBroker",
}

#: Python package (pip extra) each adapter's client library comes from, for a clear ImportError.
CLIENT_PACKAGES = {"zeromq": "pyzmq", "redis": "redis", "rabbitmq": "pika", "kafka": "confluent-kafka"}


def names() -> list[str]:
    return list(REGISTRY)


def check_name(name: str) -> str:
    if name not in REGISTRY:
        hint = difflib.get_close_matches(name, REGISTRY, n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(f"--broker {name!r} is not a known broker{extra}; allowed: {', '.join(REGISTRY)}")
    return name


def get(name: str):
    """The adapter class for ``name``."""
    module_name, cls_name = REGISTRY[check_name(name)].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        pkg = CLIENT_PACKAGES.get(name, exc.name)
        raise ConfigError(f"broker {name!r} needs the Python package {pkg!r} ({exc}); "
                          "run `make setup` or `pip install -e .[all]`") from None
    return getattr(module, cls_name)
