"""Seconds and peak memory of a phase of work (tuning, one edit), as the run folder records them."""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def measure(device: torch.device) -> Iterator[dict]:
    """Measure the block: the yielded dict gets, on exit, ``seconds`` (wall clock), ``peak_memory_mib`` and ``memory``,
    which says what was measured: ``cuda-allocated`` (the peak of tensors allocated on ``device`` during the block,
    ``torch.cuda.max_memory_allocated`` after a reset) or ``process-rss`` (the process's peak resident memory so far,
    ``getrusage``: on the CPU a phase's peak cannot be told from the peaks before it)."""
    record: dict = {}
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    began = time.perf_counter()
    try:
        yield record
    finally:
        if cuda:
            torch.cuda.synchronize(device)
            peak, kind = torch.cuda.max_memory_allocated(device), "cuda-allocated"
        else:
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            peak, kind = rss if sys.platform == "darwin" else rss * 1024, "process-rss"  # bytes on macOS, KiB on Linux
        record.update(seconds=round(time.perf_counter() - began, 3), peak_memory_mib=round(peak / 2**20, 1), memory=kind)
