"""The ``--device`` choice shared by the benchmarks that compare two loops on one device.

On CUDA nothing extra is needed for the timings: every timed run ends by copying
its accuracies to the host, which waits for the GPU's queued work.
"""

from __future__ import annotations

import argparse

import torch


def require_device(parser: argparse.ArgumentParser, device: str) -> None:
    """Exit with the usage error (status 2) when ``device`` is ``cuda`` and none is here."""
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is visible to torch here")


def device_name(device: str) -> str:
    """``CPU`` or the GPU's name, for the table's header."""
    return torch.cuda.get_device_name(0) if device == "cuda" else "CPU"
