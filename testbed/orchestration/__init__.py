"""Orchestration: one run as named phases (``execute``), many runs on one broker (sweeps, the max-rate
search), experiment grids and the live progress view."""
