"""Ideal queueing systems, replayed exactly, and the closed forms they are checked against.

Recursions (times are int64 nanoseconds; every message is served in arrival order by its server):
    fifo      one server: departure_i = max(arrival_i, departure_{i-1}) + service_i (Lindley), vectorised
    shared    c servers behind one queue: the next message goes to the server that is free first
              (a consumer group on one stream, a work queue with prefetch 1)
    dealt     c servers, each with its own queue, messages dealt when published: round-robin
              (message i to server i mod c) or by a given server id per message (a partition)
    tandem    stage A serves frames FIFO, each frame's messages are published at its departure,
              then stage B is any of the above
Every server may batch: it takes up to ``batch_max`` waiting messages, waiting at most ``batch_wait``
after it took the first for the batch to fill, then serves the batch at once.

Service times come in one of three forms:
    an array, one per message: the message's own service time (a batch costs the sum of its members')
    ``PerServer(streams)``: server r's k-th message costs ``streams[r][k]`` (the seeded draws a replica
        makes, in the order it serves)
    a callable ``f(batch_size) -> ns``: the batch's service time as a function of its size

Closed forms (seconds): M/M/1 sojourn mean and percentiles; M/D/1 mean (Pollaczek-Khinchine) and
percentiles (Erlang's waiting-time distribution); M/G/1 mean (P-K); M/M/c wait and sojourn by Erlang C;
c exponential servers fed round-robin (GI/M/1 with Erlang-c gaps); M^X/G/1 mean (batch arrivals).
"""
from __future__ import annotations

import decimal
import heapq
import math
from dataclasses import dataclass
from typing import Callable, Sequence, Union

import numpy as np


@dataclass(frozen=True)
class PerServer:
    """Service times drawn per server: ``streams[r][k]`` is what server r's k-th message costs."""

    streams: Sequence[np.ndarray]


Service = Union[np.ndarray, PerServer, Callable[[int], int]]


@dataclass
class Served:
    """What happened to each message (in input order): its server, its batch, when the batch's service
    began (``start``) and when it ended (``departure``)."""

    start: np.ndarray
    departure: np.ndarray
    server: np.ndarray
    batch: np.ndarray  # batch number (0, 1, ...) in the order batches began, over all servers

    @property
    def batch_size(self) -> np.ndarray:
        return np.bincount(self.batch)[self.batch]


# -- recursions --------------------------------------------------------------------------------------

def fifo(arrivals, service) -> np.ndarray:
    """Departures of one FIFO server (no batching): exact, vectorised.

    departure_n = max_k<=n (arrival_k + service_k + ... + service_n) = C_n + max_k<=n (arrival_k - C_{k-1})
    with C the running sum of service times.
    """
    a = np.asarray(arrivals, dtype=np.int64)
    s = np.asarray(service, dtype=np.int64)
    if a.shape != s.shape:
        raise ValueError("arrivals and service must have the same length")
    if len(a) == 0:
        return a.copy()
    c = np.cumsum(s)
    return c + np.maximum.accumulate(a - (c - s))


class _Cost:
    """Batch cost for one server, whatever form the service times were given in."""

    def __init__(self, service: Service, n: int, servers: int):
        self.kind = "array" if isinstance(service, np.ndarray) or isinstance(service, (list, tuple)) else (
            "per_server" if isinstance(service, PerServer) else "callable")
        if self.kind == "array":
            self.s = np.asarray(service, dtype=np.int64)
            if len(self.s) != n:
                raise ValueError("one service time per message is needed")
            self.s = self.s.tolist()
        elif self.kind == "per_server":
            if len(service.streams) < servers:
                raise ValueError(f"PerServer needs {servers} streams, got {len(service.streams)}")
            self.streams = [np.asarray(x, dtype=np.int64).tolist() for x in service.streams]
            self.pos = [0] * servers
        else:
            self.f = service

    def __call__(self, server: int, members: list[int]) -> int:
        if self.kind == "array":
            s = self.s
            return sum(s[i] for i in members)
        if self.kind == "per_server":
            k = self.pos[server]
            n = len(members)
            stream = self.streams[server]
            if k + n > len(stream):
                raise ValueError(f"PerServer stream {server} has only {len(stream)} service times")
            self.pos[server] = k + n
            return sum(stream[k:k + n])
        return int(self.f(len(members)))


