"""One simulated run of the pipeline the testbed runs: the same arrivals, stage A, fan-out, the broker's
hop, competing stage B replicas with the same batching rule and the broker's way of dealing work.

Timeline of a frame (ns from the run's start), as the harness stamps it:
    stage A takes frame f at max(intended, the previous frame's last publish call returned) (FIFO,
    ``queueing.fifo``); after its service (plus the overshoot the profile measured) it stamps and
    publishes the frame's messages one after another (the profile's in-frame gap between publishes),
    and is free once the last publish call returns.
Timeline of a message at stage B:
    available = published + hop (the broker's crossing when its replica waits for it)
    a replica free at F takes the head of its queue at r0 = max(available, F + recv) (recv: a receive
    call that finds work queued), then, with batching, takes every message already there up to
    batch_max and waits until r0 + batch_wait for more (a full batch starts when its last message came);
    service starts after decoding (pre), ends after the batch's service, and the replica is free again
    after the ack call and bookkeeping (post).
Dispatch: ``shared`` (one FIFO queue, the head goes to the replica free first; while one replica waits
to fill a batch, a message goes to whichever replica asked for work first) or ``dealt`` (a queue per
replica, filled at publish: round-robin, or by a given replica per message).

Exact recursions, no event library: a queue without batching is a Lindley recursion, vectorised
(free_i = max(available_i + x_i, free_{i-1} + recv_i + x_i), x = pre + service + post, solved with a
running maximum as ``queueing.fifo`` does); shared queues and batching walk the messages once, with a
heap of replicas by the time each is free.
"""
from __future__ import annotations

import heapq
import math
import zlib
from dataclasses import dataclass, field

import numpy as np

from testbed.analysis import queueing as q
from testbed.load import schedule
from testbed.load.distributions import LOGNORMAL_SIGMA, Fanout, rng_for
from testbed.twin.dists import GRID, Dist

CHUNK = 4096


@dataclass
class Model:
    """Everything one simulation needs: the run's configuration, the broker's and the harness's costs
    (a profile's broker entry: Dists), the stages (None: synthetic, drawn from the seed as the stages do)."""

    cfg: object                      # RunConfig (or anything with its fields)
    dispatch: str                    # "shared" or "dealt"
    costs: dict                      # hop, recv, a_gap, a_post, a_over, b_over, b_pre {k}, b_post {k}
    stage_a: dict | None = None      # {"pre": Dist, "fanout": {n: count}}
    stage_b: dict | None = None      # {k: Dist}: service of a batch of k
    assign: np.ndarray | None = None  # dealt, the config's own seed: each message's replica (else round-robin)
    notes: list = field(default_factory=list)


@dataclass
class Sim:
    offsets: np.ndarray     # per frame: intended
    counts: np.ndarray      # per frame: messages
    a_end: np.ndarray       # per frame: stage A's work done
    a_done: np.ndarray      # per frame: last publish call returned
    intended: np.ndarray    # per message (seq order)
    published: np.ndarray
    free: np.ndarray        # when the message's replica became free before taking it
    received: np.ndarray
    start: np.ndarray
    end: np.ndarray
    server: np.ndarray
    batch: np.ndarray       # batch size


