"""The NATS JetStream adapter against a private nats-server: round trips, competing consumers,
redelivery, the backlog figure, bounded pulls and one-line errors."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid

import pytest

pytest.importorskip("nats", reason="nats-py is not installed (pip install -e .[nats])")

from brokers.base import Endpoint  # noqa: E402
from brokers.nats.adapter import NatsBroker  # noqa: E402
from testbed.errors import BrokerError, ConfigError  # noqa: E402
from testbed.harness.envelope import Envelope, decode  # noqa: E402

BINARY = shutil.which("nats-server")
pytestmark = pytest.mark.skipif(BINARY is None, reason="nats-server is not installed (apt-get install nats-server)")

USER, PASSWORD = "testbed", "s3cret-" + uuid.uuid4().hex[:8]
SIZES = [0, 1, 1000, 150_528, 1 << 20]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A nats-server with JetStream on a free 127.0.0.1 port, its store in a temp dir."""

    def __init__(self, auth: bool = True):
        self.dir = tempfile.mkdtemp(prefix="tb-nats-test-")
        self.port = _free_port()
        conf = os.path.join(self.dir, "nats.conf")
        with open(conf, "w") as f:
            f.write("max_payload: 8MB\n")  # the 1 MiB payload + header is over the 1 MB default
        argv = [BINARY, "-c", conf, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", self.dir]
        if auth:
            argv += ["--user", USER, "--pass", PASSWORD]
        self.creds = f"{USER}:{PASSWORD}@" if auth else ""
        self.log = open(os.path.join(self.dir, "server.log"), "w+")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited: {self.read_log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("nats-server did not listen within 15 s")

    @property
    def url(self) -> str:
        return f"nats://{self.creds}127.0.0.1:{self.port}"

    def read_log(self) -> str:
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.stop()


@pytest.fixture
def open_adapters():
    made: list[NatsBroker] = []
    yield made
    for b in made:
        b.close()


@pytest.fixture
def make(server, open_adapters):
    def make(url=None, **options) -> NatsBroker:
        b = NatsBroker(Endpoint("nats", url or server.url, {k: str(v) for k, v in options.items()}))
        b.connect(5)
        open_adapters.append(b)
        return b
    return make


@pytest.fixture
def topic(make):
    name = f"t-{uuid.uuid4().hex[:10]}"
    admin = make()
    admin.ensure_topic(name, 1)
    yield name
    admin.delete_topic(name)


def env(seq: int, payload: bytes = b"x") -> Envelope:
    now = time.monotonic_ns()
    return Envelope(seq, seq, 0, 1, now, now, payload)


def drain(consumer: NatsBroker, n: int, timeout_s: float = 20.0, ack: bool = True) -> list[tuple[int, bytes]]:
    got = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        ds = consumer.receive(n - len(got), 0.2)
        got += [(e.seq, bytes(memoryview(e.payload).cast("B"))) for e in map(decode, (d.data for d in ds))]
        if ds and ack:
            consumer.ack(ds)
    return got


# -- round trips --------------------------------------------------------------------------------
@pytest.mark.parametrize("publish", ["acked", "async"])
def test_payload_sizes_arrive_intact(make, topic, publish):
    rng = __import__("numpy").random.default_rng(3)
    payloads = [rng.integers(0, 256, n, dtype="uint8").tobytes() for n in SIZES]
    p, c = make(publish=publish), make()
    c.subscribe(topic, "g", "c0")
    for i, pl in enumerate(payloads):
        p.publish_envelope(topic, env(i, pl))
    p.flush()
    got = dict(drain(c, len(payloads)))
    assert sorted(got) == list(range(len(payloads)))
    for i, pl in enumerate(payloads):
        assert got[i] == pl, f"payload of {len(pl)} bytes changed in transit"


def test_numpy_payload_is_sent_as_its_bytes(make, topic):
    np = __import__("numpy")
    arr = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)
    p, c = make(), make()
    c.subscribe(topic, "g", "c0")
    p.publish(topic, env(0).header(), arr)
    (d,) = c.receive(5, 5.0)
    assert bytes(decode(d.data).payload) == arr.tobytes()


def test_one_consumer_gets_publish_order(make, topic):
    p, c = make(), make()
    c.subscribe(topic, "g", "c0")
    for i in range(300):
        p.publish_envelope(topic, env(i))
    assert [s for s, _ in drain(c, 300)] == list(range(300))


def test_messages_published_before_the_consumer_exists_are_delivered(make, topic):
    p = make()
    for i in range(5):
        p.publish_envelope(topic, env(i))
    c = make()
    c.subscribe(topic, "g", "late")
    assert [s for s, _ in drain(c, 5)] == list(range(5))


def test_receive_blocks_until_a_message_then_returns_at_once(make, topic):
    p, c = make(), make()
    c.subscribe(topic, "g", "c0")
    t = time.monotonic()
    assert c.receive(10, 0.3) == []
    waited = time.monotonic() - t
    assert 0.25 <= waited < 1.0, f"an empty receive took {waited:.3f}s for a 0.3 s timeout"

    def later():
        time.sleep(0.3)
        p.publish_envelope(topic, env(0))
    th = threading.Thread(target=later)
    th.start()
    t = time.monotonic()
    ds = c.receive(10, 5.0)
    waited = time.monotonic() - t
    th.join()
    assert len(ds) == 1 and decode(ds[0].data).seq == 0
    assert waited < 2.0, f"receive returned {waited:.2f}s after a message was there (timeout 5 s)"
    c.ack(ds)


def test_receive_returns_what_is_there_up_to_max(make, topic):
    p, c = make(), make()
    c.subscribe(topic, "g", "c0")
    for i in range(7):
        p.publish_envelope(topic, env(i))
    first = c.receive(5, 2.0)
    rest = c.receive(5, 2.0)
    assert [decode(d.data).seq for d in first] == [0, 1, 2, 3, 4]
    assert [decode(d.data).seq for d in rest] == [5, 6]
    c.ack(first + rest)


def test_two_competing_consumers_share_one_topic_without_duplicates(make, topic):
    consumers = [make(), make()]
    for i, c in enumerate(consumers):
        c.subscribe(topic, "g", f"c{i}")
    p = make(publish="async")
    n = 400
    for i in range(n):
        p.publish_envelope(topic, env(i))
    p.flush()
    got: list[list[int]] = [[], []]
    deadline = time.monotonic() + 30

    def take(k):
        c = consumers[k]
        while sum(map(len, got)) < n and time.monotonic() < deadline:
            ds = c.receive(20, 0.1)
            got[k].extend(decode(d.data).seq for d in ds)
            if ds:
                c.ack(ds)
                time.sleep(0.003)  # a consumer that works, so the other one gets its share
    threads = [threading.Thread(target=take, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    both = got[0] + got[1]
    assert len(both) == len(set(both)), "a message was delivered twice"
    assert sorted(both) == list(range(n))
    assert got[0] and got[1], f"both consumers got work ({len(got[0])} / {len(got[1])})"


def test_unacked_messages_of_a_closed_consumer_come_back_after_ack_wait(make, topic):
    p = make()
    for i in range(10):
        p.publish_envelope(topic, env(i))
    doomed = make(ack_wait_s=1.5)
    doomed.subscribe(topic, "g", "doomed")
    taken = [decode(d.data).seq for d in doomed.receive(4, 2.0)]
    assert taken == [0, 1, 2, 3]
    doomed.close()
    t_closed = time.monotonic()
    survivor = make(ack_wait_s=1.5)
    survivor.subscribe(topic, "g", "survivor")
    first = drain(survivor, 6, timeout_s=5)
    assert sorted(s for s, _ in first) == list(range(4, 10)), "the rest, at once"
    back = drain(survivor, 4, timeout_s=10)
    waited = time.monotonic() - t_closed
    assert sorted(s for s, _ in back) == taken, "the closed consumer's messages were not redelivered"
    assert waited >= 1.0, f"redelivered after {waited:.2f}s, before ack_wait_s=1.5"


def test_backlog_is_published_minus_acked(make, topic):
    admin, p, c = make(), make(), make()
    for i in range(7):
        p.publish_envelope(topic, env(i))
    assert admin.broker_backlog(topic, "g") == 7, "no consumer yet: the stream's count"
    c.subscribe(topic, "g", "c0")
    assert admin.broker_backlog(topic, "g") == 7
    acked = c.receive(3, 2.0)
    assert len(acked) == 3
    c.ack(acked)
    held = c.receive(2, 2.0)  # delivered, not acked: still backlog
    assert len(held) == 2
    deadline = time.monotonic() + 5
    while admin.broker_backlog(topic, "g") != 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert admin.broker_backlog(topic, "g") == 4
    c.ack(held)
    deadline = time.monotonic() + 5
    while admin.broker_backlog(topic, "g") != 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert admin.broker_backlog(topic, "g") == 2
    assert admin.broker_backlog(f"no-such-{topic}", "g") is None


@pytest.mark.parametrize("fetch_max_bytes, most", [(3 << 20, 2), (100_000, 1)])
def test_a_pull_brings_at_most_fetch_max_bytes_and_loses_nothing(server, make, fetch_max_bytes, most):
    """The server writes into a connection only what a pull asked for: a large batch of large messages
    comes in pieces of at most fetch_max_bytes (a message over it alone), never all at once."""
    admin = make(storage="memory")
    name = f"big-{uuid.uuid4().hex[:8]}"
    admin.ensure_topic(name, 1)
    try:
        p, c = make(publish="async"), make(fetch_max_bytes=fetch_max_bytes)
        c.subscribe(name, "g", "c0")
        payload = b"\xab" * (1 << 20)
        n = 12
        for i in range(n):
            p.publish_envelope(name, env(i, payload))
        p.flush()
        seqs, largest = [], 0
        deadline = time.monotonic() + 30
        while len(seqs) < n and time.monotonic() < deadline:
            ds = c.receive(100, 1.0)
            largest = max(largest, len(ds))
            seqs += [decode(d.data).seq for d in ds]
            c.ack(ds)
        assert seqs == list(range(n))
        assert largest == most, f"one pull brought {largest} x 1 MiB with fetch_max_bytes={fetch_max_bytes}"
        assert "Slow Consumer" not in server.read_log()
    finally:
        admin.delete_topic(name)


def test_server_impl_is_the_servers_version(make):
    out = subprocess.run([BINARY, "--version"], capture_output=True, text=True, timeout=10).stdout
    version = re.search(r"v?(\d+\.\d+\.\d+)", out).group(1)
    assert make().server_impl() == f"nats-server {version}"


# -- errors: one clear line ---------------------------------------------------------------------
def _one_line_error(fn) -> str:
    with pytest.raises(BrokerError) as info:
        fn()
    msg = str(info.value)
    assert msg and "\n" not in msg
    return msg


def test_unreachable_url_is_one_line_within_the_timeout():
    url = f"nats://127.0.0.1:{_free_port()}"
    t = time.monotonic()
    msg = _one_line_error(lambda: NatsBroker(Endpoint("nats", url)).connect(2.0))
    assert time.monotonic() - t < 2.0 + 1.5
    assert url in msg and "refused" in msg


def test_a_port_that_never_answers_fails_within_the_timeout():
    with socket.socket() as s:  # accepts the TCP connection (backlog) but never says INFO
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        url = f"nats://127.0.0.1:{s.getsockname()[1]}"
        t = time.monotonic()
        msg = _one_line_error(lambda: NatsBroker(Endpoint("nats", url)).connect(1.0))
        took = time.monotonic() - t
    assert 0.9 <= took < 1.0 + 1.5, f"took {took:.2f}s for a 1 s timeout"
    assert "did not answer within 1s" in msg


def test_wrong_or_missing_credentials_are_one_line_without_the_password(server):
    wrong = f"nats://{USER}:not-{PASSWORD}@127.0.0.1:{server.port}"
    msg = _one_line_error(lambda: NatsBroker(Endpoint("nats", wrong)).connect(5))
    assert "wrong user name or password" in msg and PASSWORD not in msg
    bare = f"nats://127.0.0.1:{server.port}"
    msg = _one_line_error(lambda: NatsBroker(Endpoint("nats", bare)).connect(5))
    assert "needs a user name and password" in msg


def test_bad_url_and_bad_options_are_clear():
    msg = _one_line_error(lambda: NatsBroker(Endpoint("nats", "http://127.0.0.1:4222")).connect(1))
    assert "nats://" in msg
    with pytest.raises(ConfigError, match="storage"):
        NatsBroker(Endpoint("nats", "nats://127.0.0.1:1", {"storage": "tape"}))
    with pytest.raises(BrokerError, match="ack_wait_s"):
        NatsBroker(Endpoint("nats", "nats://127.0.0.1:1", {"ack_wait_s": "0"}))


def test_publish_to_a_topic_without_stream_is_refused(make):
    p = make()
    msg = _one_line_error(lambda: p.publish_envelope(f"none-{uuid.uuid4().hex[:6]}", env(0)))
    assert "no stream" in msg
    a = make(publish="async")
    a.publish_envelope(f"none-{uuid.uuid4().hex[:6]}", env(0))
    assert "no stream" in _one_line_error(a.flush)


def test_short_pulls_do_not_stall_when_a_message_races_their_expiry(make, topic):
    """nats-server before 2.9.16 drops a pull that expires just as a message arrives without ending it (no
    408): the adapter must give up on it soon after its expiry, not a quarter second later, while the
    messages wait in the stream (docs/nats.md, "The quarter-second hop"). Short pulls (a batch's wait)
    against messages arriving every few ms hit that race many times a second here."""
    c = make()
    c.subscribe(topic, "g", "c0")
    p = make()
    stop = threading.Event()

    def produce():
        rng = __import__("numpy").random.default_rng(1)
        i = 0
        while not stop.is_set():
            time.sleep(rng.uniform(0.0005, 0.004))
            p.publish_envelope(topic, env(i, b"x" * 1000))
            i += 1
    t = threading.Thread(target=produce)
    t.start()
    longest, calls, got = 0.0, 0, 0
    try:
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            t0 = time.monotonic()
            ds = c.receive(1, 0.002)
            longest = max(longest, time.monotonic() - t0)
            calls, got = calls + 1, got + len(ds)
            if ds:
                c.ack(ds)
    finally:
        stop.set()
        t.join()
    assert got > 100 and calls > got
    assert longest < 0.1, f"a receive with a 2 ms timeout took {longest * 1000:.0f} ms"


def test_receive_after_the_topic_is_deleted_fails(make, topic):
    c = make()
    c.subscribe(topic, "g", "c0")
    make().delete_topic(topic)
    _one_line_error(lambda: c.receive(5, 1.0))


def test_a_broker_that_dies_fails_the_next_call_at_once():
    s = Server(auth=False)
    try:
        b = NatsBroker(Endpoint("nats", s.url))
        b.connect(5)
        b.ensure_topic("dies", 1)
        b.subscribe("dies", "g", "c0")
        s.proc.kill()
        s.proc.wait(5)
        t = time.monotonic()
        with pytest.raises(BrokerError) as info:
            for _ in range(50):  # the loss is seen on the first call that reads the socket
                b.receive(5, 0.2)
        assert time.monotonic() - t < 5
        assert "\n" not in str(info.value)
        b.close()
    finally:
        s.stop()
