"""Scripted expert: all 24 paths are reachable and labelled correctly; the rollout pipeline works end to end."""

from __future__ import annotations

import numpy as np
import pytest

from vdd_ros.tasks.avoiding import NUM_PATHS, AvoidingEnv, path_from_trajectory
from vdd_ros.tasks.expert import (
    ExpertConfig,
    ScriptedExpertPolicy,
    balanced_paths,
    generate_demos,
    plan_actions,
    skewed_path_distribution,
)
from vdd_ros.tasks.rollout import plot_trajectories, run_rollouts


def test_every_nominal_path_succeeds_and_reads_out_as_itself() -> None:
    nominal = ExpertConfig(x_jitter=0.0, lateral_noise=0.0, speed_range=(1.0, 1.0))
    rng = np.random.default_rng(0)
    plans = [plan_actions(k, rng, nominal) for k in range(NUM_PATHS)]
    env = AvoidingEnv(NUM_PATHS)
    env.reset()
    xy = [env.actual.copy()]
    for t in range(max(len(p) for p in plans) + 20):
        env.step(np.stack([p[t] if t < len(p) else np.zeros(2) for p in plans]))
        xy.append(env.actual.copy())
    assert env.success.all() and not env.collided.any()
    assert (env.min_clearance >= nominal.min_clearance).all()
    traj = np.stack(xy, axis=1)
    assert [path_from_trajectory(traj[k, : env.steps[k] + 1]) for k in range(NUM_PATHS)] == list(range(NUM_PATHS))


def test_generated_demos_are_valid_and_short() -> None:
    labels = balanced_paths(48, np.random.default_rng(1))
    assert np.bincount(labels, minlength=NUM_PATHS).tolist() == [2] * NUM_PATHS
    demos = generate_demos(labels, np.random.default_rng(2))
    assert [d.path for d in demos] == labels.tolist()
    for d in demos:
        assert d.observations.shape == (len(d.actions), 4) and d.actions.shape[1] == 2
        assert len(d.actions) <= ExpertConfig().max_steps
        np.testing.assert_allclose(d.observations[1:, :2] - d.observations[:-1, :2], d.actions[:-1], atol=1e-6)


def test_skewed_distribution_and_balanced_counts() -> None:
    p = skewed_path_distribution()
    assert p.sum() == pytest.approx(1.0) and p[0] > p[-1]
    counts = np.bincount(balanced_paths(100, np.random.default_rng(0), p), minlength=NUM_PATHS)
    assert counts.sum() == 100 and np.all(np.abs(counts - 100 * p) < 1)


def test_scripted_expert_rollouts(tmp_path) -> None:
    result = run_rollouts(ScriptedExpertPolicy(), episodes=48, seed=0, batch=24)
    assert result.success_rate == 1.0 and result.collisions == 0 and result.invalid_codes == 0
    assert sum(result.mode_counts) == 48 and result.entropy > 0.85
    again = run_rollouts(ScriptedExpertPolicy(), episodes=48, seed=0, batch=24)
    assert again.mode_counts == result.mode_counts  # reproducible from the seed
    summary = result.to_json_dict()
    assert "trajectories" not in summary and summary["episodes"] == 48
    plot_trajectories(result, tmp_path / "traj.png", "expert")
    assert (tmp_path / "traj.png").stat().st_size > 1000


def test_expert_config_loads_from_yaml(tmp_path) -> None:
    from vdd_ros.util.config import load_config

    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text("expert:\n  speed_range: [0.9, 1.1]\n  lateral_noise: 0.001\n")
    cfg = load_config(ExpertConfig, cfg_file, section="expert")
    assert cfg.speed_range == (0.9, 1.1) and cfg.lateral_noise == 0.001 and cfg.x_jitter == 0.01
