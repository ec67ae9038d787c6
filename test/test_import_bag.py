"""import_bag: rosbag2 recordings (MCAP and sqlite3) of an Avoiding loop -> the dataset the loop ran.

The recordings are written here with rosbags from scripted-expert episodes, as the task_sim and
controller nodes publish them: an episode_start marker, the observation (JointState, extra
joint, scrambled order), the controller's command (Float64MultiArray) and policy_action
(PolicyAction) a little later, with receive-time jitter, a dropped message of each kind, an
unrelated topic and a pause between episodes. Alignment tolerance: with nearest sampling every
tick whose messages arrived is exact; a tick whose message was dropped (and only those) takes
the neighbouring message, i.e. it is off by at most one step of the signal.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import pytest
from conftest import REPO
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from vdd_ros.data.bag.config import BagMapping
from vdd_ros.data.bag.importer import import_bags
from vdd_ros.data.bag.reader import BagError
from vdd_ros.data.dataset import load_dataset
from vdd_ros.tasks.registry import get_task
from vdd_ros.util.config import load_config

TASK = get_task("avoiding")
PERIOD = TASK.control_period_s
NS = 1_000_000_000
START_NS = 1_767_225_600 * NS  # 2026-01-01, a realistic wall-clock start
JITTER_S = 0.003  # receive time = send time +- 3 ms
LATENCY_S = 0.002  # the controller answers about 2 ms after the observation
PAUSE_S = 0.3  # between episodes (the simulator resets)
JOINTS = ["actual_y", "gripper", "desired_x", "actual_x", "desired_y"]  # as a robot driver might order them

STORE = get_typestore(Stores.ROS2_KILTED)
STORE.register(
    get_types_from_msg((REPO / "msg" / "msg" / "PolicyAction.msg").read_text(), "vdd_ros_msgs/msg/PolicyAction")
)
T = STORE.types


@dataclasses.dataclass
class Recording:
    """What the test wrote: the truth per episode and the bag-relative receive times of observations."""

    path: pathlib.Path
    observations: list[np.ndarray]
    actions: list[np.ndarray]
    obs_receive: dict[tuple[int, int], int]  # (episode, step) -> ns
    start_ns: int  # the bag's first message


def _stamp(ns: int):
    return T["builtin_interfaces/msg/Time"](sec=ns // NS, nanosec=ns % NS)


def _header(ns: int):
    return T["std_msgs/msg/Header"](stamp=_stamp(ns), frame_id="world")


def _demos(labels: list[int]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    demos = TASK.generate_demos(np.array(labels), np.random.default_rng(7))
    return [d.observations for d in demos], [d.actions for d in demos]


def write_bag(
    path: pathlib.Path,
    observations: list[np.ndarray],
    actions: list[np.ndarray],
    plugin: StoragePlugin = StoragePlugin.MCAP,
    drop_obs: frozenset = frozenset(),
    drop_act: frozenset = frozenset(),
    seed: int = 0,
) -> Recording:
    """The Avoiding loop's topics for these episodes, as ``ros2 bag record`` would store them."""
    rng = np.random.default_rng(seed)
    messages: list[tuple[str, int, object]] = []  # (topic, receive ns, message)
    obs_receive = {}
    t = START_NS
    for e, (obs, act) in enumerate(zip(observations, actions, strict=True)):
        for k in range(len(obs)):
            sent = t + round(k * PERIOD * NS)
            received = sent + round(rng.uniform(-JITTER_S, JITTER_S) * NS)
            if k == 0:
                messages.append(("/episode_start", received - 200_000, _header(sent)))
            values = dict(zip(TASK.obs_names, obs[k].astype(np.float64), strict=True))
            js = T["sensor_msgs/msg/JointState"](
                header=_header(sent),
                name=JOINTS,
                position=np.array([values.get(j, 0.5) for j in JOINTS]),
                velocity=np.zeros(0),
                effort=np.zeros(0),
            )
            if (e, k) not in drop_obs:
                messages.append(("/observation", received, js))
                obs_receive[(e, k)] = received
            answered = received + round(rng.uniform(0.5 * LATENCY_S, 1.5 * LATENCY_S) * NS)
            if (e, k) not in drop_act:
                command = T["std_msgs/msg/Float64MultiArray"](
                    layout=T["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0), data=act[k].astype(np.float64)
                )
                messages.append(("/command", answered, command))
                messages.append(
                    (
                        "/policy_action",
                        answered + 10_000,
                        T["vdd_ros_msgs/msg/PolicyAction"](
                            header=_header(sent + round(LATENCY_S * NS)),
                            observation_stamp=_stamp(sent),
                            action=act[k].astype(np.float32),
                            action_names=list(TASK.act_names),
                            expert_index=0,
                            expert_probability=1.0,
                            policy_id="expert",
                            policy_sha256_short="",
                            sequence=k,
                            source=0,
                        ),
                    )
                )
            if k % 5 == 0:  # an unrelated topic the mapping does not mention
                messages.append(("/chatter", sent + 1_000_000, T["std_msgs/msg/String"](data=f"step {k}")))
        t += round((len(obs) * PERIOD + PAUSE_S) * NS)
    messages.sort(key=lambda m: m[1])
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        connections = {}
        for topic, ns, msg in messages:
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msg.__msgtype__, typestore=STORE)
            writer.write(connections[topic], ns, STORE.serialize_cdr(msg, msg.__msgtype__))
    return Recording(path, observations, actions, obs_receive, messages[0][1])


