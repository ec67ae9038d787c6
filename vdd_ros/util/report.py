"""Where a measurement was taken, and the marked sections of a markdown results file.

Every timing is meaningless without the machine it ran on, so the tools that measure record
``machine_name()`` next to their figures. ``update_results`` rewrites one marked section of
a results file (the benchmark tools call it only when asked to update the docs).
"""

from __future__ import annotations

import os
import pathlib
import platform

from vdd_ros.util.files import atomic_write_text


def machine_name() -> str:
    """CPU model and usable core count."""
    cores = len(os.sched_getaffinity(0))
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {cores} cores"
    except OSError:
        pass
    return f"{platform.machine()}, {cores} cores"


def update_results(path: str | os.PathLike[str], table: str, key: str, heading: str) -> None:
    """Replace the text between the ``key`` markers in ``path`` (append a ``heading`` section if there are none)."""
    path = pathlib.Path(path)
    start, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
    text = path.read_text() if path.exists() else "# Results\n"
    block = f"{start}\n{table}\n{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + f"\n\n## {heading}\n\n" + block + "\n"
    atomic_write_text(path, text)
