"""The ROS-free serving core and vetting: admission, staleness, draws, contained ticks, safe outputs."""

from __future__ import annotations

import json
import math
import pathlib
import time

import numpy as np
import pytest
from hostile_policies import expert_out_of_range_beyond, slow_policy

from vdd_ros.export.contract import ContractError
from vdd_ros.export.random_policy import export_random_policy
from vdd_ros.runtime.deadline_loop import DeadlineLoop
from vdd_ros.runtime.onnx_policy import load_policy
from vdd_ros.runtime.serving import Rejection, ServingConfig, ServingCore, Source, State

OBS = np.array([0.5, -0.2, 0.5, -0.2])
SEC = 1_000_000_000


@pytest.fixture(scope="module")
def policy_a(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("policies") / "a.onnx"
    export_random_policy(path, policy_id="policy-a")
    return load_policy(str(path))


def make_core(policy, **overrides) -> ServingCore:
    config = dict(stale_timeout_s=0.2, action_min=(-0.03, -0.03), action_max=(0.03, 0.03), sampling_mode="sample")
    config.update(overrides)
    return ServingCore(policy, ServingConfig(**config))


def test_admission_rules_count_each_rejection(policy_a) -> None:
    core = make_core(policy_a)
    now = 100 * SEC
    assert core.offer(OBS, now - SEC, now, 0.0) is None
    assert core.offer(OBS[:3], now, now, 0.0) == Rejection.INVALID
    assert core.offer(np.array([math.nan, 0, 0, 0]), now, now, 0.0) == Rejection.INVALID
    assert core.offer(OBS, now + 2 * SEC, now, 0.0) == Rejection.FUTURE_STAMP  # beyond max_future_stamp_s 0.5
    assert core.offer(OBS, now - SEC, now, 0.0) == Rejection.DUPLICATE_STAMP
    assert core.offer(OBS, now - 2 * SEC, now, 0.0) == Rejection.OLD_STAMP
    assert core.offer(OBS, now + SEC // 10, now, 0.0) is None  # slightly ahead: within the tolerance
    assert core.offer(OBS, 0, now, 0.0) is None  # unstamped: accepted, not ordered
    assert core.offer(OBS, 5, now, 0.0, check_stamp=False) is None
    counts = {r: core.counters[r.value] for r in Rejection}
    assert counts == {
        Rejection.INVALID: 2,
        Rejection.OVERSIZED: 0,
        Rejection.FUTURE_STAMP: 1,
        Rejection.OLD_STAMP: 1,
        Rejection.DUPLICATE_STAMP: 1,
    }


def test_an_announced_episode_start_may_go_back_in_time(policy_a) -> None:
    """A simulator reset restarts its clock: the observation announced as the new episode is taken."""
    core = make_core(policy_a)
    now = 100 * SEC
    assert core.offer(OBS, 50 * SEC, now, 0.0) is None
    core.episode_start(10 * SEC)
    assert core.offer(OBS, 10 * SEC, now, 0.0) is None
    assert core.offer(OBS, 11 * SEC, now, 0.0) is None  # ordering continues from the reset
    assert core.offer(OBS, 10 * SEC + 1, now, 0.0) == Rejection.OLD_STAMP


def test_one_draw_per_observation_and_stale_safe_action(policy_a) -> None:
    core = make_core(policy_a)
    assert core.tick(0.0) is None  # nothing observed: nothing to answer
    core.offer(OBS, SEC, 2 * SEC, received_s=1.0)
    first = core.tick(1.001)
    again = core.tick(1.002)
    assert first.source == Source.POLICY and first.fresh and not again.fresh
    np.testing.assert_array_equal(first.action, again.action)  # ticks in between repeat the sample
    core.offer(OBS, SEC + 1, 2 * SEC, received_s=1.01)
    assert core.tick(1.011).fresh
    stale = core.tick(1.5)  # 0.49 s after the newest observation, timeout 0.2 s
    assert stale.source == Source.ZERO and not stale.action.any()
    assert core.counters["stale"] == 1 and core.state(1.5)[0] == State.STALE


def test_every_published_command_is_clamped(policy_a) -> None:
    core = make_core(policy_a, stale_behavior="hold", action_min=(-1e-4, -1e-4), action_max=(1e-4, 1e-4))
    core.offer(OBS, SEC, 2 * SEC, received_s=1.0)
    for t in (1.0, 1.5, 1.6):  # policy, then held while stale
        d = core.tick(t)
        assert np.all(np.abs(d.action) <= 1e-4 + 1e-9), d
    assert d.source == Source.HOLD


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"action_min": (math.nan, math.nan)}, "action_min must be finite"),
        ({"action_min": (0.1, 0.1), "action_max": (0.1, 0.2)}, "below action_max"),
        ({"action_min": (0.01, 0.01), "action_max": (0.02, 0.02)}, "needs zero inside"),
        ({"action_min": (0.1,)}, "has 1 entries"),
        ({"stale_timeout_s": math.nan}, "stale_timeout_s must be a finite number > 0"),
        ({"stale_timeout_s": -1.0}, "stale_timeout_s must be a finite number > 0"),
        ({"max_action_step": math.inf}, "max_action_step must be finite"),
        ({"stale_behavior": "explode"}, "stale_behavior must be one of"),
        ({"noise_correlation": 1.0}, "noise_correlation must be in [0, 1)"),
    ],
)
def test_unsafe_settings_are_refused_with_the_setting_named(policy_a, overrides, message) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        make_core(policy_a, **overrides)


