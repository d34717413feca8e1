"""The broker adapter contract: small on purpose.

An adapter moves opaque messages (the envelope bytes) and nothing else: the harness stamps every
timestamp, counts every message and keeps every clock, the same way for every broker. An adapter never
measures anything.

One ``Broker`` object lives in one process (or one thread for the in-process queue) and plays one role:

    b = Adapter(endpoint)            # no I/O yet
    b.connect(timeout_s)             # raise BrokerError with one clear line if it cannot
    b.ensure_topic(topic, partitions)    # orchestrator only, once per run, before the stages start
    # producer role                  # consumer role
    b.open_stream(stream, streams)       b.use_ack(mode)          # --ack, before subscribe
                                         b.subscribe(topic, group, consumer_name)
    b.wait_consumers(topic, n, timeout_s)
    b.publish_envelope(topic, env)       b.wait_assigned(timeout_s)
    b.flush()
                                         ds = b.receive(max_messages, timeout_s)  # blocks, never polls
                                         b.ack(ds)
    b.close()

``receive`` blocks until at least one message is there or ``timeout_s`` passes, then returns what is
immediately available up to ``max_messages``. A ``Delivery``'s ``data`` is what ``envelope.decode``
takes: one buffer, ``[header, payload]``, or (in-process queue only) the Envelope itself.

Options: each adapter declares ``OPTIONS`` (name -> Option with default and doc). ``--broker-opt k=v``
sets any of them; unknown keys are an error that names the allowed ones.
"""
from __future__ import annotations

import difflib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from testbed.errors import BrokerError, ConfigError


@dataclass(frozen=True)
class Option:
    default: Any
    doc: str
    type: type = str
    choices: tuple = ()

    def convert(self, key: str, raw) -> Any:
        if self.type is bool:
            if isinstance(raw, bool):
                value = raw
            elif str(raw).lower() in ("1", "true", "yes", "on"):
                value = True
            elif str(raw).lower() in ("0", "false", "no", "off"):
                value = False
            else:
                raise ConfigError(f"--broker-opt {key}={raw!r}: expected true or false")
        else:
            try:
                value = self.type(raw)
            except (TypeError, ValueError):
                raise ConfigError(f"--broker-opt {key}={raw!r}: expected a {self.type.__name__}") from None
        if self.choices and value not in self.choices:
            allowed = ", ".join(str(c) for c in self.choices)
            raise ConfigError(f"--broker-opt {key}={raw!r} is not allowed: use one of {allowed}")
        return value


@dataclass
class Endpoint:
    """How to reach a running broker. Plain data (JSON-able): it is handed to every stage process."""

    broker: str
    url: str
    options: dict = field(default_factory=dict)
    impl: str = ""
    launcher: str = ""
    extra: dict = field(default_factory=dict)  # launcher facts (pid, container id, image, ...)


@dataclass(slots=True)
class Delivery:
    data: Any
    token: Any = None