def mapping(**changes) -> BagMapping:
    """The shipped Avoiding mapping (config/import_bag_avoiding.yaml) with dotted-key changes."""
    from vdd_ros.cli.import_bag import ImportBagConfig

    cfg = load_config(ImportBagConfig, REPO / "config" / "import_bag_avoiding.yaml", changes)
    return BagMapping(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(BagMapping)})


DROPPED_OBS, DROPPED_ACT = (1, 20), (1, 21)


@pytest.fixture(scope="module")
def demos() -> tuple[list[np.ndarray], list[np.ndarray]]:
    return _demos([0, 9, 20])


@pytest.fixture(scope="module", params=[StoragePlugin.MCAP, StoragePlugin.SQLITE3], ids=["mcap", "sqlite3"])
def recording(request, demos, tmp_path_factory) -> Recording:
    path = tmp_path_factory.mktemp("bags") / f"avoiding_{request.param.name.lower()}"
    return write_bag(
        path, *demos, plugin=request.param, drop_obs=frozenset([DROPPED_OBS]), drop_act=frozenset([DROPPED_ACT])
    )


def _assert_matches(got: list[np.ndarray], truth: list[np.ndarray], dropped: tuple[int, int]) -> None:
    """Equal at every tick whose message arrived; at the dropped one, within one step of the signal."""
    assert [len(g) for g in got] == [len(t) for t in truth]
    for e, (g, t) in enumerate(zip(got, truth, strict=True)):
        exact = np.ones(len(t), dtype=bool)
        if e == dropped[0]:
            exact[dropped[1]] = False
            k = dropped[1]
            step = np.abs(t[k] - t[k - 1]) + np.abs(t[k + 1] - t[k])
            assert np.all(np.abs(g[k] - t[k]) <= step + 1e-7)
        np.testing.assert_allclose(g[exact], t[exact], rtol=0, atol=1e-7)


def test_imports_what_the_loop_ran(recording: Recording) -> None:
    result = import_bags([str(recording.path)], mapping())
    ds = result.imported.dataset
    assert ds.obs_names == TASK.obs_names and ds.act_names == TASK.act_names and ds.task == "avoiding"
    _assert_matches(ds.observations, recording.observations, DROPPED_OBS)
    _assert_matches(ds.actions, recording.actions, DROPPED_ACT)
    stats = {s.topic: s for s in result.topics}
    for topic in ("/observation", "/command"):  # one message missing each: one tick filled, one repeated
        assert (stats[topic].filled, stats[topic].repeated, stats[topic].unused) == (1, 1, 0)
        assert abs(stats[topic].line().count("Hz")) == 1
    rate = float(stats["/observation"].line().split(" messages, ")[1].split(" Hz")[0])
    assert abs(rate - 1 / PERIOD) < 2.0
    assert "/chatter" not in stats


