"""bag_record over real DDS -> import_bag: the dataset holds exactly the episodes the simulator ran.

One controller (the shipped policy, answering each observation) drives task_sim in real time
for a few episodes while ``python -m vdd_ros.harness.bag_record`` records the loop into MCAP.
The bag must be readable without registering any type (the package's EpisodeResult definition
is stored in it), and the shipped mapping must cut it into the simulator's episodes, each as
long as the simulator says (within a step or two where a busy machine stalled the real-time
simulator). Rows pair each observation with the command that answered it, which Avoiding lets
us check: the next desired position is this one plus the (clipped) command.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
import time

import numpy as np
from conftest import REPO
from rosbags.highlevel import AnyReader

from vdd_ros.cli.common import narrow
from vdd_ros.cli.import_bag import ImportBagConfig
from vdd_ros.data.bag.config import BagMapping
from vdd_ros.data.bag.importer import import_bags
from vdd_ros.harness.process import ros_params
from vdd_ros.util.config import load_config

EPISODES = 3
STOP = ["--stop-topic", "/episode_result", "--stop-count", str(EPISODES)]
TOPICS = [  # typed: subscribed before the nodes start, so the first episode is recorded whole
    "/observation:sensor_msgs/msg/JointState",
    "/command:std_msgs/msg/Float64MultiArray",
    "/episode_start:std_msgs/msg/Header",
    "/episode_result:vdd_ros_msgs/msg/EpisodeResult",
]
MAX_ACTION = 0.03
# The demonstrator answers each observation once (sync) and ticks on its own only after 1.5 s of
# silence: a simulator stalled by a busy machine gets no extra commands that no step used.
CONTROLLER = {
    "sync_to_observations": True,
    "control_rate_hz": 1.0,
    "stale_timeout_s": 2.0,
    "latency_budget_fraction": 1.0,
    "sampling_mode": "mean",
}


def _wait_for_line(log: pathlib.Path, text: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in (log.read_text() if log.exists() else ""):
        assert proc.poll() is None, f"recorder exited early:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"no {text!r} from the recorder after {timeout} s:\n{log.read_text()}"
        time.sleep(0.1)


def _episode_results(bag: pathlib.Path) -> list:
    with AnyReader([bag]) as reader:
        connections = [c for c in reader.connections if c.topic == "/episode_result"]
        return [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages(connections=connections)]


def _first_command_delay_steps(bag: pathlib.Path, episodes: int, period_s: float) -> int:
    """Control periods from the first episode's start until the recorder heard its first command.

    The controller starts last, so its command writer meets the recorder's reader during the
    first episode: on a loaded machine that discovery can take a second or more, and those
    commands never reach the bag (a third party's discovery, as with a late ``ros2 bag record``).
    """
    with AnyReader([bag]) as reader:
        times = {
            topic: [t for _, t, _ in reader.messages(connections=[c for c in reader.connections if c.topic == topic])]
            for topic in ("/episode_start", "/command")
        }
    first_start = sorted(times["/episode_start"])[-episodes]  # earlier markers re-announce it until an answer
    return max(0, round((min(times["/command"]) - first_start) * 1e-9 / period_s))


def test_recorded_loop_imports_as_the_episodes_it_ran(start_node, tmp_path: pathlib.Path) -> None:
    bag = tmp_path / "loop_bag"
    log = tmp_path / "bag_record.log"
    with open(log, "w") as out:
        recorder = subprocess.Popen(
            [sys.executable, "-m", "vdd_ros.harness.bag_record", "-o", str(bag), *TOPICS, *STOP],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_line(log, "recording /episode_result", recorder, timeout=60)
        # the simulator waits for a controller; the recorder must hear it before the controller starts the loop
        start_node("task_sim", ros_params({"task": "avoiding", "lockstep": False, "episodes": EPISODES}))
        for topic in ("/observation", "/episode_start", "/episode_result"):
            _wait_for_line(log, f"matched {topic}", recorder, timeout=60)
        # the reader matching is half of discovery: until the simulator's writers know the recorder,
        # their messages are not sent to it (seen under load: the first 59 steps missing from the bag)
        for topic in ("/observation", "/episode_start"):
            _wait_for_line(log, f"first message on {topic}", recorder, timeout=60)
        start_node("controller", ros_params(CONTROLLER))
        assert recorder.wait(timeout=120) == 0, log.read_text()
    finally:
        if recorder.poll() is None:
            recorder.kill()
    assert "stop_topic" in log.read_text()

    results = _episode_results(bag)
    assert [r.episode for r in results] == list(range(EPISODES))
    # A busy machine can stall the real-time simulator for a few hundred ms (seen: 0.28 s with three
    # test suites and a training run on 2 cores). The 0.1 s staleness guard itself is tested on a
    # crafted bag (test_import_bag.py::test_gap_above_the_staleness_limit); here a stall is allowed
    # and each held tick widens the length tolerance below.
    overrides = {"episodes.drop_short": True, "align.max_staleness_s": 1.0}
    cfg = load_config(ImportBagConfig, REPO / "config" / "import_bag_avoiding.yaml", overrides)
    imported = import_bags([str(bag)], narrow(cfg, BagMapping))
    ds = imported.imported.dataset
    report = "\n".join(imported.report())
    lengths, steps = np.array([len(a) for a in ds.actions]), np.array([r.steps for r in results])
    assert len(lengths) == EPISODES, report
    held = sum(t.filled for t in imported.topics if t.topic == "/observation")
    assert held <= 0.2 * sum(lengths), f"{held} ticks held: more than a few stalls explain (lost messages?)\n{report}"
    # real time on a shared machine: a stalled simulator step can shift the tick grid by one (or by
    # the ticks it held); the first episode may also miss the commands sent before the controller
    # discovered the recorder
    tolerance = np.maximum(2, 0.03 * steps) + held
    missed = _first_command_delay_steps(bag, EPISODES, cfg.control_period_s)
    assert np.all(np.abs(lengths[1:] - steps[1:]) <= tolerance[1:]), f"{lengths} vs {steps}\n{report}"
    assert -tolerance[0] <= steps[0] - lengths[0] <= missed + tolerance[0], f"{lengths} vs {steps}, {missed}\n{report}"
    # every dropped span is a start-up one: the simulator announcing its first episode until the controller
    # answered (0 steps; 1 when a stall held a tick inside such a span)
    start_up = (" 0 steps",) if held == 0 else (" 0 steps", " 1 steps")
    assert all(any(s in line for s in start_up) for line in imported.imported.skipped), report
    aligned = np.concatenate(
        [
            np.abs(np.diff(o[:, :2], axis=0) - np.clip(a[:-1], -MAX_ACTION, MAX_ACTION)).max(axis=1) < 1e-5
            for o, a in zip(ds.observations, ds.actions, strict=True)
        ]
    )
    late = sum(r.late_actions for r in results)
    # a held tick repeats an observation, so its row cannot show the step: only the other rows count
    counted = len(aligned) - held
    message = f"{aligned.sum()}/{counted} rows: next desired = desired + command; {late} late"
    assert aligned.sum() >= 0.9 * counted, message