def test_zero_outside_the_box_is_fine_when_the_safe_action_is_hold(policy_a) -> None:
    make_core(policy_a, stale_behavior="hold", action_min=(0.01, 0.01), action_max=(0.02, 0.02))


def test_a_failing_tick_latches_error_and_a_swap_recovers(tmp_path: pathlib.Path, policy_a) -> None:
    """Fine at every vetting probe, out of range on real inputs: contained, safe, counted."""
    hostile = load_policy(expert_out_of_range_beyond(tmp_path / "h.onnx", threshold=5.0, policy_id="hostile"))
    core = make_core(hostile, action_min=(), action_max=())
    core.offer(OBS, SEC, 2 * SEC, received_s=1.0)
    assert core.tick(1.0).source == Source.POLICY
    core.offer(np.full(4, 10.0), SEC + 1, 2 * SEC, received_s=1.01)  # a real input beyond the probes
    d = core.tick(1.01)
    assert d.source == Source.ZERO and d.expert == -1
    state, reason = core.state(1.01)
    assert state == State.ERROR and "expert index 100 outside [0, 8)" in reason
    core.offer(OBS, SEC + 2, 2 * SEC, received_s=1.02)  # back to ordinary input: still latched
    assert core.tick(1.02).source == Source.ZERO
    assert core.counters["tick_errors"] == 1
    core.update(policy_a)
    d = core.tick(1.03)
    assert d.source == Source.POLICY and d.policy is policy_a and core.state(1.03)[0] == State.RUNNING


def test_vetting_probes_beyond_the_mean(tmp_path: pathlib.Path) -> None:
    """The out-of-range expert within mean +/- 3 std is found by the spread of probes."""
    with pytest.raises(ContractError, match=r"expert index 100 outside \[0, 8\) on probe window"):
        load_policy(expert_out_of_range_beyond(tmp_path / "h.onnx", threshold=2.0))


def test_vetting_rejects_a_policy_too_slow_for_the_rate(tmp_path: pathlib.Path) -> None:
    path = slow_policy(tmp_path / "slow.onnx", width=400)
    loaded = load_policy(path)  # no budget: accepted
    with pytest.raises(ContractError, match=r"inference p99 \d+\.\d+ ms .* exceeds the budget of 0\.050 ms"):
        load_policy(path, latency_budget_fraction=0.5, control_period_s=1e-4)
    assert loaded.contract.policy_id == "random"


