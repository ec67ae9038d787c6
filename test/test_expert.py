"""Scripted Avoiding expert: all 24 paths reachable and labelled correctly; rollouts work end to end."""

from __future__ import annotations

import numpy as np
import pytest

from vdd_ros.tasks.avoiding.env import FINISH_Y, AvoidingEnv
from vdd_ros.tasks.avoiding.expert import ExpertConfig, ScriptedExpertPolicy, plan_actions
from vdd_ros.tasks.avoiding.readout import NUM_PATHS, path_from_trajectory
from vdd_ros.tasks.modes import balanced_labels, sample_labels
from vdd_ros.tasks.registry import get_task
from vdd_ros.tasks.rollout import run_rollouts

AVOIDING = get_task("avoiding")
UNIFORM = AVOIDING.mode_distributions()["uniform"]


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
    labels = balanced_labels(48, UNIFORM, np.random.default_rng(1))
    assert np.bincount(labels, minlength=NUM_PATHS).tolist() == [2] * NUM_PATHS
    demos = AVOIDING.generate_demos(labels, np.random.default_rng(2))
    assert [d.mode for d in demos] == labels.tolist()
    for d in demos:
        assert d.observations.shape == (len(d.actions), AVOIDING.obs_dim) and d.actions.shape[1] == AVOIDING.act_dim
        assert len(d.actions) <= ExpertConfig().max_steps
        np.testing.assert_allclose(d.observations[1:, :2] - d.observations[:-1, :2], d.actions[:-1], atol=1e-6)


def test_skewed_distribution_and_balanced_counts() -> None:
    p = AVOIDING.mode_distributions()["skewed"]
    assert p.sum() == pytest.approx(1.0) and p[0] > p[-1]
    counts = np.bincount(balanced_labels(100, p, np.random.default_rng(0)), minlength=NUM_PATHS)
    assert counts.sum() == 100 and np.all(np.abs(counts - 100 * p) < 1)
    with pytest.raises(ValueError, match="24 non-negative numbers"):
        sample_labels(5, np.ones(24), np.random.default_rng(0))


def test_scripted_expert_rollouts(tmp_path) -> None:
    import matplotlib.image

    result = run_rollouts(ScriptedExpertPolicy(), "avoiding", episodes=48, seed=0, batch=24)
    assert result.success_rate == 1.0 and result.extras == {"collisions": 0, "invalid_codes": 0}
    assert sum(result.mode_counts) == 48 and result.entropy > 0.85 and result.timeouts == 0
    assert result.mode_proportions == pytest.approx([c / 48 for c in result.mode_counts])
    assert (result.modes >= 0).all() and np.bincount(result.modes, minlength=24).tolist() == result.mode_counts
    for t in result.trajectories:  # observations from reset to the step that crossed the finish line
        np.testing.assert_allclose(t[0], np.tile(t[0, :2], 2))
        assert t[-1, 3] > FINISH_Y and (t[:-1, 3] <= FINISH_Y).all()
    again = run_rollouts(ScriptedExpertPolicy(), "avoiding", episodes=48, seed=0, batch=24)
    assert again.mode_counts == result.mode_counts  # reproducible from the seed
    summary = result.to_json_dict()
    assert "trajectories" not in summary and summary["episodes"] == 48 and summary["task"] == "avoiding"
    assert summary["collisions"] == 0 and summary["mode_counts"] == result.mode_counts
    result.plot(tmp_path / "traj.png", "expert")
    image = matplotlib.image.imread(tmp_path / "traj.png")
    assert image.shape[:2] == (720, 600)  # 5 x 6 in at 120 dpi
    assert len(np.unique(image.reshape(-1, image.shape[-1]), axis=0)) > 50  # coloured paths, not a blank canvas


def test_expert_config_loads_from_yaml(tmp_path) -> None:
    from vdd_ros.util.config import load_config

    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text("expert:\n  speed_range: [0.9, 1.1]\n  lateral_noise: 0.001\n")
    cfg = load_config(ExpertConfig, cfg_file, section="expert")
    assert cfg.speed_range == (0.9, 1.1) and cfg.lateral_noise == 0.001 and cfg.x_jitter == 0.01
