"""Pushing task: determinism, observation layout, success and mode read-out, expert preferences, demos, registry."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vdd_ros.tasks.base import NO_MODE
from vdd_ros.tasks.metrics import (
    context_entropy,
    context_mode_counts,
    context_preference_gap,
    context_preference_gap_floor,
)
from vdd_ros.tasks.pushing.env import BLOCK_XY, MAX_ACTION, PUSHER_START, PushingEnv, yaw_features
from vdd_ros.tasks.pushing.expert import PushingExpertPolicy, mode_probabilities, preferences_followed
from vdd_ros.tasks.pushing.readout import MODE_NAMES, ZONES, mode_from_blocks, mode_index
from vdd_ros.tasks.registry import get_task, task_names
from vdd_ros.tasks.rollout import run_rollouts

PUSHING = get_task("pushing")
# red block left of the green one, red nearer the pusher start (0.5, -0.2): red first and "direct" preferred
CONTEXT = np.array([[0.42, 0.0, 0.3], [0.68, 0.01, 1.1]])


def _run(env: PushingEnv, policy: PushingExpertPolicy, seed: int, contexts: np.ndarray | None = None) -> list:
    """Observations (T+1, n, obs_dim) of one batch run to the end, and the final StepResult."""
    policy.reset(env.n, seed)
    obs = env.reset(contexts)
    log = [obs]
    for _ in range(PUSHING.max_steps):
        res = env.step(policy.act(obs))
        obs = res.obs
        log.append(obs)
        if res.done.all():
            break
    return [np.stack(log), res]


def test_registry_lists_pushing_with_its_description() -> None:
    assert "pushing" in task_names()
    assert (PUSHING.obs_dim, PUSHING.act_dim, PUSHING.num_modes) == (12, 2, 4)
    assert PUSHING.control_period_s == 0.035 and PUSHING.mode_names == MODE_NAMES
    assert set(PUSHING.mode_distributions()) == {"uniform", "preferred"}


def test_same_seed_gives_bit_identical_observations() -> None:
    def run(seed: int) -> np.ndarray:
        env = PushingEnv(4, seed=seed, tracking_noise=0.001, rollouts_per_context=2)
        actions = np.random.default_rng(5).uniform(-MAX_ACTION, MAX_ACTION, (60, 4, 2))
        actions[:, :, 1] = np.abs(actions[:, :, 1])  # drift up into the blocks so contacts happen
        return np.stack([env.reset()] + [env.step(a).obs for a in actions])

    a, b = run(3), run(3)
    assert a.tobytes() == b.tobytes()
    assert not np.array_equal(a[0], run(4)[0])
    np.testing.assert_array_equal(a[0, 0, 4:], a[0, 1, 4:])  # episodes 0 and 1 share a context
    assert not np.array_equal(a[0, 0, 4:], a[0, 2, 4:])


def test_observation_layout_and_continuous_yaw() -> None:
    env = PushingEnv(1)
    obs = env.reset(CONTEXT[None])[0]
    np.testing.assert_allclose(obs[:4], np.tile(PUSHER_START, 2), atol=1e-6)
    for k, cols in enumerate(BLOCK_XY):
        np.testing.assert_allclose(obs[cols], CONTEXT[k, :2], atol=1e-6)
        np.testing.assert_allclose(obs[cols.stop : cols.stop + 2], yaw_features(CONTEXT[k, 2]), atol=1e-6)
    # a square looks the same every quarter turn, and the features wrap smoothly through it
    yaw = np.linspace(-3 * math.pi, 3 * math.pi, 2001)
    feats = yaw_features(yaw)
    np.testing.assert_allclose(yaw_features(yaw + math.pi / 2), feats, atol=1e-9)
    assert np.max(np.linalg.norm(np.diff(feats, axis=0), axis=1)) < 4 * (yaw[1] - yaw[0]) + 1e-9


def test_success_in_either_assignment_and_finished_episodes_ignore_actions() -> None:
    zones = np.concatenate([ZONES, np.zeros((2, 1))], axis=1)
    near = zones + np.array([[0.049, 0.0, 0.0], [0.0, 0.0, 0.0]])
    far = zones + np.array([[0.051, 0.0, 0.0], [0.0, 0.0, 0.0]])
    contexts = np.stack([zones, zones[::-1], near, far])
    env = PushingEnv(4)
    env.reset(contexts)
    res = env.step(np.zeros((4, 2)))
    assert res.success.tolist() == [True, True, True, False]
    assert res.mode.tolist() == [NO_MODE] * 4  # both blocks arrived in the same step: no order
    assert res.blocks_in_zone.tolist() == [2, 2, 2, 1] and not res.failed.any()
    frozen = res.obs.copy()
    res = env.step(np.full((4, 2), MAX_ACTION))
    np.testing.assert_array_equal(res.obs[:3], frozen[:3])
    assert res.steps.tolist() == [1, 1, 1, 2]


def test_each_scripted_mode_reads_out_as_itself() -> None:
    obs, res = _run(PushingEnv(4), PushingExpertPolicy(modes=np.arange(4)), seed=0, contexts=np.stack([CONTEXT] * 4))
    assert res.success.all() and res.mode.tolist() == [0, 1, 2, 3]
    for k in range(4):
        blocks = np.stack([obs[: res.steps[k] + 1, k, cols] for cols in BLOCK_XY], axis=1)
        assert mode_from_blocks(blocks) == k
        yaw = obs[: res.steps[k] + 1, k][:, [6, 7, 10, 11]]
        assert np.max(np.abs(np.diff(yaw, axis=0))) < 0.5  # pushed blocks turn, the features do not jump


def test_expert_preferences_are_unequal_and_depend_on_the_start() -> None:
    pusher = np.tile(PUSHER_START, (2, 1))
    mirrored = CONTEXT[::-1, :2]  # same places, colours swapped: green nearer, swapped assignment shorter
    p = mode_probabilities(pusher, np.stack([CONTEXT[:, :2], mirrored]))
    np.testing.assert_allclose(p[0], [0.75 * 0.65, 0.25 * 0.65, 0.75 * 0.35, 0.25 * 0.35])
    np.testing.assert_allclose(p[1], [0.25 * 0.35, 0.75 * 0.35, 0.25 * 0.65, 0.75 * 0.65])
    np.testing.assert_allclose(p.sum(axis=1), 1.0)

    obs = PushingEnv(1).reset(CONTEXT[None])
    np.testing.assert_allclose(PUSHING.expert_mode_probabilities(obs)[0], p[0], atol=1e-6)
    policy = PushingExpertPolicy()
    policy.reset(4000, seed=1)
    policy.act(np.repeat(obs, 4000, axis=0))
    freq = np.bincount(policy.chosen, minlength=4) / 4000
    np.testing.assert_allclose(freq, p[0], atol=0.03)
    starts = np.repeat(CONTEXT[None, :, :2], 4000, axis=0)
    followed = preferences_followed(policy.chosen, np.tile(PUSHER_START, (4000, 1)), starts)
    np.testing.assert_allclose(followed, [0.75, 0.65], atol=0.03)


def test_preferences_followed_splits_the_gap_into_the_two_choices() -> None:
    """Red nearer and direct shorter in CONTEXT, the reverse in its mirror; unlabelled episodes do not count."""
    blocks = np.stack([CONTEXT[:, :2], CONTEXT[::-1, :2]])
    red_direct, green_swapped = int(mode_index(False, False)), int(mode_index(True, True))
    green_direct = int(mode_index(True, False))
    modes = np.array([red_direct, green_swapped, green_direct, NO_MODE])
    starts, one = blocks[[0, 1, 0, 0]], PUSHER_START[None]
    # the green-first episode in CONTEXT pushed the farther block first
    assert preferences_followed(modes, np.tile(PUSHER_START, (4, 1)), starts) == pytest.approx((2 / 3, 1.0))
    assert preferences_followed(np.array([green_swapped]), one, blocks[:1]) == (0.0, 0.0)
    assert all(math.isnan(x) for x in preferences_followed(np.array([NO_MODE]), one, blocks[:1]))


def test_expert_rollouts_succeed_with_context_metrics(tmp_path) -> None:
    result = run_rollouts(PushingExpertPolicy(), "pushing", episodes=16, seed=0, tracking_noise=0.0005)
    assert result.success_rate == 1.0 and result.timeouts == 0
    extras = result.extras
    assert extras["contexts"] == 1 and extras["one_block_rate"] == 1.0
    assert 0.0 <= extras["context_entropy"] <= 1.0 and 0.0 <= extras["preference_gap"] <= 1.0
    assert 0.0 <= extras["nearer_first_share"] <= 1.0 and 0.0 <= extras["shorter_assignment_share"] <= 1.0
    np.testing.assert_allclose(np.sum(extras["expert_mode_probabilities"], axis=1), 1.0)
    result.plot(tmp_path / "traj.png")
    assert (tmp_path / "traj.png").read_bytes()[:4] == b"\x89PNG"


def test_context_metrics() -> None:
    contexts = np.array([[0.0], [0.0], [0.0], [0.0], [1.0], [1.0], [2.0]])
    keys, counts = context_mode_counts(contexts, np.array([0, 1, 0, -1, 2, 2, -1]), 4)
    assert keys.ravel().tolist() == [0.0, 1.0, 2.0]
    assert counts.tolist() == [[2, 1, 0, 0], [0, 0, 2, 0], [0, 0, 0, 0]]
    h = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)) / math.log(4)
    assert context_entropy(counts) == pytest.approx(h / 3)  # the context without success counts 0
    expected = np.array([[2 / 3, 1 / 3, 0, 0], [0, 0, 0.5, 0.5], [1, 0, 0, 0]])
    assert context_preference_gap(counts, expected) == pytest.approx(0.25)
    assert math.isnan(context_preference_gap(np.zeros((2, 4)), expected[:2]))


def test_preference_gap_floor_is_the_sampling_noise_of_an_exact_sampler() -> None:
    expert = np.array([[0.4875, 0.2625, 0.1625, 0.0875]])  # the expert's probabilities at one start
    floors = [context_preference_gap_floor(np.array([[n, 0, 0, 0]]), expert) for n in (16, 64, 256)]
    assert 0.13 < floors[0] < 0.19  # about 1/sqrt(n): 16 successes cannot measure a gap below ~0.16
    assert floors[0] > floors[1] > floors[2] and floors[1] == pytest.approx(floors[0] / 2, rel=0.15)
    # the floor depends on the success count per context, not on which modes were taken
    assert context_preference_gap_floor(np.array([[4, 4, 4, 4]]), expert) == pytest.approx(floors[0])
    assert math.isnan(context_preference_gap_floor(np.zeros((1, 4)), expert))


def test_rollouts_per_context_groups_episodes() -> None:
    env = PUSHING.make_env(12, seed=3, rollouts_per_context=4)
    env.reset()
    contexts = env.context.reshape(12, 6)
    assert len(np.unique(contexts, axis=0)) == 3
    assert all((contexts[k * 4 : k * 4 + 4] == contexts[k * 4]).all() for k in range(3))


def test_generated_demos_follow_labels_or_preferences() -> None:
    from vdd_ros.tasks.pushing.expert import PushingExpertConfig

    # without DART execution noise every recorded action is exactly the step the pusher target took
    exact = PushingExpertConfig(execution_noise=0)
    demos = PUSHING.generate_demos(np.array([3, NO_MODE]), np.random.default_rng(0), exact)
    assert demos[0].mode == 3 and 0 <= demos[1].mode < 4
    for d in demos:
        assert d.observations.shape == (len(d.actions), 12) and d.actions.shape[1] == 2
        assert len(d.actions) <= PUSHING.expert_config_type().max_steps
        np.testing.assert_allclose(d.observations[1:, :2] - d.observations[:-1, :2], d.actions[:-1], atol=1e-6)


def test_execution_noise_moves_the_pusher_but_records_the_experts_own_action() -> None:
    """DART: the executed step is perturbed, the recorded one is what the expert chose (and it corrects)."""
    from vdd_ros.tasks.pushing.expert import PushingExpertConfig

    config = PushingExpertConfig(execution_noise=0.002)
    demos = PUSHING.generate_demos(np.array([NO_MODE, NO_MODE]), np.random.default_rng(0), config)
    for d in demos:
        moved = d.observations[1:, :2] - d.observations[:-1, :2]
        off = np.abs(moved - d.actions[:-1]).max(axis=1)
        assert np.median(off) > 5e-4  # the executed steps were perturbed ...
        assert np.all(np.abs(d.actions) <= MAX_ACTION + 1e-7)  # ... the recorded ones stay the expert's


def test_collect_demos_writes_a_pushing_dataset(tmp_path, capsys) -> None:
    from vdd_ros.cli.collect_demos import main
    from vdd_ros.data.dataset import load_dataset

    out = tmp_path / "pushing.safetensors"
    assert main(["task=pushing", "episodes=4", "mode_distribution=preferred", f"output={out}"]) == 0
    ds = load_dataset(out)
    assert ds.task == "pushing" and len(ds.actions) == 4 and tuple(ds.obs_names) == PUSHING.obs_names
    assert all(0 <= m < 4 for m in ds.mode_labels) and ds.provenance["path_distribution"] is None
    assert ds.provenance["expert_config"]["push_speed"] == PUSHING.expert_config_type().push_speed
    assert main(["task=pushing", "expert.nominal_speed=0.3", f"output={tmp_path / 'x.safetensors'}"]) == 2
    assert "set the Avoiding expert" in capsys.readouterr().err