def test_hash_and_graph_come_from_the_same_read(tmp_path: pathlib.Path) -> None:
    """Replacing the file right after the load cannot change what is reported as running."""
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    export_random_policy(a, policy_id="a")
    export_random_policy(b, policy_id="b", seed=3)
    loaded = load_policy(str(a))
    a.write_bytes(b.read_bytes())
    assert loaded.contract.policy_id == "a"
    assert loaded.sha256 != load_policy(str(a)).sha256


def test_deadline_loop_survives_a_raising_tick() -> None:
    calls: list[int] = []

    def tick() -> None:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")

    loop = DeadlineLoop(0.005, tick)
    loop.start()
    try:
        for _ in range(1000):  # up to 10 s on a loaded machine
            if len(calls) >= 5:
                break
            time.sleep(0.01)
    finally:
        loop.stop()
    assert len(calls) >= 5 and loop.errors == 1 and "boom" in loop.last_error


def test_episode_start_resets_for_stamped_and_unstamped_observations(policy_a) -> None:
    """Whichever arrives first: the announced observation (stamped) or the next one admitted (unstamped)."""
    core = make_core(policy_a)
    now = 100 * SEC
    core.offer(OBS, 50 * SEC, now, received_s=1.0)
    core.tick(1.0)
    core.offer(OBS + 1.0, 60 * SEC, now, received_s=1.01)
    core.tick(1.01)
    history = core._bundle.window.current().copy()
    assert not np.allclose(history[0, 0], history[0, -1])  # two different observations in the window
    core.offer(OBS, 10 * SEC, now, received_s=1.02)  # a reset simulator clock: old until announced
    core.episode_start(10 * SEC)  # announced after the fact: the next tick starts the episode anyway
    assert core.offer(OBS, 10 * SEC, now, received_s=1.03) is None
    core.tick(1.03)
    np.testing.assert_allclose(core._bundle.window.current()[0], np.tile(OBS, (5, 1)))  # padded afresh
    core.episode_start(0)  # unstamped (array) input: the next observation admitted opens the episode
    core.offer(OBS + 2.0, 99, now, received_s=1.04, check_stamp=False)
    core.tick(1.04)
    np.testing.assert_allclose(core._bundle.window.current()[0], np.tile(OBS + 2.0, (5, 1)))


def test_a_swap_keeps_the_window_history(tmp_path: pathlib.Path, policy_a) -> None:
    b = tmp_path / "b.onnx"
    export_random_policy(b, policy_id="b", seed=1, num_experts=4)
    core = make_core(policy_a)
    for i in range(3):
        core.offer(OBS + i, SEC + i, 2 * SEC, received_s=1.0 + i / 100)
        core.tick(1.0 + i / 100)
    before = core._bundle.window.current().copy()
    core.update(load_policy(str(b)), mode="greedy")
    assert core.sampling_mode == "greedy" and core.policy.contract.policy_id == "b"
    np.testing.assert_array_equal(core._bundle.window.current(), before)
    assert core.tick(1.03).policy.contract.policy_id == "b"


@pytest.fixture(scope="module")
def chunked(tmp_path_factory: pytest.TempPathFactory):
    """Chunks of 4 actions, 3 executed per inference."""
    path = tmp_path_factory.mktemp("policies") / "chunked.onnx"
    export_random_policy(path, policy_id="chunked", act_chunk=4, act_exec=3, control_period_s=0.01)
    return load_policy(str(path))


