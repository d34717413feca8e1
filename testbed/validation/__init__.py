"""The testbed checked against queueing theory, on real runs.

    python -m testbed.validate                          # every case on the embedded brokers
    python -m testbed.validate --brokers all --quick    # every broker, short runs (a smoke test)
    python -m testbed.validate --cases md1-80,mm2-80 --brokers NAME --out results/validate

Each case is a queue whose answer is known, run through the real runner with the synthetic stages
(sleep mode, Poisson arrivals, 1 KB messages). For each case and broker the run's e2e p50/p90/p99 and
mean (over the messages summary.csv measures: frames due after the warm-up) are set against:

    nominal        the run's own intended arrival times replayed through the ideal system with the
                   service times the user asked for (the very draws the run's stages made, from the seed):
                   how close the testbed is to the system it claims to be
    measured-cost  the same recursion fed what each message measurably cost: its stage A time up to its
                   publish, its broker hop, stage B's decode, service, ack and bookkeeping (messages.csv):
                   whether that decomposition explains the whole latency
    theory         the closed form where there is one (M/M/1, M/D/1, M/G/1 and M^X/D/1 means by
                   Pollaczek-Khinchine, M/M/2 by Erlang C, a round-robin deal as GI/M/1, the tandem case)

With several replicas the replays deal work as the broker does (its spec's ``dispatch``): one shared
queue (the next message to the replica free first), a round-robin deal at publish, or by partition (the
replica each message went to). Targets: brokers with no server (embedded) within 5% of the nominal
replay at p50, p90 and p99; every broker within 5% of the measured-cost replay. The theory column is for
reading only: a 45 s run's p99 rests on a few dozen messages.

Writes ``--out DIR`` (default results/validate-<time>): one run folder per case and broker, and
validate.csv (one row per case, broker and statistic). Exit 0 when every case passes, 1 when one fails,
2 on bad input (one line, nothing written), 130 on Ctrl-C.

Modules: ``cases`` (the queues and their closed forms, broker facts), ``replays`` (messages.csv read back,
the nominal and measured-cost replays), ``analysis`` (a run against its replays, validate.csv, the table),
``cli`` (``python -m testbed.validate``, thin in testbed/validate.py).
"""
from testbed.validation.analysis import (ATOM_NS, ATOM_REL, ATOM_SHARE, CSV_COLUMNS, Outcome, analyse, csv_rows,
                                         error_pct, print_table, stats_ms, write_csv)
from testbed.validation.cases import (CASES, COMMON, DEFAULT_DURATION_S, DEFAULT_WARMUP_S, QUICK, STATS,
                                      TARGET_STATS, TOLERANCE_PCT, Case, broker_facts, embedded_brokers)
from testbed.validation.replays import Costs, Nominal, measured_replay, nominal_replay, read_messages

__all__ = ["ATOM_NS", "ATOM_REL", "ATOM_SHARE", "CASES", "COMMON", "CSV_COLUMNS", "Case", "Costs",
           "DEFAULT_DURATION_S", "DEFAULT_WARMUP_S", "Nominal", "Outcome", "QUICK", "STATS", "TARGET_STATS",
           "TOLERANCE_PCT", "analyse", "broker_facts", "csv_rows", "embedded_brokers", "error_pct",
           "measured_replay", "nominal_replay", "print_table", "read_messages", "stats_ms", "write_csv"]
