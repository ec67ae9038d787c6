"""Avoiding: dynamics, collisions (including tunnelling), termination, the D3IL mode read-out, its Task entry."""

from __future__ import annotations

import numpy as np
import pytest

from vdd_ros.tasks.avoiding.env import MAX_ACTION, MAX_STEPS, START, AvoidingEnv, segment_clearance
from vdd_ros.tasks.avoiding.readout import decode_path, path_from_trajectory, update_mode_bits
from vdd_ros.tasks.registry import get_task


def _run(env: AvoidingEnv, action: np.ndarray, steps: int = MAX_STEPS):
    res = None
    for _ in range(steps):
        res = env.step(np.broadcast_to(action, (env.n, 2)))
        if res.done.all():
            break
    return res


def test_reset_starts_at_start_point() -> None:
    obs = AvoidingEnv(3).reset()
    assert obs.shape == (3, 4) and obs.dtype == np.float32
    np.testing.assert_allclose(obs, np.tile(np.r_[START, START], (3, 1)), atol=1e-7)


def test_tracker_converges_with_first_order_lag() -> None:
    env = AvoidingEnv(1)
    env.reset()
    res = env.step(np.array([[0.0, -0.01]]))  # move away from obstacles
    np.testing.assert_allclose(res.obs[0, :2], START + np.array([0.0, -0.01]), atol=1e-6)
    lag = res.obs[0, 3] - res.obs[0, 1]
    np.testing.assert_allclose(lag, 0.01 * np.exp(-0.035 / 0.05), atol=1e-6)


def test_actions_are_clipped() -> None:
    env = AvoidingEnv(1)
    env.reset()
    res = env.step(np.array([[1.0, -1.0]]))
    np.testing.assert_allclose(res.obs[0, :2], START + np.array([MAX_ACTION, -MAX_ACTION]), atol=1e-6)


def test_straight_up_through_row_one_collides() -> None:
    env = AvoidingEnv(1)
    env.reset()
    res = _run(env, np.array([0.0, 0.01]))  # the start x (0.525) is 0.025 from the row-1 centre
    assert res.done[0] and res.collided[0] and not res.success[0]
    assert -0.16 < env.actual[0, 1] < -0.10  # stopped at the row-1 obstacle


def test_swept_segment_catches_tunnelling() -> None:
    p0 = np.array([[0.5, -0.16]])
    p1 = np.array([[0.5, -0.04]])  # both ends clear of the row-1 obstacle, the segment is not
    assert segment_clearance(p0, p0)[0] > 0 and segment_clearance(p1, p1)[0] > 0
    assert segment_clearance(p0, p1)[0] < 0
    env = AvoidingEnv(1)
    env.reset()
    env.actual[:] = p0
    env.desired[:] = [[0.5, 0.08]]  # far-off command: the tracker jumps from y=-0.16 to about -0.04 in one tick
    res = env.step(np.zeros((1, 2)))
    assert env.actual[0, 1] > -0.06
    assert res.collided[0] and res.done[0]


def test_finished_episodes_ignore_actions_and_timeout() -> None:
    env = AvoidingEnv(2)
    env.reset()
    res = _run(env, np.array([0.0, 0.0]))
    assert res.done.all() and not res.success.any() and not res.collided.any()
    assert (res.steps == MAX_STEPS).all()
    frozen = res.obs.copy()
    res = env.step(np.full((2, 2), 0.03))
    np.testing.assert_array_equal(res.obs, frozen)
    assert (res.steps == MAX_STEPS).all()


def test_workspace_failure_is_optional() -> None:
    for flag in (False, True):
        env = AvoidingEnv(1, workspace_failure=flag)
        env.reset()
        res = _run(env, np.array([0.03, 0.0]), steps=30)
        assert res.left_workspace[0] == flag and res.done[0] == flag


def test_tracking_noise_is_seeded() -> None:
    a, b = AvoidingEnv(4, tracking_noise=1e-3, seed=7), AvoidingEnv(4, tracking_noise=1e-3, seed=7)
    a.reset()
    b.reset()
    act = np.zeros((4, 2))
    np.testing.assert_array_equal(a.step(act).obs, b.step(act).obs)
    assert np.ptp(a.step(act).obs[:, 2]) > 0


def test_mode_bits_and_row3_quirk() -> None:
    bits = np.zeros((4, 9), dtype=bool)
    update_mode_bits(bits, np.array([[0.45, -0.10], [0.60, 0.09], [0.70, 0.30], [0.5, 0.27]]))
    assert bits[0, 0] and bits[1, 4] and bits[2, 8]
    assert bits[3, 8]  # quirk: exactly on the 0.5 bin edge falls through to the "x > 0.35" elif
    assert bits.sum() == 4


def test_decode_path_and_invalid_codes() -> None:
    bits = np.zeros((3, 9), dtype=bool)
    bits[0, [1, 3, 7]] = True  # i1=1, i2=1, i3=2
    bits[1, [0, 2]] = True  # row 3 not reached yet
    bits[2, [0, 1, 2, 5]] = True  # two row-1 bits
    path, invalid = decode_path(bits)
    assert path.tolist() == [12 + 4 + 2, -1, -1]
    assert invalid.tolist() == [False, False, True]


def test_path_from_trajectory() -> None:
    xy = np.array([[0.525, -0.28], [0.425, -0.10], [0.5, 0.08], [0.725, 0.27], [0.725, 0.36]])
    assert path_from_trajectory(xy) == 0 * 12 + 1 * 4 + 3
    assert path_from_trajectory(xy[:3]) == -1


def test_non_finite_action_is_an_error() -> None:
    env = AvoidingEnv(1)
    env.reset()
    with pytest.raises(ValueError, match="non-finite"):
        env.step(np.array([[np.nan, 0.0]]))


def test_registered_task_describes_the_env() -> None:
    task = get_task("avoiding")
    assert task.obs_names == ("desired_x", "desired_y", "actual_x", "actual_y")
    assert task.act_names == ("delta_x", "delta_y") and task.num_modes == 24
    assert (task.control_period_s, task.max_steps) == (0.035, MAX_STEPS)
    assert task.mode_names[12 + 4 + 2] == "gaps 1-1-2"
    env = task.make_env(3, seed=0)
    obs = env.reset()
    assert obs.shape == (3, task.obs_dim)
    # the declared action box is exactly what the env applies
    res = env.step(np.array([[1.0, -1.0], [-1.0, 1.0], [0.01, 0.0]]))
    applied = res.obs[:, :2] - obs[:, :2]
    np.testing.assert_allclose(applied[:2], [task.action_high * [1, -1], task.action_high * [-1, 1]], atol=1e-6)
    np.testing.assert_allclose(applied[2], [0.01, 0.0], atol=1e-6)


def test_step_result_carries_generic_and_avoiding_fields() -> None:
    env = get_task("avoiding").make_env(2)
    env.reset()
    res = _run(env, np.array([0.0, 0.01]))  # straight up: both collide with the row-1 obstacle
    assert res.failed.all() and res.collided.all() and not res.success.any()
    assert (res.mode == -1).all()  # stopped before the first row's band completed a path
