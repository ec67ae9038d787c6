"""import_lerobot: small LeRobot folders (v2.1 and v3.0 layouts) written with pyarrow -> DemoDataset.

Values encode (episode, frame, column), so every check says where a row came from; image and
video features must be skipped, and every defect must be one line naming what is wrong.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vdd_ros.cli.import_lerobot import main
from vdd_ros.data.dataset import load_dataset
from vdd_ros.data.import_report import report_lines
from vdd_ros.data.lerobot_import import LeRobotImportError, import_lerobot

LENGTHS = (4, 6, 5)
BOOKKEEPING = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}


def _value(episode: int, frame: int, feature: int, column: int) -> float:
    return episode * 100 + frame + feature * 0.1 + column * 0.01


def _rows(episode: int, length: int, first_index: int, features: dict[str, int]) -> dict[str, list]:
    """Columns of one episode: feature f (in ``features`` order) holds _value(episode, frame, f, column)."""
    frames = list(range(length))
    cols: dict[str, list] = {
        key: [[_value(episode, t, f, c) for c in range(dim)] for t in frames]
        for f, (key, dim) in enumerate(features.items())
    }
    cols["timestamp"] = [t / 10 for t in frames]
    cols["frame_index"] = frames
    cols["episode_index"] = [episode] * length
    cols["index"] = [first_index + t for t in frames]
    cols["task_index"] = [0] * length
    return cols


def _table(cols: dict[str, list], dims: dict[str, int], fixed: bool) -> pa.Table:
    arrays = {}
    for key, values in cols.items():
        if key in dims:
            arrays[key] = pa.array(values, type=pa.list_(pa.float32(), dims[key] if fixed else -1))
        elif key == "timestamp":
            arrays[key] = pa.array(values, type=pa.float32())
        else:
            arrays[key] = pa.array(values, type=pa.int64())
    return pa.table(arrays)


def _info(version: str, fps: int, features: dict, frames: int, episodes: int, data_path: str) -> dict:
    return {
        "codebase_version": version,
        "robot_type": "test_arm",
        "total_episodes": episodes,
        "total_frames": frames,
        "total_tasks": 1,
        "chunks_size": 1000,
        "fps": fps,
        "splits": {"train": f"0:{episodes}"},
        "data_path": data_path,
        "features": {**features, **BOOKKEEPING},
    }


def write_v21(root: pathlib.Path, lengths: tuple[int, ...] = LENGTHS) -> pathlib.Path:
    """v2.1: one parquet file per episode (fixed-size lists), a video feature kept in mp4 files (not written)."""
    dims = {"observation.state": 3, "action": 2}
    features = {
        "observation.state": {"dtype": "float32", "shape": [3], "names": {"motors": ["shoulder", "elbow", "wrist"]}},
        "action": {"dtype": "float32", "shape": [2], "names": ["dx", "dy"]},
        "observation.images.top": {"dtype": "video", "shape": [8, 8, 3], "names": ["height", "width", "channels"]},
        "next.reward": {"dtype": "float32", "shape": [1], "names": None},
    }
    (root / "meta").mkdir(parents=True)
    template = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
    info = _info("v2.1", 10, features, sum(lengths), len(lengths), template)
    (root / "meta" / "info.json").write_text(json.dumps(info))
    episodes_jsonl = []
    first = 0
    for e, n in enumerate(lengths):
        path = root / template.format(episode_chunk=0, episode_index=e)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(_table(_rows(e, n, first, dims), dims, fixed=True), path)
        episodes_jsonl.append(json.dumps({"episode_index": e, "tasks": ["reach"], "length": n}))
        first += n
    (root / "meta" / "episodes.jsonl").write_text("\n".join(episodes_jsonl) + "\n")
    return root


def write_v30(root: pathlib.Path, lengths: tuple[int, ...] = LENGTHS) -> pathlib.Path:
    """v3.0: episodes 0-1 in file-000 and episode 2 in file-001 (variable lists, rows shuffled), an image column."""
    dims = {"observation.state": 2, "observation.environment_state": 2, "action": 2}
    features = {
        "observation.state": {"dtype": "float32", "shape": [2], "names": None},
        "observation.environment_state": {"dtype": "float64", "shape": [2], "names": ["ex", "ey"]},
        "action": {"dtype": "float32", "shape": [2], "names": [["ax", "ay"]]},
        "observation.image": {"dtype": "image", "shape": [4, 4, 3], "names": ["height", "width", "channel"]},
    }
    (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
    template = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    info = _info("v3.0", 30, features, sum(lengths), len(lengths), template)
    (root / "meta" / "info.json").write_text(json.dumps(info))
    rng = np.random.default_rng(0)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    for file_index, episodes in enumerate(([0, 1], [2])):
        table = pa.concat_tables(
            _table(_rows(e, lengths[e], int(starts[e]), dims), dims, fixed=False) for e in episodes
        )
        image = pa.array([{"bytes": b"\x89PNG", "path": None}] * len(table))
        table = table.append_column("observation.image", image).take(rng.permutation(len(table)))
        path = root / template.format(chunk_index=0, file_index=file_index)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
    episodes_meta = pa.table({"episode_index": list(range(len(lengths))), "length": list(lengths)})
    pq.write_table(episodes_meta, root / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    return root


def _expected(episode: int, length: int, feature: int, dim: int) -> np.ndarray:
    return np.array([[_value(episode, t, feature, c) for c in range(dim)] for t in range(length)], dtype=np.float32)


def test_v21_layout(tmp_path: pathlib.Path) -> None:
    imported = import_lerobot(write_v21(tmp_path / "ds"))
    ds = imported.dataset
    assert ds.num_episodes == 3 and [len(o) for o in ds.observations] == list(LENGTHS)
    assert ds.obs_names == ("shoulder", "elbow", "wrist") and ds.act_names == ("dx", "dy")
    assert ds.control_period_s == pytest.approx(0.1)
    for e, n in enumerate(LENGTHS):
        np.testing.assert_array_equal(ds.observations[e], _expected(e, n, 0, 3))
        np.testing.assert_array_equal(ds.actions[e], _expected(e, n, 1, 2))
    assert ds.mode_labels.tolist() == [-1, -1, -1] and ds.task == ""
    assert ds.provenance["lerobot_codebase_version"] == "v2.1"
    assert imported.skipped == (
        "observation.images.top (video): image observations come later",
        "next.reward: not selected",
    )


def test_v30_layout_many_episodes_per_file(tmp_path: pathlib.Path) -> None:
    imported = import_lerobot(write_v30(tmp_path / "ds"), task="avoiding")
    ds = imported.dataset
    assert [len(a) for a in ds.actions] == list(LENGTHS)
    assert ds.obs_names == ("observation.state_0", "observation.state_1", "ex", "ey")
    assert ds.act_names == ("ax", "ay") and ds.task == "avoiding"
    assert ds.control_period_s == pytest.approx(1 / 30)
    for e, n in enumerate(LENGTHS):  # rows were shuffled on disk: order comes from frame_index
        np.testing.assert_array_equal(ds.observations[e], np.hstack([_expected(e, n, 0, 2), _expected(e, n, 1, 2)]))
        np.testing.assert_array_equal(ds.actions[e], _expected(e, n, 2, 2))
    assert imported.skipped == ("observation.image (image): image observations come later",)
    lines = report_lines(imported)
    assert lines[:2] == [
        "episodes 3, frames 15, length min/mean/max 4/5.0/6",
        "rate 30 Hz (control_period_s 0.0333333)",
    ]
    assert "skipped observation.image (image): image observations come later" in lines


def test_observation_features_are_configurable(tmp_path: pathlib.Path) -> None:
    root = write_v30(tmp_path / "ds")
    ds = import_lerobot(root, observations=["observation.environment_state"]).dataset
    assert ds.obs_names == ("ex", "ey")
    np.testing.assert_array_equal(ds.observations[1], _expected(1, LENGTHS[1], 1, 2))
    with pytest.raises(
        LeRobotImportError, match=r"'observation\.image' has dtype image: image observations come later"
    ):
        import_lerobot(root, observations=["observation.image"])


def test_missing_info_json(tmp_path: pathlib.Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(LeRobotImportError, match=r"empty: no meta/info.json: not a LeRobot dataset folder"):
        import_lerobot(tmp_path / "empty")


def test_unsupported_version(tmp_path: pathlib.Path) -> None:
    root = write_v21(tmp_path / "ds")
    info = json.loads((root / "meta" / "info.json").read_text())
    (root / "meta" / "info.json").write_text(json.dumps({**info, "codebase_version": "v1.6"}))
    with pytest.raises(LeRobotImportError, match=r"codebase_version 'v1.6' is not supported \(supported: v2.0"):
        import_lerobot(root)


def test_missing_action_feature(tmp_path: pathlib.Path) -> None:
    root = write_v21(tmp_path / "ds")
    with pytest.raises(LeRobotImportError, match=r"meta/info\.json: no feature 'act' "):
        import_lerobot(root, action="act")


def test_non_contiguous_frames_name_the_episode(tmp_path: pathlib.Path) -> None:
    root = write_v21(tmp_path / "ds")
    path = root / "data" / "chunk-000" / "episode_000001.parquet"
    table = pq.read_table(path)
    pq.write_table(table.take([0, 1, 2, 4, 5]), path)  # frame 3 of episode 1 lost
    with pytest.raises(LeRobotImportError, match="episode 1: frame_index 2 is followed by 4 \\(frames missing\\)"):
        import_lerobot(root)


def test_totals_catch_a_missing_data_file(tmp_path: pathlib.Path) -> None:
    root = write_v21(tmp_path / "ds")
    (root / "data" / "chunk-000" / "episode_000002.parquet").unlink()
    with pytest.raises(LeRobotImportError, match="total_episodes is 3 but the data files hold 2"):
        import_lerobot(root)


def test_tool_writes_a_valid_file(tmp_path: pathlib.Path, capsys) -> None:
    root = write_v30(tmp_path / "ds")
    out = tmp_path / "out" / "demos.safetensors"
    assert main([f"dataset={root}", f"output={out}"]) == 0
    ds = load_dataset(out)
    assert ds.num_episodes == 3 and ds.obs_names[-2:] == ("ex", "ey")
    printed = capsys.readouterr().out
    assert "episodes 3, frames 15" in printed and f"wrote {out}" in printed


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["observations=[observation.velocity]"], "no feature 'observation.velocity'"),
        (["task=nope"], "unknown task 'nope'"),
        (["task=avoiding"], "task 'avoiding' has 4 observation and 2 action columns, the dataset 3 and 2"),
        (["output=demos.npz"], "output must name a .safetensors file"),
    ],
)
def test_tool_errors_are_one_line_and_write_nothing(
    args: list[str], message: str, tmp_path: pathlib.Path, capsys
) -> None:
    root = write_v21(tmp_path / "ds")
    out = tmp_path / "out" / "demos.safetensors"
    assert main([f"dataset={root}", f"output={out}", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("import_lerobot: error: ") and message in err[0], err
    assert not (tmp_path / "out").exists()
