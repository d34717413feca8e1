"""testbed: compare message brokers between DNN stages of computer-vision pipelines."""

__version__ = "0.1.0"
