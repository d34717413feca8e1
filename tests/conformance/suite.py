"""One conformance suite for every broker in the registry, against real servers.

The suite is split by feature (tests/conformance/features/): payloads and sizes, ordering, competing
consumers, redelivery after a dead consumer, what each ack mode redelivers after one, the broker's own
backlog figure, errors (unreachable, wrong credentials, missing binary). ``BrokerConformance`` is all of them on ``BrokerCase`` (base.py);
test_brokers.py makes one class per broker and implementation of the registry, so a new broker gets the
whole suite without a line here. What a broker cannot do is in its spec's capabilities: the test skips
with the reason. Known gaps of one implementation go in its spec's ``testing.known_gaps`` (test name ->
reason): those tests run as expected failures (strict), never silently.
"""
from __future__ import annotations

from tests.conformance.base import BrokerCase, cases, class_name  # noqa: F401 (re-exported)
from tests.conformance.features.ack_modes import AckModesMixin
from tests.conformance.features.backlog import BacklogMixin
from tests.conformance.features.competing import CompetingConsumersMixin
from tests.conformance.features.errors import ErrorsMixin
from tests.conformance.features.ordering import OrderingMixin
from tests.conformance.features.payload import PayloadMixin
from tests.conformance.features.redelivery import RedeliveryMixin


class BrokerConformance(PayloadMixin, OrderingMixin, CompetingConsumersMixin, RedeliveryMixin, AckModesMixin,
                        BacklogMixin, ErrorsMixin, BrokerCase):
    pass
