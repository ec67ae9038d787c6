"""ROS-free runtime pieces: deadline loop, correlated sampling noise, safety filter."""

from __future__ import annotations

import itertools
import time

import numpy as np

from vdd_ros.runtime.deadline_loop import DeadlineLoop
from vdd_ros.runtime.onnx_policy import NoiseSource
from vdd_ros.runtime.safety import ActionFilter


def _wait_for(predicate, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True


def test_deadline_loop_keeps_its_rate_and_wake_ticks_at_once() -> None:
    """Bounds a busy machine cannot break: a wake ticks long before the deadline; ticks are never early."""
    ticks: list[float] = []
    loop = DeadlineLoop(1.0, lambda: ticks.append(time.monotonic()))
    loop.start()
    try:
        assert _wait_for(lambda: len(ticks) == 1, 5.0)  # the first tick runs at start
        woken = time.monotonic()
        loop.wake()
        assert _wait_for(lambda: len(ticks) == 2, 0.5), "wake() did not tick well before the 1 s deadline"
        assert ticks[1] >= woken
        assert _wait_for(lambda: len(ticks) >= 4, 10.0), "the loop stopped ticking after a wake"
        # re-phased at the wake: the timer waits 1.5 periods after a woken tick, then one period
        assert ticks[2] - ticks[1] >= 1.5 - 0.01 and ticks[3] - ticks[1] >= 2.5 - 0.01
    finally:
        loop.stop()
    assert loop.overruns == 0


def test_inputs_faster_than_the_period_drive_every_tick() -> None:
    """Woken more often than the period, the loop ticks once per wake and adds no timer ticks in between."""
    ticks: list[float] = []
    loop = DeadlineLoop(0.5, lambda: ticks.append(time.monotonic()))
    loop.start()
    try:
        loop.wake()  # lock on before the first deadline
        assert _wait_for(lambda: len(ticks) >= 1, 2.0)
        count = len(ticks)
        for i in range(6):
            time.sleep(0.25)  # inputs at twice the rate; a timer tick needs a 0.75 s silence
            loop.wake()
            assert _wait_for(lambda i=i: len(ticks) - count >= i + 1, 2.0)
        assert len(ticks) - count == 6
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


def test_interleaved_timing_alternates_blocks_and_keeps_each_call_count() -> None:
    """Benchmarks compare policies timed in alternating blocks: no policy gets a quiet spell of its own."""
    from vdd_ros.runtime.latency import interleaved_samples_ms, time_interleaved

    log: list[str] = []
    calls = {"slow": (lambda: log.append("slow"), 7), "fast": (lambda: log.append("fast"), 30)}
    samples = interleaved_samples_ms(calls, rounds=3, warmup=2)
    assert {k: len(v) for k, v in samples.items()} == {"slow": 7, "fast": 30}
    timed = log[4:]  # after two warm-up calls of each
    assert timed.count("slow") == 7 and timed.count("fast") == 30
    switches = sum(a != b for a, b in itertools.pairwise(timed))
    assert switches == 5  # three rounds of (slow block, fast block)
    assert all(np.all(v >= 0) for v in samples.values())
    stats = time_interleaved({"x": (lambda: None, 10)})["x"]
    assert 0 <= stats["p50_ms"] <= stats["p99_ms"]
