"""The .safetensors demonstration format: round trip, strict validation, training windows."""

from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from vdd_ros.cli.collect_demos import main as collect_main
from vdd_ros.data.dataset import (
    METADATA_KEY,
    DatasetError,
    DemoDataset,
    content_sha256,
    dataset_sha256,
    load_dataset,
    make_windows,
    save_dataset,
)


def _dataset(lengths: tuple[int, ...] = (3, 5)) -> DemoDataset:
    rng = np.random.default_rng(0)
    return DemoDataset(
        observations=[rng.normal(size=(n, 4)).astype(np.float32) for n in lengths],
        actions=[rng.normal(size=(n, 2)).astype(np.float32) for n in lengths],
        obs_names=("desired_x", "desired_y", "actual_x", "actual_y"),
        act_names=("delta_x", "delta_y"),
        control_period_s=0.035,
        mode_labels=np.arange(len(lengths), dtype=np.int64) - 1,
        task="avoiding",
        provenance={"generator": "test", "seed": 0},
    )


def _rewrite(src: pathlib.Path, dst: pathlib.Path, tensors: dict | None = None, meta: dict | None = None) -> None:
    """Copy ``src`` with some tensors/metadata replaced, bypassing save_dataset's checks."""
    from safetensors import safe_open

    with safe_open(str(src), framework="np") as f:
        header = json.loads(f.metadata()[METADATA_KEY])
    data = load_file(str(src))
    data.update(tensors or {})
    header.update(meta or {})
    save_file({k: v for k, v in data.items() if v is not None}, str(dst), metadata={METADATA_KEY: json.dumps(header)})


@pytest.fixture
def saved(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "demos.safetensors"
    save_dataset(_dataset(), path)
    return path


def test_round_trip_is_identical(saved: pathlib.Path) -> None:
    ds, back = _dataset(), load_dataset(saved)
    for a, b in zip(ds.observations + ds.actions, back.observations + back.actions, strict=True):
        np.testing.assert_array_equal(a, b)
    assert back.obs_names == ds.obs_names and back.act_names == ds.act_names
    assert back.control_period_s == ds.control_period_s and back.task == ds.task
    assert back.provenance == ds.provenance
    np.testing.assert_array_equal(back.mode_labels, ds.mode_labels)
    assert len(dataset_sha256(saved)) == 64
    assert not list(saved.parent.glob("*.tmp"))


def test_content_digest_ignores_provenance_but_not_data() -> None:
    ds = _dataset()
    assert content_sha256(dataclasses.replace(ds, provenance={"created_utc": "another day"})) == content_sha256(ds)
    changed = [a.copy() for a in ds.actions]
    changed[0][0, 0] += 1e-6
    assert content_sha256(dataclasses.replace(ds, actions=changed)) != content_sha256(ds)
    assert content_sha256(dataclasses.replace(ds, task="other")) != content_sha256(ds)


@pytest.mark.parametrize(
    ("tensors", "meta", "message"),
    [
        ({"actions": None}, None, "missing tensor"),
        ({"observations": np.full((8, 4), np.nan, dtype=np.float32)}, None, "NaN"),
        ({"observations": np.zeros((8, 4), dtype=np.float64)}, None, "dtype"),
        ({"episode_ends": np.array([5, 3], dtype=np.int64)}, None, "strictly increasing"),
        ({"episode_ends": np.array([3, 7], dtype=np.int64)}, None, "rows"),
        (None, {"obs_names": ["a", "b", "c"]}, "3 names for 4 columns"),
        (None, {"version": 99}, "version"),
        (None, {"control_period_s": -1}, "control_period_s"),
    ],
)
def test_rejects_bad_content(saved: pathlib.Path, tensors: dict, meta: dict, message: str) -> None:
    bad = saved.with_name("bad.safetensors")
    _rewrite(saved, bad, tensors, meta)
    with pytest.raises(DatasetError, match=message):
        load_dataset(bad)


def test_rejects_bad_files(saved: pathlib.Path, tmp_path: pathlib.Path) -> None:
    with pytest.raises(DatasetError, match="no such"):
        load_dataset(tmp_path / "absent.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(saved.read_bytes()[:-40])
    with pytest.raises(DatasetError, match="safetensors"):
        load_dataset(truncated)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01not a safetensors file" * 10)
    with pytest.raises(DatasetError, match="safetensors"):
        load_dataset(garbage)
    no_meta = tmp_path / "plain.safetensors"
    save_file(load_file(str(saved)), str(no_meta))
    with pytest.raises(DatasetError, match="metadata"):
        load_dataset(no_meta)
    bad_json = tmp_path / "bad_json.safetensors"
    save_file(load_file(str(saved)), str(bad_json), metadata={METADATA_KEY: "{not json"})
    with pytest.raises(DatasetError, match="JSON"):
        load_dataset(bad_json)


def test_save_rejects_invalid_dataset(tmp_path: pathlib.Path) -> None:
    ds = _dataset()
    ds.act_names = ("delta_x",)
    with pytest.raises(DatasetError, match="act_names"):
        save_dataset(ds, tmp_path / "x.safetensors")
    assert not list(tmp_path.iterdir())


def test_make_windows_padding() -> None:
    ds = _dataset((3, 5))
    obs, act = make_windows(ds, obs_window=3, act_chunk=4)
    assert obs.shape == (8, 3, 4) and act.shape == (8, 4, 2)
    o, a = ds.observations[0], ds.actions[0]
    np.testing.assert_array_equal(obs[0], o[[0, 0, 0]])
    np.testing.assert_array_equal(obs[1], o[[0, 0, 1]])
    np.testing.assert_array_equal(obs[2], o[[0, 1, 2]])
    np.testing.assert_array_equal(act[0], a[[0, 1, 2, 2]])
    np.testing.assert_array_equal(act[2], a[[2, 2, 2, 2]])
    np.testing.assert_array_equal(obs[3], ds.observations[1][[0, 0, 0]])  # no leak across episodes


def test_collect_demos_cli(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demos.safetensors"
    assert collect_main(["episodes=24", f"output={out}", "seed=3"]) == 0
    assert "demo entropy 1.0000" in capsys.readouterr().out
    ds = load_dataset(out)
    assert ds.num_episodes == 24 and sorted(ds.mode_labels.tolist()) == list(range(24))
    assert ds.task == "avoiding" and ds.provenance["seed"] == 3