def _feed(core: ServingCore, k: int, received_s: float) -> None:
    assert core.offer(OBS + 0.1 * k, (k + 1) * SEC // 100, 10 * SEC, received_s) is None


def test_a_chunk_is_executed_one_action_per_observation_then_replanned(chunked) -> None:
    """Inference on observations 0, 3, 6: in between, the plan's next action with the plan's expert."""
    core = make_core(chunked, sampling_mode="sample", action_min=(), action_max=())
    decisions = []
    for k in range(7):
        _feed(core, k, received_s=1.0 + 0.01 * k)
        decisions.append(core.tick(1.0 + 0.01 * k))
        repeat = core.tick(1.0 + 0.01 * k + 0.001)  # a tick before the next observation repeats the action
        assert np.array_equal(repeat.action, decisions[-1].action) and not repeat.fresh
    assert [d.chunk_step for d in decisions] == [0, 1, 2, 0, 1, 2, 0]
    assert all(d.action.shape == (2,) and d.source == Source.POLICY for d in decisions)
    for start in (0, 3):
        plan = decisions[start : start + 3]
        assert len({d.expert for d in plan}) == 1  # one expert per chunk, never a mix
        assert len({tuple(d.action) for d in plan}) == 3  # the chunk's successive actions
    assert len(core.inference_latency) == 3


def test_a_gap_a_new_episode_or_a_swap_replans_at_once(chunked, tmp_path: pathlib.Path) -> None:
    core = make_core(chunked, action_min=(), action_max=())
    _feed(core, 0, received_s=1.0)
    assert core.tick(1.0).chunk_step == 0
    _feed(core, 1, received_s=1.01)
    assert core.tick(1.01).chunk_step == 1
    _feed(core, 2, received_s=1.2)  # 190 ms without observations: more than twice the 10 ms period
    assert core.tick(1.2).chunk_step == 0
    _feed(core, 3, received_s=1.21)
    assert core.tick(1.21).chunk_step == 1
    core.episode_start(5 * SEC)
    _feed(core, 4, received_s=1.22)
    assert core.tick(1.22).chunk_step == 0
    _feed(core, 5, received_s=1.23)
    assert core.tick(1.23).chunk_step == 1
    other = tmp_path / "other.onnx"
    export_random_policy(other, policy_id="other", act_chunk=4, act_exec=3, control_period_s=0.01, seed=5)
    core.update(load_policy(str(other)))
    d = core.tick(1.235)  # no new observation: the new policy plans from the same window at once
    assert d.chunk_step == 0 and d.policy.contract.policy_id == "other"


def test_a_version_1_contract_executes_one_action_per_inference(policy_a) -> None:
    from vdd_ros.export.contract import PolicyContract

    legacy = json.loads(policy_a.contract.to_json())
    legacy.pop("act_exec")
    legacy["schema_version"] = 1
    assert PolicyContract.from_json(json.dumps(legacy)).act_exec == 1
    with pytest.raises(ContractError, match="unknown field"):
        PolicyContract.from_json(json.dumps({**legacy, "act_exec": 1}))
    with pytest.raises(ContractError, match=r"act_exec 5 is outside \[1, 1\]"):
        PolicyContract.from_json(json.dumps({**legacy, "schema_version": 2, "act_exec": 5}))


def test_in_process_rollouts_execute_chunks_like_the_controller(chunked) -> None:
    """OnnxPolicy: one inference per act_exec steps, the plan's actions in order in between."""
    from vdd_ros.runtime.onnx_policy import OnnxPolicy

    policy = OnnxPolicy(chunked.path, mode="greedy", loaded=chunked)
    policy.reset(2, seed=0)
    policy.visited = []
    observations = [np.stack([OBS + 0.1 * k, OBS - 0.1 * k]).astype(np.float32) for k in range(4)]
    actions = [policy.act(obs) for obs in observations]
    assert len(policy.visited) == 2  # planned at steps 0 and 3
    zeros = (np.zeros((2, 8), np.float32), np.zeros((2, 8), np.float32))
    first, _, _ = chunked.run(policy.visited[0], *zeros)
    second, _, _ = chunked.run(policy.visited[1], *zeros)
    assert all(np.array_equal(actions[k], first[:, k]) for k in range(3))
    assert np.array_equal(actions[3], second[:, 0])
