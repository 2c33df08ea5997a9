"""CPU time of this process or of its finished children, and medians of it over runs: what
the benchmarks that compare with ffmpeg's command line measure."""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable


def cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(action: Callable[[], object], cpu: Callable[[], float], runs: int) -> tuple[float, float]:
    """Median CPU seconds (by `cpu`) and median wall seconds of `runs` runs of `action`."""
    cpus, walls = [], []
    for _ in range(runs):
        c0, w0 = cpu(), time.perf_counter()
        action()
        cpus.append(cpu() - c0)
        walls.append(time.perf_counter() - w0)
    return statistics.median(cpus), statistics.median(walls)