def test_policy_action_with_header_stamps_and_linear_observations(recording: Recording) -> None:
    """The package's own message, its definition read from the bag; rows at the controller's stamps."""
    m = mapping(
        **{
            "action.topic": "/policy_action",
            "action.type": "vdd_ros_msgs/msg/PolicyAction",
            "action.field": "action",
            "align.stamp": "header",
            "align.interpolation": "linear",
        }
    )
    ds = import_bags([str(recording.path)], m).imported.dataset
    _assert_matches(ds.actions, recording.actions, DROPPED_ACT)
    # ticks sit LATENCY_S after the observation stamps: linear sampling is that fraction of a step ahead
    for e, (got, truth) in enumerate(zip(ds.observations, recording.observations, strict=True)):
        ahead = np.diff(truth, axis=0, append=truth[-1:]) * (LATENCY_S / PERIOD)
        ok = np.ones(len(truth), dtype=bool)
        if e == DROPPED_OBS[0]:  # the ticks on either side of the dropped message interpolate across it
            ok[DROPPED_OBS[1] - 1 : DROPPED_OBS[1] + 1] = False
        np.testing.assert_allclose(got[ok], (truth + ahead)[ok], rtol=0, atol=1e-6)
        assert np.all(np.abs(got - truth) <= np.abs(ahead) * PERIOD / LATENCY_S + 1e-6)  # within one step


def test_difference_of_the_desired_position_split_by_silence(recording: Recording) -> None:
    """kind=difference on an absolute signal gives Avoiding's deltas; split=gap finds the pauses."""
    m = mapping(
        **{
            "action.topic": "/observation",
            "action.type": "sensor_msgs/msg/JointState",
            "action.field": "position",
            "action.names": ["desired_x", "desired_y"],
            "action.kind": "difference",
            "episodes.split": "gap",
            "episodes.gap_s": PAUSE_S / 2,
            "task": "",
        }
    )
    ds = import_bags([str(recording.path)], m).imported.dataset
    assert ds.act_names == ("desired_x", "desired_y") and ds.task == ""
    assert [len(a) for a in ds.actions] == [len(a) - 1 for a in recording.actions]
    for e, (got, truth) in enumerate(zip(ds.actions, recording.actions, strict=True)):
        ok = np.ones(len(got), dtype=bool)
        if e == DROPPED_OBS[0]:
            ok[DROPPED_OBS[1] - 1 : DROPPED_OBS[1] + 1] = False  # both differences touching the dropped row
        np.testing.assert_allclose(got[ok], truth[:-1][ok], rtol=0, atol=1e-6)


def test_tool_writes_dataset_png_and_report(recording: Recording, tmp_path: pathlib.Path, capsys) -> None:
    from vdd_ros.cli.import_bag import main

    out = tmp_path / "demos" / "robot.safetensors"
    config = REPO / "config" / "import_bag_avoiding.yaml"
    assert main([str(config), f"bags=[{recording.path}]", f"output={out}"]) == 0
    ds = load_dataset(out)
    assert ds.num_episodes == 3 and np.all(ds.mode_labels == -1)
    assert ds.provenance["generator"] == "vdd_ros import_bag"
    assert out.with_suffix(".png").stat().st_size > 10_000
    report = capsys.readouterr().out
    assert "episodes 3, frames" in report
    assert f"steps per episode: {', '.join(str(len(a)) for a in recording.actions)}" in report
    assert "topic /observation (sensor_msgs/msg/JointState):" in report
    assert "1 filled across a missing message" in report


def test_each_bag_is_an_episode(demos, tmp_path: pathlib.Path) -> None:
    obs, act = demos
    bags = [write_bag(tmp_path / f"b{e}", [obs[e][:20]], [act[e][:20]], seed=e).path for e in range(2)]
    ds = import_bags([str(b) for b in bags], mapping(**{"episodes.split": "bag"})).imported.dataset
    for e in range(2):
        np.testing.assert_allclose(ds.observations[e], obs[e][:20], atol=1e-7)
        np.testing.assert_allclose(ds.actions[e], act[e][:20], atol=1e-7)


