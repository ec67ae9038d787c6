"""ROS-free runtime pieces: deadline loop, correlated sampling noise, safety filter."""

from __future__ import annotations

import threading
import time

import numpy as np

from vdd_ros.runtime.deadline_loop import DeadlineLoop
from vdd_ros.runtime.onnx_policy import NoiseSource
from vdd_ros.runtime.safety import ActionFilter


def test_deadline_loop_keeps_its_rate_and_wake_ticks_at_once() -> None:
    ticks: list[float] = []
    fired = threading.Event()

    def tick() -> None:
        ticks.append(time.monotonic())
        fired.set()

    loop = DeadlineLoop(0.2, tick)
    loop.start()
    try:
        time.sleep(0.05)  # the first tick runs at start
        fired.clear()
        woken = time.monotonic()
        loop.wake()
        assert fired.wait(0.1), "wake() did not trigger a tick well before the 200 ms deadline"
        assert ticks[-1] - woken < 0.05
        count = len(ticks)
        time.sleep(0.5)
        assert 2 <= len(ticks) - count <= 3  # back on a 200 ms period, re-phased at the wake
    finally:
        loop.stop()
    assert loop.overruns == 0


def test_inputs_at_the_control_rate_drive_every_tick() -> None:
    """Woken at about the period, the loop ticks once per wake and adds no timer ticks in between."""
    ticks: list[float] = []
    loop = DeadlineLoop(0.1, lambda: ticks.append(time.monotonic()))
    loop.start()
    try:
        loop.wake()  # lock on before the first 100 ms deadline
        time.sleep(0.02)
        count = len(ticks)
        for _ in range(10):
            time.sleep(0.09)  # inputs a little faster than the 100 ms period
            loop.wake()
        time.sleep(0.02)
        assert len(ticks) - count == 10
    finally:
        loop.stop()


def _choices(noise: NoiseSource, logits: np.ndarray, steps: int) -> np.ndarray:
    return np.array([int(np.argmax(logits + noise.draw(1)[0][0])) for _ in range(steps)])


def test_correlated_noise_keeps_the_expert_distribution_and_persists() -> None:
    logits = np.log(np.array([0.5, 0.3, 0.2]))
    iid = _choices(NoiseSource("mean", 0, 3, 2, correlation=0.0), logits, 20000)
    sticky = _choices(NoiseSource("mean", 0, 3, 2, correlation=0.9), logits, 20000)
    for z in (iid, sticky):  # exact marginals: z ~ q(z|s) either way
        freq = np.bincount(z, minlength=3) / z.size
        assert np.allclose(freq, [0.5, 0.3, 0.2], atol=0.03), freq
    switches = lambda z: np.mean(z[1:] != z[:-1])  # noqa: E731
    assert switches(sticky) < 0.5 * switches(iid)


def test_greedy_and_mean_modes_feed_zero_noise_where_they_should() -> None:
    gumbel, eps = NoiseSource("greedy", 0, 4, 2).draw(3)
    assert not gumbel.any() and not eps.any()
    gumbel, eps = NoiseSource("mean", 0, 4, 2).draw(3)
    assert gumbel.any() and not eps.any()
    gumbel, eps = NoiseSource("sample", 0, 4, 2).draw(3)
    assert gumbel.any() and eps.any()


def test_action_filter_clamps_limits_rate_and_rejects_non_finite() -> None:
    f = ActionFilter(2, [-0.03, -0.03], [0.03, 0.03], max_step=0.01)
    assert np.allclose(f.apply(np.array([0.1, -0.1])), [0.03, -0.03])
    assert np.allclose(f.apply(np.array([-0.03, 0.03])), [0.02, -0.02])
    assert f.apply(np.array([np.nan, 0.0])) is None
