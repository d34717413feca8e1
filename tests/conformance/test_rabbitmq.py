"""RabbitMQ in the conformance suite, against a private rabbitmq-server node (local launcher)."""
from tests.conformance.suite import BrokerConformance
from testbed.launchers import free_port


class TestRabbitMQ(BrokerConformance):
    broker = "rabbitmq"
    launcher = "local"
    # prefetch 50 so two consumers of 400 messages both get a share (RabbitMQ requeues a dead
    # consumer's messages as soon as its connection drops: no option needed for fast redelivery)
    options = {"prefetch": "50"}
    redelivery_timeout_s = 15.0
    dead_url = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