def _check(arrivals, servers: int, batch_max: int, batch_wait: int) -> np.ndarray:
    a = np.asarray(arrivals, dtype=np.int64)
    if servers < 1 or batch_max < 1 or batch_wait < 0:
        raise ValueError("servers >= 1, batch_max >= 1 and batch_wait >= 0 are needed")
    if batch_max > 1 and len(a) > 1 and np.any(np.diff(a) < 0):
        raise ValueError("arrivals must be sorted when servers batch (what is waiting depends on it)")
    return a


def _take(a: list[int], i: int, n: int, t: int, batch_max: int, batch_wait: int) -> tuple[int, int]:
    """From queue position ``i`` (its message arrived by ``t``, when the server took it), the batch:
    (one past its last member, when its service begins)."""
    j = i + 1
    while j < n and j - i < batch_max and a[j] <= t:
        j += 1
    if j - i == batch_max or batch_wait == 0:
        return j, t
    deadline = t + batch_wait
    while j < n and j - i < batch_max and a[j] <= deadline:
        j += 1
    if j - i == batch_max:
        return j, max(t, a[j - 1])
    return j, deadline


def shared(arrivals, service: Service, servers: int = 1, batch_max: int = 1, batch_wait: int = 0) -> Served:
    """c servers behind one FIFO queue: the head of the queue goes to the server free first (lowest
    number on a tie). ``arrivals`` in queue order (sorted, where servers batch)."""
    a_np = _check(arrivals, servers, batch_max, batch_wait)
    n = len(a_np)
    if servers == 1 and batch_max == 1 and not callable(service):
        s = service.streams[0][:n] if isinstance(service, PerServer) else service
        if len(s) < n:
            raise ValueError("not enough service times")
        dep = fifo(a_np, s)
        start = dep - np.asarray(s, dtype=np.int64)
        return Served(start, dep, np.zeros(n, dtype=np.int64), np.arange(n, dtype=np.int64))
    cost = _Cost(service, n, servers)
    a = a_np.tolist()
    start = [0] * n
    dep = [0] * n
    srv = [0] * n
    bat = [0] * n
    free = [(0, r) for r in range(servers)]  # (free at, server): a heap
    heapq.heapify(free)
    i = 0
    b = 0
    while i < n:
        f, r = heapq.heappop(free)
        t = max(f, a[i])
        j, begin = _take(a, i, n, t, batch_max, batch_wait)
        members = list(range(i, j))
        d = begin + cost(r, members)
        for k in members:
            start[k], dep[k], srv[k], bat[k] = begin, d, r, b
        heapq.heappush(free, (d, r))
        b += 1
        i = j
    return Served(np.array(start, dtype=np.int64), np.array(dep, dtype=np.int64),
                  np.array(srv, dtype=np.int64), np.array(bat, dtype=np.int64))


def dealt(arrivals, service: Service, servers: int, assign=None, batch_max: int = 1,
          batch_wait: int = 0) -> Served:
    """c servers with a queue each; message i goes to server ``assign[i]`` (default i mod c: a
    round-robin deal at publish; a partition id per message for a partitioned log)."""
    a_np = _check(arrivals, servers, batch_max, batch_wait)
    n = len(a_np)
    who = np.arange(n, dtype=np.int64) % servers if assign is None else np.asarray(assign, dtype=np.int64)
    if len(who) != n or (n and (who.min() < 0 or who.max() >= servers)):
        raise ValueError(f"assign needs one server id in 0..{servers - 1} per message")
    start = np.zeros(n, dtype=np.int64)
    dep = np.zeros(n, dtype=np.int64)
    bat = np.zeros(n, dtype=np.int64)
    batch_start = []
    for r in range(servers):
        idx = np.flatnonzero(who == r)
        if not len(idx):
            continue
        if isinstance(service, PerServer):
            sub = PerServer([service.streams[r]])
        elif isinstance(service, np.ndarray) or isinstance(service, (list, tuple)):
            sub = np.asarray(service, dtype=np.int64)[idx]
        else:
            sub = service
        one = shared(a_np[idx], sub, 1, batch_max, batch_wait)
        start[idx], dep[idx] = one.start, one.departure
        first = np.unique(one.batch, return_index=True)[1]
        batch_start.append(np.stack([one.start[first], np.full(len(first), r), np.arange(len(first))], 1))
        bat[idx] = one.batch  # renumbered below
    if n:
        # number batches globally in the order they began
        allb = np.concatenate(batch_start)
        order = np.lexsort((allb[:, 1], allb[:, 0]))
        glob = np.empty(len(allb), dtype=np.int64)
        glob[order] = np.arange(len(allb))
        offsets = {}
        pos = 0
        for blk in batch_start:
            offsets[int(blk[0, 1])] = pos
            pos += len(blk)
        for r, off in offsets.items():
            idx = np.flatnonzero(who == r)
            bat[idx] = glob[off + bat[idx]]
    return Served(start, dep, who.copy(), bat)


