"""``python -m testbed.validate``: the testbed checked against queueing theory, on real runs.

    python -m testbed.validate                          # every case on the embedded brokers
    python -m testbed.validate --brokers all --quick    # every broker, short runs (a smoke test)
    python -m testbed.validate --cases md1-80,mm2-80 --brokers NAME --out results/validate

The cases, the replays, the analysis and the command line live in testbed/validation/ (its docstring says
what is compared and the targets). Exit 0 when every case passes, 1 when one fails, 2 on bad input (one
line, nothing written), 130 on Ctrl-C.
"""
import sys

from testbed.validation.cli import main

if __name__ == "__main__":
    sys.exit(main())