# Bad input: one line naming the bag, the topic and the time.


@pytest.fixture(scope="module")
def small_bag(demos, tmp_path_factory) -> Recording:
    obs, act = demos
    path = tmp_path_factory.mktemp("small") / "small"
    return write_bag(path, [obs[0][:30], obs[1][:3]], [act[0][:30], act[1][:3]])


def _error(bag: Recording, **changes) -> str:
    with pytest.raises(BagError) as info:
        import_bags([str(bag.path)], mapping(**changes))
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(bag.path))
    return message


def test_missing_topic(small_bag: Recording) -> None:
    message = _error(small_bag, **{"action.topic": "/cmd_vel"})
    assert "topic /cmd_vel is not in the bag; recorded: " in message and "/observation" in message


def test_unsupported_type(small_bag: Recording) -> None:
    source = {"topic": "/chatter", "names": ["text"]}
    message = _error(small_bag, observations=[source])
    assert "topic /chatter (observations[0]): unsupported message type std_msgs/msg/String" in message


def test_joint_name_not_found(small_bag: Recording) -> None:
    source = {"topic": "/observation", "field": "position", "names": ["desired_x", "elbow"]}
    message = _error(small_bag, observations=[source], task="")
    assert f"{small_bag.path}: topic /observation at " in message
    assert "joint(s) ['elbow'] not found; the message has " in message


def test_gap_above_the_staleness_limit(demos, tmp_path: pathlib.Path) -> None:
    obs, act = demos
    lost = frozenset((0, k) for k in range(10, 16))  # six observations: 0.245 s of silence > 0.1 s
    bag = write_bag(tmp_path / "gap", [obs[0][:30]], [act[0][:30]], drop_obs=lost)
    message = _error(bag)
    last, resumed = bag.obs_receive[(0, 9)], bag.obs_receive[(0, 16)]
    at = f"{(last - bag.start_ns) / NS:.3f} s"
    assert f"topic /observation silent for {(resumed - last) / NS:.3f} s from {at}, at the tick at " in message
    assert "(episode 0 from " in message and message.endswith("above align.max_staleness_s=0.1")


def test_episode_too_short_for_the_window(small_bag: Recording) -> None:
    message = _error(small_bag)
    assert "episode 1 from " in message
    assert message.endswith("3 steps, fewer than episodes.min_steps=5 (set episodes.drop_short=true to drop it)")
    result = import_bags([str(small_bag.path)], mapping(**{"episodes.drop_short": True}))
    assert [len(a) for a in result.imported.dataset.actions] == [30]
    assert any(line.startswith("skipped ") and "3 steps" in line for line in result.report())


def test_tool_error_is_one_line(small_bag: Recording, tmp_path: pathlib.Path, capsys) -> None:
    from vdd_ros.cli.import_bag import main

    out = tmp_path / "x.safetensors"
    config = REPO / "config" / "import_bag_avoiding.yaml"
    assert main([str(config), f"bags=[{small_bag.path}]", f"output={out}", "action.topic=/cmd"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("import_bag: error: ") and "topic /cmd is not in the bag" in err[0]
    assert not out.exists()
    assert main([str(config), f"bags=[{small_bag.path}]", "observations=[]"]) == 2
    assert main([str(config), f"bags=[{small_bag.path}]", "action.names=[dx, dy]"]) == 2  # not Avoiding's names
    err = capsys.readouterr().err
    assert "observations is empty" in err and "task 'avoiding' needs action names ['delta_x', 'delta_y']" in err


def test_docs_list_every_setting() -> None:
    from vdd_ros.cli.import_bag import ImportBagConfig
    from vdd_ros.util.config import markdown_table

    text = (REPO / "docs" / "dataset_format.md").read_text()
    assert "## Importing a rosbag2 recording" in text
    assert markdown_table(ImportBagConfig) in text, "regenerate the import_bag table in docs/dataset_format.md"
