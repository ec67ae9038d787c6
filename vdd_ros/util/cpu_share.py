"""How many CPU cores other processes leave this one: what ``torch_threads: 0`` follows.

torch's intra-op pool splits every op across its threads and waits for the slowest one;
when another process holds a core, the thread sharing it stalls every op, and a job with
as many threads as cores slows down far more than its share (docs/results.md, "A busy
machine"). So an adaptive job uses the cores others leave idle, re-measured as it runs.
"""

from __future__ import annotations

import os
import time

# A thread per free core, counting a core as free when others use at most this much of it.
FREE_CORE_TOLERANCE = 0.2


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def busy_seconds(stat_line: str, count_niced: bool) -> float:
    """CPU seconds used since boot from the "cpu" line of /proc/stat.

    Time of niced processes (priority lowered, nice > 0) counts only with ``count_niced``:
    such background work gives way to a job at normal priority.
    """
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in stat_line.split()[1:9])
    return (user + (nice if count_niced else 0) + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _machine_busy_s() -> float | None:
    """``busy_seconds`` of this machine (Linux; None elsewhere); niced work counts only for a niced job."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            return busy_seconds(f.readline(), count_niced=os.nice(0) > 0)
    except (OSError, ValueError):
        return None


class FreeCores:
    """Cores other processes left idle between two calls of ``sample`` (this process's own use excluded)."""

    def __init__(self) -> None:
        self._last = self._read()

    @staticmethod
    def _read() -> tuple[float, float | None, float]:
        return time.monotonic(), _machine_busy_s(), time.process_time()

    def sample(self) -> float | None:
        """Free cores since the last call; None where the machine's load cannot be read."""
        now = self._read()
        then, self._last = self._last, now
        wall = now[0] - then[0]
        if now[1] is None or then[1] is None or wall <= 0:
            return None
        others = max(0.0, (now[1] - then[1]) - (now[2] - then[2])) / wall
        return max(0.0, usable_cores() - others)


def threads_for(free_cores: float, ceiling: int) -> int:
    """One thread per free core, at least one and at most ``ceiling``."""
    return max(1, min(ceiling, int(free_cores + FREE_CORE_TOLERANCE)))