class Broker(ABC):
    name: ClassVar[str] = ""
    OPTIONS: ClassVar[dict[str, Option]] = {}
    #: the broker's ``BrokerSpec`` (brokers/<name>/spec.py); the flags below are read from its capabilities
    spec: ClassVar[Any] = None
    #: True only for the in-process queue: stages run as threads of one process.
    in_process: ClassVar[bool] = False
    #: True where a message not acked by a consumer that died is delivered to another one.
    redelivers: ClassVar[bool] = False
    #: True where N competing consumers each get a share of one topic.
    competing_consumers: ClassVar[bool] = True
    #: True where the client library reconnects by itself after a broker error (it keeps its queue of
    #: unsent messages): a fault run keeps using it instead of making a new one.
    reconnects_itself: ClassVar[bool] = False
    #: how ``ack`` can send acknowledgements (brokers.spec.ACK_MODES; () = it has none) and the default
    ack_modes: ClassVar[tuple[str, ...]] = ()
    ack_default: ClassVar[str] = ""

    @property
    def acknowledged(self) -> bool:
        """True when a ``publish`` that returned means the broker acknowledged the message (its reply,
        confirm or PubAck, or, for an asynchronous client, no failure reported by ``flush``); false where
        nothing acknowledges it (fire and forget)."""
        return True

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        spec = cls.__dict__.get("spec")
        if spec is not None:  # one source of truth: the spec's capabilities
            caps = spec.capabilities
            cls.in_process, cls.redelivers = caps.in_process, caps.redelivers
            cls.competing_consumers = caps.competing_consumers
            cls.ack_modes, cls.ack_default = caps.ack_modes, caps.ack_default
            cls.name = cls.__dict__.get("name") or spec.name
            if spec.options is not None:
                cls.OPTIONS = spec.options

    def __init__(self, endpoint: Endpoint):
        self.endpoint = endpoint
        self.options = resolve_options(type(self), endpoint.options)
        self.ack_mode = self.ack_default  # use_ack

    # -- lifecycle ------------------------------------------------------------------------------
    @abstractmethod
    def connect(self, timeout_s: float = 10.0) -> None: ...

    def ensure_topic(self, topic: str, partitions: int) -> None:
        """Create the topic/queue/stream the run uses (fresh per run)."""

    def delete_topic(self, topic: str) -> None:
        """Remove what ``ensure_topic`` made, where the broker keeps it after the run."""

    @abstractmethod
    def close(self) -> None: ...

    # -- producer -------------------------------------------------------------------------------
    @abstractmethod
    def publish(self, topic: str, header: bytes, payload) -> None: ...

    def publish_envelope(self, topic: str, env) -> None:
        """Publish an envelope; wire brokers serialise it, the in-process queue passes it through."""
        self.publish(topic, env.header(), env.payload)

    def flush(self) -> None:
        """Block until every published message has left the client (or failed loudly)."""

    #: producer side: which camera stream this producer is (``open_stream``)
    stream: ClassVar[int] = 0
    streams: ClassVar[int] = 1

    def open_stream(self, stream: int, streams: int) -> None:
        """Producer side, after ``connect`` and before the first publish: this producer is camera stream
        ``stream`` of ``streams`` (stage A workers, testbed/load/streams.py). A broker that orders by key
        keys the stream's messages by it, so they keep their order; the others need nothing."""
        self.stream, self.streams = int(stream), int(streams)

    def wait_consumers(self, topic: str, n: int, timeout_s: float) -> None:
        """Producer side: return once ``n`` consumers can receive (only brokers that deal messages to
        connected consumers, like ZeroMQ PUSH, need this)."""

    # -- consumer -------------------------------------------------------------------------------
    def use_ack(self, mode: str) -> None:
        """Consumer side, before ``subscribe``: how ``ack`` sends acknowledgements (``--ack``; one of
        ``ack_modes``; "" or "none": the default). testbed/config.py refuses a mode a broker lacks before
        anything starts (a broker without acknowledgements included); here, for a caller that skipped the
        config, a broker with modes refuses one it lacks and one without any has nothing to set."""
        if not self.ack_modes:
            return
        mode = self.ack_default if mode in ("", "none") else mode
        if mode not in self.ack_modes:
            raise ConfigError(f"--ack {mode} is not possible with broker {self.name!r}: it has "
                              f"{', '.join(self.ack_modes)}")
        self.ack_mode = mode

    @abstractmethod
    def subscribe(self, topic: str, group: str, consumer_name: str) -> None: ...

    def wait_assigned(self, timeout_s: float) -> None:
        """Return once this consumer will receive messages (Kafka: partitions assigned)."""

    @abstractmethod
    def receive(self, max_messages: int, timeout_s: float) -> list[Delivery]: ...

    def ack(self, deliveries: list[Delivery]) -> None:
        """Acknowledge after service, as ``ack_mode`` says (no-op for brokers without acknowledgements).
        An ``async`` ack may still be on its way when this returns: ``close`` sends what is left."""

    def server_impl(self) -> str:
        """What answers at the endpoint, asked of the broker itself: e.g. "redis 7.0.15"."""
        return self.endpoint.impl or self.name

    # -- broker-side figures (sampled once a second by the orchestrator; None when unknown) ------
    def broker_backlog(self, topic: str, group: str) -> int | None:
        return None


def resolve_options(cls: type[Broker], given: dict) -> dict:
    """Defaults overlaid with the user's ``--broker-opt`` values, converted and checked."""
    out = {k: o.default for k, o in cls.OPTIONS.items()}
    for key, raw in (given or {}).items():
        if key not in cls.OPTIONS:
            allowed = ", ".join(sorted(cls.OPTIONS)) or "none"
            hint = difflib.get_close_matches(key, cls.OPTIONS, n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(f"--broker-opt {key!r} is not an option of broker {cls.name!r}{extra}; "
                              f"allowed: {allowed}")
        out[key] = cls.OPTIONS[key].convert(key, raw)
    return out


def parse_broker_opts(pairs) -> dict:
    """``["acks=all", "linger.ms=5"]`` -> dict. Values stay strings until the adapter converts them."""
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"--broker-opt {pair!r}: expected key=value")
        k, v = pair.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def not_reachable(broker: str, url: str, timeout_s: float, why: object) -> BrokerError:
    return BrokerError(f"{broker} broker at {url} did not answer within {timeout_s:g}s: {why}")
