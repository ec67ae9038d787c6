"""The Task extension point: registry lookups, and a toy task that runs through run_rollouts end to end.

The toy task is defined here with nothing but the documented interface (docs/tasks.md),
which proves that interface is enough for rollouts, metrics, progress and plots.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from vdd_ros.tasks import registry, rollout
from vdd_ros.tasks.base import StepResult, Task
from vdd_ros.tasks.registry import UnknownTaskError, get_task, task_names
from vdd_ros.tasks.rollout import run_rollouts
from vdd_ros.util.progress import RolloutProgress


class LineEnv:
    """A point on a line starts at 0; reaching -1 (mode "left") or +1 (mode "right") is success."""

    def __init__(self, n: int) -> None:
        self.n = n

    def reset(self) -> np.ndarray:
        self.x = np.zeros(self.n)
        self.steps = np.zeros(self.n, dtype=np.int64)
        self.done = np.zeros(self.n, dtype=bool)
        return self.x[:, None].astype(np.float32)

    def step(self, actions: np.ndarray) -> StepResult:
        live = ~self.done
        self.x[live] += np.clip(actions[live, 0], -0.1, 0.1)
        self.steps[live] += 1
        success = np.abs(self.x) >= 1.0 - 1e-9
        self.done |= success | (self.steps >= ToyTask.max_steps)
        return StepResult(
            obs=self.x[:, None].astype(np.float32),
            done=self.done.copy(),
            success=success,
            failed=np.zeros(self.n, dtype=bool),
            mode=np.where(success, (self.x > 0).astype(np.int64), -1),
            steps=self.steps.copy(),
        )


class ToyTask(Task):
    name = "toy_line"
    obs_names = ("x",)
    act_names = ("dx",)
    control_period_s = 0.1
    max_steps = 30
    mode_names = ("left", "right")
    action_low = np.array([-0.1])
    action_high = np.array([0.1])

    def make_env(self, n: int, seed: int = 0, tracking_noise: float = 0.0, rollouts_per_context: int = 16) -> LineEnv:
        return LineEnv(n)

    def plot_trajectories(self, trajectories, modes, path, title: str) -> None:
        path.write_text(
            json.dumps({"title": title, "lengths": [len(t) for t in trajectories], "modes": modes.tolist()})
        )


class AlternatingPolicy:
    """Even streams go left, odd streams right, at full speed; ``speed`` 0 never arrives."""

    name = "alternating"

    def __init__(self, speed: float = 0.1) -> None:
        self.speed = speed

    def reset(self, n: int, seed: int) -> None:
        self.direction = np.where(np.arange(n) % 2 == 0, -1.0, 1.0)

    def act(self, obs: np.ndarray) -> np.ndarray:
        assert obs.shape == (len(self.direction), 1)
        return (self.speed * self.direction)[:, None]


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> Task:
    monkeypatch.setattr(registry, "_ENTRIES", dict(registry._ENTRIES))  # registrations end with the test
    return registry.register(ToyTask())


def test_unknown_task_names_the_known_ones(toy: Task) -> None:
    with pytest.raises(UnknownTaskError) as info:
        get_task("avoidin")
    assert str(info.value) == "unknown task 'avoidin'; known tasks: avoiding, pushing, toy_line"
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    assert task_names() == ["avoiding", "pushing", "toy_line"]
    assert get_task("toy_line") is toy and get_task(toy) is toy


def test_register_refuses_duplicates_and_inconsistent_tasks(toy: Task) -> None:
    with pytest.raises(ValueError, match="already registered"):
        registry.register(ToyTask())

    class Broken(ToyTask):
        name = "broken"
        mode_names = ("a", "a")
        action_low = np.array([0.1, 0.0])

    with pytest.raises(ValueError, match=r"mode_names must be non-empty and unique; action_low < action_high"):
        registry.register(Broken())
    assert "broken" not in task_names()


def test_toy_task_runs_through_rollouts_end_to_end(toy: Task, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[RolloutProgress] = []
    monkeypatch.setattr(rollout, "PROGRESS_INTERVAL_S", 0.0)  # report every step
    result = run_rollouts(AlternatingPolicy(), "toy_line", episodes=10, seed=3, batch=4, on_progress=events.append)
    assert result.task is toy and result.episodes == 10
    assert result.success_rate == 1.0 and result.timeouts == 0 and result.mean_steps == 10.0
    assert result.mode_counts == [5, 5] and result.mode_proportions == [0.5, 0.5]
    assert result.entropy == pytest.approx(1.0) and result.kl_to_uniform == pytest.approx(0.0, abs=1e-12)
    assert result.modes.tolist() == [0, 1] * 5 and result.extras == {}
    assert [t.shape for t in result.trajectories] == [(11, 1)] * 10
    np.testing.assert_allclose(result.trajectories[1][:, 0], np.linspace(0.0, 1.0, 11), atol=1e-6)
    # progress: one event per step (10 steps per batch of 4, 4, 2), then the final one
    batches = [(0, 4), (4, 8), (8, 10)]  # episodes done before / after each batch's 10 steps
    expected = [p for before, after in batches for p in [(before, before)] * 9 + [(after, after)]] + [(10, 10)]
    assert [(e.done, e.successes) for e in events] == expected and {e.total for e in events} == {10}
    result.plot(tmp_path / "toy.json", "toy")
    assert json.loads((tmp_path / "toy.json").read_text()) == {
        "title": "toy",
        "lengths": [11] * 10,
        "modes": [0, 1] * 5,
    }
    summary = result.to_json_dict()
    assert summary["task"] == "toy_line" and summary["mode_counts"] == [5, 5] and summary["score"] == pytest.approx(1.0)


def test_time_outs_and_no_successes(toy: Task) -> None:
    events: list[RolloutProgress] = []
    result = run_rollouts(AlternatingPolicy(speed=0.0), toy, episodes=3, on_progress=events.append)
    assert result.success_rate == 0.0 and result.timeouts == 3 and result.mean_steps == ToyTask.max_steps
    assert result.mode_counts == [0, 0] and result.entropy == 0.0 and math.isnan(result.kl_to_uniform)
    assert result.to_json_dict()["kl_to_uniform"] is None
    assert events == [RolloutProgress(3, 3, 0)]  # a fast run reports once, at the end


def test_a_task_without_an_expert_says_so(toy: Task) -> None:
    assert dataclasses.is_dataclass(StepResult) and list(toy.mode_distributions()) == ["uniform"]
    with pytest.raises(NotImplementedError, match="toy_line"):
        toy.generate_demos(np.array([0, 1]), np.random.default_rng(0))
