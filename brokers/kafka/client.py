"""What every Kafka client of ours shares, without importing the client library: the broker URL and
librdkafka's logger."""
from __future__ import annotations

import logging

from testbed.errors import ConfigError

_client_log = logging.getLogger("brokers.kafka.librdkafka")
_client_log.addHandler(logging.NullHandler())  # librdkafka's connection chatter stays out of stderr


def bootstrap_servers(url: str) -> str:
    """``kafka://h1:p1,h2:p2``, ``tcp://h:p`` or plain ``h:p`` -> librdkafka's bootstrap.servers."""
    for prefix in ("kafka://", "tcp://", "plaintext://"):
        if url.lower().startswith(prefix):
            url = url[len(prefix):]
    url = url.rstrip("/")
    if not url or any(":" not in hp for hp in url.split(",")):
        raise ConfigError(f"kafka url {url!r} is not allowed: use kafka://HOST:PORT[,HOST:PORT]")
    return url
