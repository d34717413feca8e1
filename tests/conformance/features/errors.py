"""Errors are one clear line: a broker that does not answer, wrong credentials, a missing binary."""
from __future__ import annotations

import dataclasses
import time
import urllib.parse

import pytest

import brokers
from brokers.base import Endpoint
from testbed.config import RunConfig
from testbed.errors import BrokerError
from testbed.launchers import free_port, local


class ErrorsMixin:
    def test_unreachable_broker_is_a_clear_error(self):
        dead_url = self.settings().dead_url.format(port=free_port())
        if not dead_url:
            pytest.skip(f"{self.broker}: nothing to connect to (embedded, brokerless)")
        cls = brokers.get(self.broker)
        b = cls(Endpoint(self.broker, dead_url, dict(self.options)))
        t = time.monotonic()
        with pytest.raises(BrokerError) as info:
            b.connect(2.0)
            b.ensure_topic("nothing-here", 1)
        took = time.monotonic() - t
        assert took < 2.0 + 3.0, f"took {took:.1f}s for a 2 s connect timeout"
        assert "\n" not in str(info.value) and str(info.value)

    def test_wrong_credentials_are_a_clear_error(self, endpoint):
        wrong = self.settings().wrong_credentials
        if wrong is None:
            pytest.skip(f"{self.broker}: the broker the testbed starts has no credentials to get wrong")
        url = wrong(endpoint.url)
        password = urllib.parse.urlsplit(url).password
        assert url != endpoint.url and password
        b = brokers.get(self.broker)(Endpoint(self.broker, url, dict(self.options)))
        with pytest.raises(BrokerError) as info:
            b.connect(5.0)
            b.ensure_topic("nothing-here", 1)
        msg = str(info.value)
        assert msg and "\n" not in msg
        assert password not in msg, "the password is not printed"

    def test_missing_binary_names_its_package(self, tmp_path):
        if not self.spec().needs_server:
            pytest.skip(f"{self.broker}: no binary to start (embedded, brokerless)")
        if self.launcher != "local":
            pytest.skip("the local launcher's binaries: checked in the local case")
        impl = self.spec().impl(self.broker_impl)
        recipe = impl.local
        cfg = RunConfig(broker=self.broker, launcher="local", broker_impl=self.broker_impl)
        for i, binary in enumerate((recipe.server, *recipe.helpers)):
            gone = dataclasses.replace(binary, path=str(tmp_path / f"no-{binary.name}"), find=None)
            changed = dataclasses.replace(recipe, server=gone) if i == 0 else dataclasses.replace(
                recipe, helpers=tuple(gone if h is binary else h for h in recipe.helpers))
            with pytest.raises(BrokerError) as info:
                local.start(cfg, "t", str(tmp_path), self.spec(), dataclasses.replace(impl, local=changed))
            msg = str(info.value)
            assert binary.package in msg and "\n" not in msg, msg
        assert not [p for p in tmp_path.iterdir() if p.name.startswith("broker-")], "nothing was started"
