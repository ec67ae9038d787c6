"""``torch_threads: 0``: a job takes the cores other processes leave idle (a real CPU hog, real /proc/stat)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import torch

from vdd_ros.util.cpu_share import FreeCores, busy_seconds, threads_for, usable_cores
from vdd_ros.util.torch_setup import TorchThreads


@pytest.fixture
def hog() -> Iterator[None]:
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(0.3)  # started and spinning
    yield
    proc.kill()
    proc.wait()


@pytest.fixture
def keep_torch_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_the_rule_is_one_thread_per_free_core_within_bounds() -> None:
    assert [threads_for(free, 4) for free in (0.0, 0.85, 1.5, 1.8, 2.9, 9.0)] == [1, 1, 1, 2, 3, 4]


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="the machine's load is read from /proc/stat")
def test_a_spinning_process_is_counted_against_the_free_cores(hog) -> None:
    free = FreeCores()
    time.sleep(0.5)
    measured = free.sample()
    assert measured is not None and measured <= usable_cores() - 0.3, measured


def test_adaptive_threads_leave_the_hogged_core_alone(hog, keep_torch_threads) -> None:
    TorchThreads(0, first_sample_s=0.5)
    assert torch.get_num_threads() <= max(1, usable_cores() - 1)


def test_a_fixed_count_is_kept(keep_torch_threads) -> None:
    threads = TorchThreads(3)
    threads.adapt()
    assert torch.get_num_threads() == 3 and not threads.adaptive



def test_niced_background_work_gives_way_unless_the_job_is_niced_itself() -> None:
    tick = os.sysconf("SC_CLK_TCK")
    line = f"cpu  {100 * tick} {50 * tick} {20 * tick} 999999 7 {tick} {tick} {2 * tick} 0 0"
    assert busy_seconds(line, count_niced=False) == pytest.approx(124.0)
    assert busy_seconds(line, count_niced=True) == pytest.approx(174.0)
