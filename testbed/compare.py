"""``python -m testbed.compare RESULTS...``: tables and plots over many runs (testbed/analysis/compare.py)."""
import sys

from testbed.analysis.compare import main

if __name__ == "__main__":
    sys.exit(main())