def tandem(frame_arrivals, frame_service, fanout, stage_b: Callable[[np.ndarray], Served]):
    """Stage A serves frames FIFO; frame f's ``fanout[f]`` messages are published at its departure
    (in order), then ``stage_b(message_arrivals)`` serves them. Returns (frame departures, message
    arrivals at stage B, what stage B did)."""
    counts = np.asarray(fanout, dtype=np.int64)
    a_dep = fifo(frame_arrivals, frame_service)
    msg_arr = np.repeat(a_dep, counts)
    return a_dep, msg_arr, stage_b(msg_arr)


# -- closed forms (seconds, rates per second) -------------------------------------------------------

def _stable(lam: float, mu: float, c: int = 1) -> float:
    rho = lam / (c * mu)
    if not 0 < rho < 1:
        raise ValueError(f"utilisation {rho:g} is outside (0, 1): no steady state")
    return rho


def mm1_mean(lam: float, mu: float) -> float:
    """M/M/1 mean sojourn (wait + service)."""
    _stable(lam, mu)
    return 1.0 / (mu - lam)


def mm1_quantile(lam: float, mu: float, p: float) -> float:
    """M/M/1 sojourn p-quantile: the sojourn is exponential with rate mu - lam."""
    _stable(lam, mu)
    return -math.log1p(-p) / (mu - lam)


def mg1_mean(lam: float, es: float, es2: float) -> float:
    """M/G/1 mean sojourn by Pollaczek-Khinchine, from E[S] and E[S^2]."""
    rho = lam * es
    if not 0 < rho < 1:
        raise ValueError(f"utilisation {rho:g} is outside (0, 1): no steady state")
    return lam * es2 / (2 * (1 - rho)) + es


def md1_mean(lam: float, d: float) -> float:
    """M/D/1 mean sojourn (P-K with E[S^2] = D^2)."""
    return mg1_mean(lam, d, d * d)


def md1_wait_cdf(t: float, lam: float, d: float) -> float:
    """P(wait <= t) in M/D/1 (Erlang): (1 - rho) sum_{k=0}^{floor(t/D)} (lam (kD - t))^k / k! e^{-lam (kD - t)}.

    The sum alternates and its terms grow like e^{lam t}, so it is summed in decimal arithmetic with
    enough digits to stay exact to float precision.
    """
    rho = lam * d
    if not 0 < rho < 1:
        raise ValueError(f"utilisation {rho:g} is outside (0, 1): no steady state")
    if t < 0:
        return 0.0
    ctx = decimal.Context(prec=30 + int(2 * lam * t / math.log(10)))
    lam_d, t_d, d_d = ctx.create_decimal(lam), ctx.create_decimal(t), ctx.create_decimal(d)
    total = ctx.create_decimal(0)
    fact = ctx.create_decimal(1)
    for k in range(int(math.floor(t / d)) + 1):
        if k:
            fact = ctx.multiply(fact, k)
        x = ctx.multiply(lam_d, ctx.subtract(ctx.multiply(k, d_d), t_d))  # <= 0
        if x == 0:
            term = ctx.create_decimal(1 if k == 0 else 0)
        else:
            term = ctx.multiply(ctx.divide(ctx.power(x, k), fact), ctx.exp(ctx.minus(x)))
        total = ctx.add(total, term)
    return min(1.0, max(0.0, (1 - rho) * float(total)))


def quantile_of(cdf: Callable[[float], float], p: float, hi: float) -> float:
    """The p-quantile of a distribution on [0, inf) given its CDF, by bisection (``hi``: a first guess)."""
    lo = 0.0
    while cdf(hi) < p:
        hi *= 2
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if cdf(mid) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * max(1.0, hi):
            break
    return hi


def md1_sojourn_cdf(t: float, lam: float, d: float) -> float:
    """P(sojourn <= t) in M/D/1: the wait's CDF at t - D."""
    return md1_wait_cdf(t - d, lam, d) if t >= d else 0.0


