"""``python -m testbed.sweep EXPERIMENT.yaml``: run a grid of configurations (testbed/orchestration/sweep.py)."""
import sys

from testbed.orchestration.sweep import main

if __name__ == "__main__":
    sys.exit(main())
