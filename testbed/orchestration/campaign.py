"""Many runs on one broker: a campaign starts a broker once and runs configuration after configuration
on it, starting a fresh one only when a configuration needs a different broker (another broker, impl,
launcher, options, resources: ``BROKER_KEYS``), after a failed run (``reset``: the failure may have been
the broker's), and stopping the last one when the campaign closes (also on errors and Ctrl-C).

Sweeps (sweep.py) and the max-rate search (maxrate.py) both run through one::

    with Campaign(logs_dir, "sweep") as camp:
        result = camp.run(cfg, run_id, progress=print)

A broker that did not start is not tried again for the same broker settings: every later run needing it
fails at once with the same line, until a configuration needs another broker or ``reset`` is called.
"""
from __future__ import annotations

import os
import secrets

from testbed.config import RunConfig
from testbed.errors import BrokerError, ConfigError, TestbedError

#: Fields that define the broker a run needs; runs that agree on them share one broker.
BROKER_KEYS = ("broker", "broker_impl", "launcher", "broker_url", "broker_opt", "broker_cpus",
               "broker_memory", "broker_heap", "no_build", "connect_timeout", "delivery", "broker_nodes",
               "hosts", "ray_address", "place")


def broker_key(cfg: RunConfig) -> tuple:
    """The broker settings of ``cfg`` as a comparable, hashable value. For a transport whose endpoint stage A
    binds once per camera stream (``embedded.per_stream``) the number of streams is one of them:
    the launcher made one URL per stream."""
    key = tuple((k, _fmt(getattr(cfg, k, None))) for k in BROKER_KEYS)
    emb = getattr(_spec(cfg.broker), "embedded", None)
    return key + (("streams", cfg.streams),) if emb is not None and emb.per_stream else key


def _spec(name: str):
    import brokers
    try:
        return brokers.spec(name)
    except Exception:  # noqa: BLE001 - an unknown broker fails where it is launched, with its own line
        return None


def _fmt(v):
    if isinstance(v, dict):
        return tuple(sorted((str(k), str(x)) for k, x in v.items()))
    if isinstance(v, (list, tuple)):
        return tuple(str(x) for x in v)
    return v


class Campaign:
    """A broker kept across runs. ``logs_dir`` holds one folder of broker logs per broker started."""

    def __init__(self, logs_dir: str, name: str = "campaign"):
        self.logs_dir, self.name = logs_dir, name
        self.handle = None          # the BrokerHandle of the broker now running (None: none)
        self.key: tuple | None = None
        self.launches = 0
        self._failed: tuple[tuple, str] | None = None  # (broker key, why it did not start)

    def __enter__(self) -> "Campaign":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the broker ---------------------------------------------------------------------------------
    def broker(self, cfg: RunConfig, progress=None):
        """The running broker for ``cfg``: the current one if it fits, else a fresh one."""
        key = broker_key(cfg)
        if self.handle is not None and self.key == key:
            return self.handle
        self.reset()
        if self._failed is not None and self._failed[0] == key:
            raise BrokerError(self._failed[1])
        self._failed = None
        from testbed.launchers import launch
        if progress:
            progress(f"starting broker {cfg.broker}")
        self.launches += 1
        run_id = f"{self.name}-{cfg.broker}-{self.launches}-{secrets.token_hex(2)}"
        try:
            self.handle = launch(cfg, run_id, os.path.join(self.logs_dir, run_id))
        except TestbedError as exc:
            msg = f"broker {cfg.broker} did not start: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            self._failed = (key, msg)
            raise (type(exc) if isinstance(exc, ConfigError) else BrokerError)(msg) from None
        self.key = key
        return self.handle

    def reset(self) -> None:
        """Stop the current broker; the next run starts a fresh one."""
        handle, self.handle, self.key = self.handle, None, None
        if handle is not None:
            handle.stop()

    close = reset

    # -- runs ---------------------------------------------------------------------------------------
    def run(self, cfg: RunConfig, run_id: str | None = None, progress=None, hooks=()):
        """One run of ``cfg`` on the campaign's broker (``execute``'s RunResult; its errors propagate)."""
        from testbed.orchestration.execute import execute
        if cfg.faults or cfg.hosts or cfg.ray_address:  # a fault run kills and restarts its broker (and may
            self.reset()  # proxy it); a run over hosts starts it where --place says: one of its own
            return execute(cfg, progress=progress, run_id=run_id, hooks=hooks)
        handle = self.broker(cfg, progress)
        return execute(cfg, progress=progress, run_id=run_id, broker_handle=handle, hooks=hooks)


__all__ = ["Campaign", "BROKER_KEYS", "broker_key"]
