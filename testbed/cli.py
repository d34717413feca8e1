"""What every command line (``python -m testbed.<name>``) shares: a parser whose usage errors are one line."""
from __future__ import annotations

import argparse


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit 2), not a usage dump."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


__all__ = ["OneLineParser"]
