"""The columns of summary.csv: one typed list (name, unit, definition) that the writer, the comparison
and the README agree with.

``SUMMARY`` is every run's header, in order. Pipelines that time their steps (vision) add, after it,
one ``a_<step>_ms`` / ``b_<step>_ms`` column per step (p50 of the step) and then ``VISION``. A column a
run cannot fill is left empty, never dropped, so summaries of different runs line up.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    name: str
    unit: str  # "" for text and flags
    doc: str


def _c(name: str, unit: str, doc: str) -> Column:
    return Column(name, unit, doc)


_PCT = {"p50": "median", "p90": "90th percentile", "p99": "99th percentile", "p999": "99.9th percentile",
        "max": "maximum"}

SUMMARY: tuple[Column, ...] = (
    # what ran
    _c("run_id", "", "the run's folder name: broker, start time, random suffix"),
    _c("complete", "", "true when the run ended normally (false: interrupted or a stage failed)"),
    _c("broker", "", "the broker between the stages"),
    _c("broker_impl", "", "what answered at the endpoint, with its version"),
    _c("launcher", "", "how the broker was started (embedded, docker, local, external)"),
    _c("broker_nodes", "", "the broker's nodes (--broker-nodes; 1 = a single node)"),
    _c("replication", "", "what replication means for the broker here (its cluster recipe: replication factor, "
                          "quorum queue, stream replicas, asynchronous replicas); none on a single node"),
    _c("pipeline", "", "the stages (synthetic, vision)"),
    _c("machine", "", "host name"),
    _c("arrival", "", "arrival process of frames (constant, poisson, bursty: open loop), or closed:K (closed "
                      "loop: K frames in flight per stream, latency from each frame's release)"),
    _c("offered_rate", "frames/s", "frames the schedule offers per second, all streams together (closed loop: "
                                   "frames stage A released per second over the measured window)"),
    _c("streams", "", "camera streams: stage A workers, each with its own schedule, frame numbers and seed"),
    _c("producer_rate", "frames/s", "stage A's configured service rate (1 / mean service per frame)"),
    _c("consumer_rate", "msg/s", "one stage B replica's configured service rate (1 / mean service per message)"),
    _c("fanout", "", "messages per frame, as given (a number or a distribution)"),
    _c("fanout_mean", "msg", "mean messages per frame"),
    _c("replicas", "", "stage B replicas (competing consumers)"),
    _c("batch_max", "msg", "most messages stage B takes per batch"),
    _c("batch_wait_ms", "ms", "how long stage B waits to fill a batch after its first message"),
    _c("service_dist", "", "distribution of synthetic service times"),
    _c("service_mode", "", "how synthetic service is spent (sleep or spin)"),
    _c("message_bytes", "bytes", "payload size of a synthetic message"),
    _c("duration_s", "s", "load duration"),
    _c("warmup_s", "s", "frames due before this are left out of the percentiles"),
    _c("seed", "", "seed of the schedule and service samples"),
    # accounting
    _c("sent", "msg", "messages stage A published"),
    _c("received", "msg", "distinct messages stage B finished"),
    _c("lost", "msg", "sent and not finished by the end of the drain"),
    _c("duplicated", "msg", "finishes of a message after its first"),
    _c("reordered", "msg", "messages a consumer got after one of the same stream published later"),
    _c("delivery", "", "--delivery: at-most-once, at-least-once, or empty (the broker's own settings)"),
    _c("ack", "", "how stage B acknowledged (--ack: per-message, per-batch, async; none: the broker has no acks)"),
    _c("lost_acked", "msg", "lost messages the broker had acknowledged to stage A (reply, confirm, PubAck): "
                            "a broken guarantee"),
    _c("lost_unacked", "msg", "lost messages the broker had not acknowledged (publish failed, not attempted, "
                              "or sent with nothing to acknowledge it); lost = lost_acked + lost_unacked"),
    _c("publish_errors", "msg", "messages stage A could not publish (an error, or no connection): fault runs"),
    _c("failed", "frames", "frames stage A could not process"),
    _c("corrupt", "msg", "messages that were not well-formed envelopes"),
    # rates
    _c("throughput_in", "msg/s", "messages published per second over the measured window"),
    _c("throughput_out", "msg/s", "messages finished per second over the measured window"),
    _c("rho", "", "offered msg/s over stage B's configured capacity (consumer_rate x replicas)"),
    _c("rho_a", "", "offered frames/s over stage A's configured rate"),
    _c("backlog_max", "msg", "most messages published and not finished, at a second's end"),
    _c("backlog_growth", "msg/s", "least-squares slope of the backlog over the measured seconds"),
    _c("stage_a_backlog_max", "frames", "most frames due and not processed by stage A"),
    _c("stage_a_backlog_growth", "frames/s", "slope of stage A's backlog over the measured seconds"),
    _c("stable", "", "neither backlog grows faster than 5% of its offered rate (at least 1/s)"),
    # latency
    *(_c(f"e2e_{k}_ms", "ms", f"{v} of e2e = end - intended") for k, v in _PCT.items()),
    _c("frame_p50_ms", "ms", "median frame latency: the frame's last message done - intended"),
    _c("frame_p99_ms", "ms", "99th percentile of frame latency"),
    _c("publish_delay_p50_ms", "ms", "median of published - intended (stage A's lateness)"),
    _c("publish_delay_p99_ms", "ms", "99th percentile of published - intended"),
    _c("transit_p50_ms", "ms", "median of transit = received - published (= queue + hop)"),
    _c("transit_p99_ms", "ms", "99th percentile of transit"),
    _c("wait_p50_ms", "ms", "median of start - received (batch forming)"),
    _c("wait_p99_ms", "ms", "99th percentile of start - received"),
    _c("service_p50_ms", "ms", "median of end - start (stage B's work on the message's batch)"),
    _c("service_p99_ms", "ms", "99th percentile of end - start"),
    _c("measured_messages", "msg", "messages in the percentiles (frame due after the warm-up)"),
    # queueing split from the broker's hop
    _c("queue_p50_ms", "ms", "median of queue = max(0, free - published): waiting in the broker or a "
                             "client buffer while the message's replica was busy"),
    _c("queue_p99_ms", "ms", "99th percentile of queue"),
    _c("hop_p50_ms", "ms", "median of hop = received - max(published, free): the broker's own hop"),
    _c("hop_p99_ms", "ms", "99th percentile of hop"),
    # broker client calls and the harness's own cost, per message
    _c("publish_call_p50_us", "us", "median duration of stage A's publish call"),
    _c("publish_call_p99_us", "us", "99th percentile of the publish call"),
    _c("recv_call_p50_us", "us", "median of stage B's receive call per message it returned, over calls "
                                 "that found a message waiting (a call that blocked was idle)"),
    _c("recv_call_p99_us", "us", "99th percentile of the receive call per message"),
    _c("ack_call_p50_us", "us", "median of stage B's ack call over its batch's size"),
    _c("ack_call_p99_us", "us", "99th percentile of the ack call per message"),
    _c("a_harness_p50_us", "us", "median of stage A's bookkeeping (envelope, stamps, records) over its "
                                 "frame's messages"),
    _c("a_harness_p99_us", "us", "99th percentile of stage A's bookkeeping per message"),
    _c("b_harness_p50_us", "us", "median of stage B's bookkeeping (decode, stamps, records) over its "
                                 "batch's size"),
    _c("b_harness_p99_us", "us", "99th percentile of stage B's bookkeeping per message"),
    _c("capacity_measured", "msg/s", "stage B's capacity (all replicas) from its measured service plus "
                                     "receive, ack and bookkeeping per message (means)"),
    _c("rho_measured", "", "offered msg/s over capacity_measured"),
    _c("limited_by", "", "what bounds the run: stage_a, stage_b, broker, harness or none "
                         "(rules in testbed/analysis/metrics.py capacity())"),
    # faults (testbed/faults/recovery.py; empty in runs without --fault)
    _c("faults", "", "the fault schedule, canonical spelling, '; '-separated"),
    _c("recovered", "", "every fault ended and was followed by a recovery before the data ended (faults.csv's "
                        "recovered, every row)"),
    _c("recovery_s", "s", "the worst fault's recovery: from its end until the out rate is back to the offered "
                          "rate and the window p99 within 1.5x of its pre-fault level (a lower bound where "
                          "recovery_lower_bound; empty: never measured)"),
    _c("recovery_lower_bound", "", "true: a fault did not recover before the data ended, and recovery_s is at "
                                   "least the time searched after it (faults.csv says which)"),
    _c("fault_backlog_peak", "msg", "the largest backlog from a fault's start to its recovery"),
    _c("throughput_dip", "", "the largest 1 - lowest 1 s out rate / offered rate, over the faults"),
    _c("redelivered", "msg", "duplicate finishes from the faults' starts to their recoveries (all faults)"),
    # clusters (testbed/analysis/availability.py)
    _c("leader_changes", "", "changes of the node leading the run's topic, sampled once a second (empty on a "
                             "single node)"),
    _c("unavailable_s", "s", "the longest stretch of the load in which no publish was acknowledged (stage A's "
                             "publish records; a client acknowledged later notes when the acknowledgements came)"),
    # hosts (testbed/hosts/runs.py; empty in runs on one machine)
    _c("hosts", "", "where --place put the run's parts over hosts (--hosts/--ray-address), e.g. stage_a=cam "
                    "broker=mq stage_b=gpu1,gpu2; empty: every part on the orchestrator's machine"),
    _c("clock_uncertainty_us", "us", "the worst, over the messages, of the stated uncertainty of a latency "
                                     "between the two hosts whose clocks stamped it (stage A's and its "
                                     "replica's, each mapped onto the orchestrator's clock; 0 for the "
                                     "orchestrator's own): cross-host latencies are right within this"),
    _c("error", "", "the first error, when the run did not complete"),
)

VISION: tuple[Column, ...] = (
    _c("a_publish_ms", "ms", "median over frames of published - end: stage A handing a frame's "
                             "messages to the broker client"),
    _c("non_dnn_share", "", "1 - p50(a_infer + b_infer) / e2e p50: the share of latency that is not "
                            "DNN inference"),
)


def names(cols=SUMMARY) -> list[str]:
    return [c.name for c in cols]


def by_name() -> dict[str, Column]:
    return {c.name: c for c in (*SUMMARY, *VISION)}