def md1_quantile(lam: float, d: float, p: float) -> float:
    """M/D/1 sojourn p-quantile (wait quantile + D)."""
    rho = lam * d
    if p <= 1 - rho:
        return d
    return quantile_of(lambda t: md1_wait_cdf(t, lam, d), p, d) + d


def erlang_c(c: int, a: float) -> float:
    """Probability that an arrival waits in M/M/c, offered load a = lam/mu (< c)."""
    if not 0 < a < c:
        raise ValueError(f"offered load {a:g} is outside (0, {c}): no steady state")
    term = 1.0
    total = 1.0
    for k in range(1, c):
        term *= a / k
        total += term
    top = term * a / c * c / (c - a)  # a^c / c! * c / (c - a)
    return top / (total + top)


def mmc_wait_mean(lam: float, mu: float, c: int) -> float:
    _stable(lam, mu, c)
    return erlang_c(c, lam / mu) / (c * mu - lam)


def mmc_mean(lam: float, mu: float, c: int) -> float:
    """M/M/c mean sojourn."""
    return mmc_wait_mean(lam, mu, c) + 1.0 / mu


def mmc_wait_quantile(lam: float, mu: float, c: int, p: float) -> float:
    """M/M/c wait p-quantile: P(W > t) = C e^{-(c mu - lam) t}."""
    _stable(lam, mu, c)
    cw = erlang_c(c, lam / mu)
    if p <= 1 - cw:
        return 0.0
    return math.log(cw / (1 - p)) / (c * mu - lam)


def mmc_sojourn_tail(t: float, lam: float, mu: float, c: int) -> float:
    """P(sojourn > t) in M/M/c: the wait (0 w.p. 1 - C, else exponential at g = c mu - lam) plus an
    independent exponential service."""
    _stable(lam, mu, c)
    cw = erlang_c(c, lam / mu)
    g = c * mu - lam
    if abs(g - mu) < 1e-12 * mu:
        both = (1 + mu * t) * math.exp(-mu * t)
    else:
        both = (g * math.exp(-mu * t) - mu * math.exp(-g * t)) / (g - mu)
    return (1 - cw) * math.exp(-mu * t) + cw * both


def mmc_quantile(lam: float, mu: float, c: int, p: float) -> float:
    """M/M/c sojourn p-quantile."""
    return quantile_of(lambda t: 1 - mmc_sojourn_tail(t, lam, mu, c), p, 1.0 / mu)


def dealt_mm_sigma(lam: float, mu: float, c: int) -> float:
    """A Poisson stream dealt round-robin to c exponential servers: each sees Erlang-c gaps (rate lam per
    phase), a GI/M/1 queue. Its sigma is the root in (0, 1) of sigma = (lam / (lam + mu (1 - sigma)))^c."""
    _stable(lam, mu, c)
    sigma = 0.5
    for _ in range(10_000):
        nxt = (lam / (lam + mu * (1 - sigma))) ** c
        if abs(nxt - sigma) < 1e-15:
            break
        sigma = nxt
    return sigma


def dealt_mm_mean(lam: float, mu: float, c: int) -> float:
    """Mean sojourn behind a round-robin deal to c M servers (GI/M/1: exponential, rate mu (1 - sigma))."""
    return 1.0 / (mu * (1 - dealt_mm_sigma(lam, mu, c)))


def dealt_mm_quantile(lam: float, mu: float, c: int, p: float) -> float:
    return -math.log1p(-p) * dealt_mm_mean(lam, mu, c)


def mxg1_mean(lam_batch: float, ex: float, ex2: float, es: float, es2: float) -> float:
    """M^X/G/1 mean sojourn of a message: batches arrive as Poisson at ``lam_batch`` with size X
    (E[X], E[X^2]; X = 0 allowed), messages of a batch are served in turn, FIFO.

    W = lam E[S^2] / (2 (1 - rho)) + E[S] (E[X^2] - E[X]) / (2 E[X] (1 - rho)), lam = lam_batch E[X].
    """
    lam = lam_batch * ex
    rho = lam * es
    if not 0 < rho < 1:
        raise ValueError(f"utilisation {rho:g} is outside (0, 1): no steady state")
    return lam * es2 / (2 * (1 - rho)) + es * (ex2 - ex) / (2 * ex * (1 - rho)) + es
