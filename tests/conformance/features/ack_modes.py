"""Ack modes (``--ack``), against the real server: a consumer SIGKILLed in each mode right after an ack call
returned, with one more batch in service. What comes again to a survivor and what is lost must match
docs/brokers.md ("Ack modes"): per-message and per-batch, exactly the batch in service; async, that batch
and at most the acked batches whose acks had not reached the broker (Redis: always the last one, its XACK
waits for the next read); in every mode, nothing is lost. And a consumer that acks everything and closes
leaves nothing to come again in any mode (async: ``close`` sends the acks still held)."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import time

import pytest

from testbed.harness.envelope import decode

MESSAGES = 16
#: after the messages the survivor must get have come, how long it waits for any others to come again
GRACE_S = 1.0
#: how long a next consumer of the group waits for messages a closed consumer would have left unacked (above
#: the test settings' Redis claim_idle_ms of 1 s and NATS ack_wait_s of 2 s)
REDELIVERY_S = 3.5


class AckModesMixin:
    def test_killed_consumer_redelivers_what_its_ack_mode_left_unconfirmed(self, endpoint):
        caps = self.caps()
        if not caps.ack_modes:
            pytest.skip(f"{self.broker} has no acknowledgements (at most once)")
        if not caps.redelivers:
            pytest.skip(f"{self.broker} does not redeliver unacknowledged messages")
        if self.launcher != "local":
            pytest.skip("ack modes are the client's: the suite on local servers covers them")
        from tests.conformance.ack_proc import take_ack_and_hang
        modes = ("per-message", "per-batch", "async")
        topics = {m: self._topic(endpoint, 1) for m in modes}
        p = self.make(endpoint)
        for m in modes:
            for i in range(MESSAGES):
                p.publish_envelope(topics[m], self.envelope(i))
        p.flush()
        ctx = mp.get_context("spawn")
        procs, pipes = {}, {}
        try:
            for m in modes:
                r, w = ctx.Pipe(duplex=False)
                procs[m] = ctx.Process(target=take_ack_and_hang,
                                       args=(self.broker, endpoint.__dict__, topics[m], f"g-{topics[m]}", m, w))
                procs[m].start()
                pipes[m] = r
            taken = {}
            for m in modes:
                assert pipes[m].poll(90), f"the {m} consumer took no four batches"
                taken[m] = [set(b) for b in json.loads(pipes[m].recv_bytes())]
            for m in modes:
                os.kill(procs[m].pid, signal.SIGKILL)
                procs[m].join(10)
            for m in modes:
                *acked_batches, in_service = taken[m]
                acked = set().union(*acked_batches)
                every = set(range(MESSAGES))
                came = self._survive(endpoint, topics[m], every - acked)
                assert came | acked == every, f"{m}: messages {sorted(every - came - acked)} lost"
                again = came & (acked | in_service)
                if m != "async":
                    assert again == in_service, f"{m}: came again {sorted(again)}, expected the batch " \
                                                f"in service {sorted(in_service)}"
                else:
                    assert in_service <= again <= acked | in_service, f"async: came again {sorted(again)}"
                    if self.broker == "redis":
                        assert again == acked_batches[-1] | in_service, \
                            f"redis async: came again {sorted(again)}, expected the last acked batch and the one " \
                            f"in service"
        finally:
            p.close()
            for proc in procs.values():
                if proc.is_alive():
                    proc.kill()
                proc.join(5)

    def test_every_ack_mode_has_acked_everything_once_the_consumer_closed(self, endpoint):
        """Each mode: a consumer takes every message in batches, acks each batch and closes; nothing comes
        again to the next consumer of the group, and the broker's backlog is 0."""
        caps = self.caps()
        if not caps.ack_modes:
            pytest.skip(f"{self.broker} has no acknowledgements (at most once)")
        if self.launcher != "local":
            pytest.skip("ack modes are the client's: the suite on local servers covers them")
        n = 12
        topics = {m: self._topic(endpoint, 1) for m in caps.ack_modes}
        p = self.make(endpoint)
        try:
            for m, topic in topics.items():
                c = self.make(endpoint)
                c.use_ack(m)
                c.subscribe(topic, f"g-{topic}", "c0")
                c.wait_assigned(60)
                for i in range(n):
                    p.publish_envelope(topic, self.envelope(i))
                p.flush()
                got: list = []
                deadline = time.monotonic() + 30
                while len(got) < n and time.monotonic() < deadline:
                    ds = c.receive(min(3, n - len(got)), 0.2)
                    got += [decode(d.data).seq for d in ds]
                    c.ack(ds)
                c.close()
                assert sorted(got) == list(range(n)), f"{m}: took {sorted(got)}"
            # what a consumer that had not acked would get again comes within the settings' redelivery
            # delay (Redis claim_idle_ms, NATS ack_wait_s; RabbitMQ and Kafka at once)
            survivors = {m: self.consumer(endpoint, t, f"g-{t}", "next") for m, t in topics.items()}
            again: dict = {m: [] for m in topics}
            try:
                for s in survivors.values():
                    s.wait_assigned(60)
                until = time.monotonic() + REDELIVERY_S
                while time.monotonic() < until:
                    for m, s in survivors.items():
                        ds = s.receive(n, 0.05)
                        again[m] += [decode(d.data).seq for d in ds]
            finally:
                for s in survivors.values():
                    s.close()
            assert again == {m: [] for m in topics}, f"came again after a clean close: {again}"
            if caps.reports_backlog:
                admin = self.make(endpoint)
                try:
                    lags = {m: admin.broker_backlog(t, f"g-{t}") for m, t in topics.items()}
                finally:
                    admin.close()
                assert all(lag in (0, None) for lag in lags.values()), lags
        finally:
            p.close()

    def _survive(self, endpoint, topic: str, must: set) -> set:
        """What a survivor of the group gets: until ``must`` has come, then ``GRACE_S`` more."""
        survivor = self.consumer(endpoint, topic, f"g-{topic}", "survivor")
        try:
            survivor.wait_assigned(60)
            got: set = set()
            deadline = time.monotonic() + self.redelivery_timeout_s
            quiet_until = None
            while time.monotonic() < deadline:
                ds = survivor.receive(MESSAGES, 0.1)
                got |= {decode(d.data).seq for d in ds}
                if ds:
                    survivor.ack(ds)
                if quiet_until is None and must <= got:
                    quiet_until = time.monotonic() + GRACE_S
                if quiet_until is not None and time.monotonic() >= quiet_until:
                    break
            return got
        finally:
            survivor.close()