def service_draws(dist: str, rate: float, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` service times (ns) exactly as ``distributions.service_sampler`` would draw them in turn."""
    if math.isinf(rate):
        return np.zeros(n, dtype=np.int64)
    mean_ns = 1e9 / rate
    if dist == "fixed":
        return np.full(n, int(round(mean_ns)), dtype=np.int64)
    if dist == "exponential":
        return rng.exponential(mean_ns, size=n).astype(np.int64)
    if dist == "lognormal":
        mu = math.log(mean_ns) - LOGNORMAL_SIGMA ** 2 / 2.0
        return rng.lognormal(mu, LOGNORMAL_SIGMA, size=n).astype(np.int64)
    raise ValueError(f"service distribution {dist!r}")


def fanout_draws(text: str, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` fan-outs exactly as ``Fanout.sampler`` would draw them in turn."""
    f = Fanout.parse(text)
    if f.kind == "fixed":
        return np.full(n, int(f.a), dtype=np.int64)
    if f.kind == "poisson":
        return rng.poisson(f.a, size=n).astype(np.int64)
    return rng.integers(int(f.a), int(f.b) + 1, size=n).astype(np.int64)


def twin_rng(seed: int, rep: int, stream: str) -> np.random.Generator:
    """The twin's own draws (profile distributions), apart from the stages' seeded streams."""
    return np.random.default_rng([int(seed), int(rep), zlib.crc32(b"twin-" + stream.encode())])


def _nearest(table: dict, k: int):
    if not table:
        return None
    if k in table:
        return table[k]
    return table[min(table, key=lambda s: (abs(s - k), s))]


def interpolated(table: dict, k: int) -> Dist:
    """A batch of k from a table by batch size: its own entry, else quantile-wise linear between the
    sizes around it (beyond the table: the caller refuses)."""
    if k in table:
        return table[k]
    sizes = sorted(table)
    lo = max((s for s in sizes if s < k), default=None)
    hi = min((s for s in sizes if s > k), default=None)
    if lo is None or hi is None:
        return table[lo if hi is None else hi]
    w = (k - lo) / (hi - lo)
    p = GRID
    a, b = table[lo], table[hi]
    v = (1 - w) * np.interp(p, a.probs, a.values) + w * np.interp(p, b.probs, b.values)
    return Dist(tuple(p), tuple(float(x) for x in v), 0)


class _Pool:
    """Draws from one Dist, made in chunks and handed out one at a time (a Python list is fast to index)."""

    def __init__(self, dist: Dist | None, rng: np.random.Generator):
        self.dist, self.rng = dist, rng
        self.buf: list = []
        self.i = 0

    def take(self) -> int:
        if self.dist is None:
            return 0
        if self.i >= len(self.buf):
            self.buf = self.dist.sample(self.rng, CHUNK).clip(0).tolist()
            self.i = 0
        v = self.buf[self.i]
        self.i += 1
        return v

    def many(self, n: int) -> np.ndarray:
        if self.dist is None:
            return np.zeros(n, dtype=np.int64)
        return self.dist.sample(self.rng, n).clip(0)


class BatchCosts:
    """What a batch of k costs replica r: (recv, pre, service, post), in ns."""

    def __init__(self, model: Model, streams: list, rng: np.random.Generator):
        c = model.costs
        self.rng = rng
        self.recv = _Pool(c.get("recv"), rng)
        self.over = _Pool(c.get("b_over"), rng) if model.stage_b is None else None
        self.streams = streams
        self.pos = [0] * len(streams)
        self.b_pre, self.b_post = c.get("b_pre") or {}, c.get("b_post") or {}
        self.stage_b = model.stage_b
        self.pools: dict = {}

    def pool(self, kind: str, k: int) -> _Pool:
        key = (kind, k)
        p = self.pools.get(key)
        if p is None:
            if kind == "service":
                dist = interpolated(self.stage_b, k)
            else:
                dist = _nearest(self.b_pre if kind == "pre" else self.b_post, k)
            p = self.pools[key] = _Pool(dist, self.rng)
        return p

    def service(self, r: int, k: int) -> int:
        if self.stage_b is not None:
            return self.pool("service", k).take()
        p = self.pos[r]
        self.pos[r] = p + k
        s = self.streams[r]
        if p + k > len(s):
            raise ValueError("stage B service stream exhausted")
        return int(sum(s[p:p + k])) + self.over.take()

    def arrays(self, r: int, m: int):
        """(recv, pre, service, post) for m batches of one message each, served by replica r in turn."""
        recv = self.recv.many(m)
        pre = self.pool("pre", 1).many(m)
        post = self.pool("post", 1).many(m)
        if self.stage_b is not None:
            service = self.pool("service", 1).many(m)
        else:
            p = self.pos[r]
            service = np.asarray(self.streams[r][p:p + m], dtype=np.int64) + self.over.many(m)
            self.pos[r] = p + m
        return recv, pre, service, post


def _lindley(avail: np.ndarray, recv, pre, service, post):
    """One replica, one message per batch, FIFO: (free before, received, start, end) per message."""
    x = pre + service + post
    A = avail + x
    S = recv + x
    C = np.cumsum(S)
    F = C + np.maximum.accumulate(A - C)
    r0 = F - x
    start = r0 + pre
    end = start + service
    before = np.r_[np.int64(0), F[:-1]]
    return before, r0, start, end


def _walk(avail: list, servers: int, bm: int, wait: int, costs: BatchCosts, ids: list | None = None):
    """Replicas behind one FIFO queue (the head to the replica free first), with batching."""
    n = len(avail)
    free_b = [0] * n
    recd = [0] * n
    st = [0] * n
    en = [0] * n
    srv = [0] * n
    bsz = [0] * n
    heap = [(0, r) for r in range(servers)]
    heapq.heapify(heap)
    take_recv = costs.recv.take
    i = 0
    while i < n:
        F, r = heapq.heappop(heap)
        rid = r if ids is None else ids[r]
        t = F + take_recv()
        a_i = avail[i]
        r0 = a_i if a_i > t else t
        j = i + 1
        if bm > 1:
            while j < n and j - i < bm and avail[j] <= r0:
                j += 1
            if j - i == bm or wait == 0:
                begin = r0
            else:
                deadline = r0 + wait
                while j < n and j - i < bm and avail[j] <= deadline:
                    j += 1
                begin = avail[j - 1] if j - i == bm and avail[j - 1] > r0 else (r0 if j - i == bm else deadline)
        else:
            begin = r0
        k = j - i
        s0 = begin + costs.pool("pre", k).take()
        e = s0 + costs.service(rid, k)
        for m in range(i, j):
            free_b[m] = F
            a_m = avail[m]
            recd[m] = a_m if a_m > r0 else r0
            st[m] = s0
            en[m] = e
            srv[m] = rid
            bsz[m] = k
        heapq.heappush(heap, (e + costs.pool("post", k).take(), r))
        i = j
    return free_b, recd, st, en, srv, bsz


def _compete(avail: list, servers: int, bm: int, wait: int, costs: BatchCosts, ids: list):
    """Replicas behind one FIFO queue when they batch with a wait: a replica filling its batch asks for
    more as every other idle replica does, and each message goes to the request made first (as blocked
    readers of one stream or queue are served), so an idle replica can take a message while another
    still waits to fill its batch."""
    n = len(avail)
    free_b = [0] * n
    recd = [0] * n
    st = [0] * n
    en = [0] * n
    srv = [0] * n
    bsz = [0] * n
    F = [0] * servers            # when each replica was last free
    key = [(0, r) for r in range(servers)]  # (when its pending request was made, order made)
    filling = [None] * servers   # [first receive, deadline, members]
    counter = servers
    take_recv = costs.recv.take

    def close(r: int, begin: int) -> None:
        nonlocal counter
        r0, _, members = filling[r]
        k = len(members)
        s0 = begin + costs.pool("pre", k).take()
        e = s0 + costs.service(ids[r], k)
        for m in members:
            free_b[m] = F[r]
            st[m] = s0
            en[m] = e
            srv[m] = ids[r]
            bsz[m] = k
        F[r] = e + costs.pool("post", k).take()
        key[r] = (F[r], counter)
        counter += 1
        filling[r] = None

    for j in range(n):
        a = avail[j]
        for r in range(servers):
            f = filling[r]
            if f is not None and f[1] < a:
                close(r, f[1])
        r = min(range(servers), key=key.__getitem__)
        f = filling[r]
        if f is None:
            t = max(a, F[r] + take_recv())
            recd[j] = t
            filling[r] = [t, t + wait, [j]]
        else:
            t = max(a, key[r][0])
            recd[j] = t
            f[2].append(j)
        key[r] = (t, counter)
        counter += 1
        if len(filling[r][2]) == bm:
            close(r, t)
    for r in range(servers):
        if filling[r] is not None:
            close(r, filling[r][1])
    return free_b, recd, st, en, srv, bsz


def simulate(model: Model, rep: int = 0, seed: int | None = None) -> Sim:
    """One replication. ``seed``: the run seed (arrivals, fan-out, stage draws; default the config's);
    ``rep`` picks the twin's own draws from the profile."""
    cfg = model.cfg
    seed = cfg.seed if seed is None else seed
    offsets = schedule(cfg.arrival, cfg.rate, cfg.duration, seed)
    nf = len(offsets)
    c = model.costs
    tw = twin_rng(seed, rep, "a")
    # stage A
    if model.stage_a is None:
        counts = fanout_draws(cfg.fanout, rng_for(seed, "fanout"), nf)
        a_pre = service_draws(cfg.service_dist, cfg.producer_rate, rng_for(seed, "service-a"), nf)
        if c.get("a_over") is not None:
            a_pre = a_pre + c["a_over"].sample(tw, nf)
    else:
        fan = model.stage_a["fanout"]
        sizes = np.array(sorted(fan), dtype=np.int64)
        if len(sizes):
            w = np.array([fan[s] for s in sorted(fan)], dtype=float)
            counts = tw.choice(sizes, size=nf, p=w / w.sum())
        else:
            counts = fanout_draws(cfg.fanout, rng_for(seed, "fanout"), nf)
        a_pre = model.stage_a["pre"].sample(tw, nf)
    a_pre = a_pre.clip(0)
    n = int(counts.sum())
    gaps = _Pool(c.get("a_gap"), tw).many(n)
    frame_of = np.repeat(np.arange(nf), counts)
    first = np.r_[0, np.cumsum(counts)[:-1]]
    has = counts > 0
    gaps[first[has]] = 0
    cum = np.cumsum(gaps)
    base = np.zeros(nf, dtype=np.int64)
    base[has] = cum[first[has]]
    within = cum - base[frame_of] if n else cum
    last_off = np.zeros(nf, dtype=np.int64)
    last_idx = first + counts - 1
    last_off[has] = within[last_idx[has]]
    a_post = np.where(has, _Pool(c.get("a_post"), tw).many(nf), 0)
    occ = a_pre + last_off + a_post
    a_done = q.fifo(offsets, occ)
    a_start = a_done - occ
    a_end = a_start + a_pre
    published = a_end[frame_of] + within
    intended = offsets[frame_of]

    # stage B
    tb = twin_rng(seed, rep, "b")
    avail = published + _Pool(c.get("hop"), tb).many(n)
    servers = int(cfg.replicas)
    bm, wait = int(cfg.batch_max), int(round(cfg.batch_wait_ms * 1e6))
    streams = []
    if model.stage_b is None:
        per = n if model.dispatch == "shared" else int(n / servers * 1.2) + 64
        for r in range(servers):
            streams.append(service_draws(cfg.service_dist, cfg.consumer_rate, rng_for(seed, f"service-b-{r}"),
                                         per + 1).tolist())
    costs = BatchCosts(model, streams, tb)
    free = np.zeros(n, dtype=np.int64)
    received = np.zeros(n, dtype=np.int64)
    start = np.zeros(n, dtype=np.int64)
    end = np.zeros(n, dtype=np.int64)
    server = np.zeros(n, dtype=np.int64)
    batch = np.ones(n, dtype=np.int64)
    if model.dispatch == "shared":
        queues = [(np.arange(n), list(range(servers)))]
    else:
        own = model.assign is not None and len(model.assign) == n and seed == cfg.seed
        who = np.asarray(model.assign, dtype=np.int64) if own else np.arange(n) % servers
        queues = [(np.flatnonzero(who == r), [r]) for r in range(servers)]
    for idx, ids in queues:
        if not len(idx):
            continue
        a = np.maximum.accumulate(avail[idx])  # FIFO: nobody is taken before the message ahead of it
        if bm == 1 and len(ids) == 1:
            rcv, pre, svc, post = costs.arrays(ids[0], len(idx))
            fb, rc, s0, e = _lindley(a, rcv, pre, svc, post)
            free[idx], received[idx], start[idx], end[idx], server[idx] = fb, rc, s0, e, ids[0]
        else:
            walk = _compete if len(ids) > 1 and bm > 1 and wait > 0 else _walk
            fb, rc, s0, e, sv, bs = walk(a.tolist(), len(ids), bm, wait, costs, ids)
            free[idx], received[idx], start[idx], end[idx] = fb, rc, s0, e
            server[idx], batch[idx] = sv, bs
    return Sim(offsets, counts, a_end, a_done, intended, published, free, received, start, end, server, batch)
