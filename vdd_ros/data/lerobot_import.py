"""A LeRobot dataset folder (codebase v2.0, v2.1 or v3.0) -> a DemoDataset, without the ``lerobot`` package.

Only ``meta/info.json`` and the parquet files under ``data/`` are read (pyarrow). Every layout
keeps one row per frame with ``episode_index`` and ``frame_index`` columns, so all data files
are read alike, whether one file holds one episode (v2.x) or many (v3.0); rows are grouped by
episode and ordered by frame. Numeric features become observation/action columns; image and
video features are listed and skipped (image observations come later). Any defect raises
LeRobotImportError naming the file, feature or episode, before anything is written.
"""

from __future__ import annotations

import collections
import json
import math
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vdd_ros.data.import_report import Imported, imported_dataset

SUPPORTED_VERSIONS = ("v2.0", "v2.1", "v3.0")
DEFAULT_OBSERVATIONS = ("observation.state", "observation.environment_state")  # the second only if present
IMAGE_DTYPES = ("image", "video")
BOOKKEEPING = ("timestamp", "frame_index", "episode_index", "index", "task_index")
_LIST_TYPES = (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list)


class LeRobotImportError(ValueError):
    """The folder is not a LeRobot dataset this importer can read, or its data are inconsistent."""


def read_info(root: pathlib.Path) -> dict[str, Any]:
    """``meta/info.json`` checked for a supported version, a positive fps and a features mapping."""
    path = root / "meta" / "info.json"
    if not path.is_file():
        raise LeRobotImportError("no meta/info.json: not a LeRobot dataset folder")
    try:
        info = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LeRobotImportError(f"meta/info.json: not readable JSON ({exc})") from exc
    if not isinstance(info, dict):
        raise LeRobotImportError("meta/info.json: expected a JSON object")
    version = info.get("codebase_version")
    if version is None:
        raise LeRobotImportError(f"meta/info.json: no codebase_version (supported: {', '.join(SUPPORTED_VERSIONS)})")
    if version not in SUPPORTED_VERSIONS:
        raise LeRobotImportError(
            f"meta/info.json: codebase_version {version!r} is not supported "
            f"(supported: {', '.join(SUPPORTED_VERSIONS)})"
        )
    fps = info.get("fps")
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not (math.isfinite(fps) and fps > 0):
        raise LeRobotImportError(f"meta/info.json: fps must be a positive number, got {fps!r}")
    features = info.get("features")
    if not isinstance(features, dict) or not features:
        raise LeRobotImportError("meta/info.json: no features mapping")
    for key, spec in features.items():
        if not isinstance(spec, dict) or "dtype" not in spec:
            raise LeRobotImportError(f"meta/info.json: feature {key!r} has no dtype")
    return info


def _flat_names(names: Any) -> list[Any]:
    """Names in column order from a list, nested lists, or a mapping of axis -> names (as LeRobot writes)."""
    if isinstance(names, dict):
        return [n for value in names.values() for n in _flat_names(value)]
    if isinstance(names, (list, tuple)):
        return [n for value in names for n in _flat_names(value)]
    return [names]


def _dim(key: str, spec: dict[str, Any]) -> int:
    shape = spec.get("shape", [1])
    if not isinstance(shape, (list, tuple)) or not all(isinstance(s, int) and s > 0 for s in shape):
        raise LeRobotImportError(f"meta/info.json: feature {key!r} has shape {shape!r}, expected positive integers")
    return math.prod(shape)


def feature_names(key: str, spec: dict[str, Any]) -> tuple[list[str], str | None]:
    """Column names of a feature, and a note when they had to be made up (``<feature>_<i>``)."""
    dim = _dim(key, spec)
    names = _flat_names(spec.get("names")) if spec.get("names") is not None else []
    if len(names) == dim and all(isinstance(n, str) and n for n in names) and len(set(names)) == dim:
        return [str(n) for n in names], None
    made_up = [f"{key}_{i}" for i in range(dim)]
    if not names:
        return made_up, None
    return made_up, f"{key}: names {spec.get('names')!r} do not give {dim} distinct strings; using {key}_<i>"


def _select(info: dict[str, Any], observations: Sequence[str], action: str) -> tuple[list[str], list[str]]:
    """The observation features (configured, or the defaults that exist) and the image/video ones to skip."""
    features = info["features"]
    images = [k for k, spec in features.items() if spec["dtype"] in IMAGE_DTYPES]
    if not observations:
        if DEFAULT_OBSERVATIONS[0] not in features:
            raise LeRobotImportError(
                f"meta/info.json: no feature {DEFAULT_OBSERVATIONS[0]!r}; name the observation features with "
                f"observations=[...] (features: {', '.join(features)})"
            )
        observations = [k for k in DEFAULT_OBSERVATIONS if k in features]
    for key in [*observations, action]:
        if key not in features:
            raise LeRobotImportError(f"meta/info.json: no feature {key!r} (features: {', '.join(features)})")
        if key in images:
            raise LeRobotImportError(
                f"feature {key!r} has dtype {features[key]['dtype']}: image observations come later"
            )
        if key in BOOKKEEPING:
            raise LeRobotImportError(f"feature {key!r} is frame bookkeeping, not an observation or action")
    if action in observations:
        raise LeRobotImportError(f"feature {action!r} is selected both as the action and as an observation")
    if len(set(observations)) != len(observations):
        raise LeRobotImportError(f"observations lists a feature twice: {list(observations)}")
    return list(observations), images


def _matrix(column: pa.ChunkedArray, key: str, dim: int, where: str) -> np.ndarray:
    """A (rows, dim) float array from a scalar, list or fixed-size-list column (nested lists flattened)."""
    values: pa.Array = column.combine_chunks()
    rows = len(values)
    if values.null_count:
        raise LeRobotImportError(f"{where}: feature {key!r} has {values.null_count} empty (null) rows")
    while any(is_list(values.type) for is_list in _LIST_TYPES):
        lengths = pc.list_value_length(values).to_numpy(zero_copy_only=False)
        if lengths.size and lengths.min() != lengths.max():
            raise LeRobotImportError(f"{where}: feature {key!r} has rows of different lengths")
        values = values.flatten()
        if values.null_count:
            raise LeRobotImportError(f"{where}: feature {key!r} holds null values")
    if not (pa.types.is_integer(values.type) or pa.types.is_floating(values.type) or pa.types.is_boolean(values.type)):
        raise LeRobotImportError(f"{where}: feature {key!r} holds {values.type}, not numbers")
    if len(values) != rows * dim:
        raise LeRobotImportError(
            f"{where}: feature {key!r} has {len(values) // max(rows, 1)} values per row, info.json shape says {dim}"
        )
    return values.to_numpy(zero_copy_only=False).astype(np.float32).reshape(rows, dim)


def _read_frames(root: pathlib.Path, features: dict[str, int]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """All rows of every ``data/**/*.parquet``: the features' matrices and the bookkeeping columns present."""
    files = sorted((root / "data").rglob("*.parquet"))
    if not files:
        raise LeRobotImportError("data/: no parquet files")
    matrices: dict[str, list[np.ndarray]] = {k: [] for k in features}
    counters: dict[str, list[np.ndarray]] = {}
    for path in files:
        where = str(path.relative_to(root))
        try:
            present = set(pq.read_schema(path).names)
            wanted = [*features, *(k for k in ("episode_index", "frame_index", "index") if k in present)]
            missing = sorted(set(features) - present) + ([] if "episode_index" in present else ["episode_index"])
            if missing:
                raise LeRobotImportError(f"{where}: no column(s) {missing} (columns: {', '.join(sorted(present))})")
            table = pq.read_table(path, columns=wanted)
        except (OSError, pa.ArrowException) as exc:
            raise LeRobotImportError(f"{where}: not a readable parquet file ({exc})") from exc
        for key, dim in features.items():
            matrices[key].append(_matrix(table.column(key), key, dim, where))
        for key in wanted[len(features) :]:
            column = table.column(key)
            if column.null_count or not pa.types.is_integer(column.type):
                raise LeRobotImportError(f"{where}: column {key!r} must hold integers without nulls")
            counters.setdefault(key, []).append(column.to_numpy().astype(np.int64))
    if {len(v) for v in counters.values()} != {len(files)}:
        raise LeRobotImportError("data/: frame_index/index columns are present in some files only")
    return (
        {k: np.concatenate(v) for k, v in matrices.items()},
        {k: np.concatenate(v) for k, v in counters.items()},
    )


def _episodes(counters: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row order (by episode, then frame), the sorted episode ids and their exclusive ends; contiguity checked."""
    episode = counters["episode_index"]
    key_name = "frame_index" if "frame_index" in counters else "index" if "index" in counters else None
    key = counters[key_name] if key_name else np.arange(len(episode))
    order = np.lexsort((key, episode))
    episode, key = episode[order], key[order]
    ids, starts = np.unique(episode, return_index=True)
    ends = np.append(starts[1:], len(episode))
    for e, s, t in zip(ids, starts, ends, strict=True):
        frames = key[s:t]
        if key_name == "frame_index" and frames[0] != 0:
            raise LeRobotImportError(f"episode {e}: first frame_index is {frames[0]}, not 0 (frames missing)")
        steps = np.diff(frames)
        bad = np.flatnonzero(steps != 1)
        if key_name and bad.size:
            i = bad[0]
            what = "appears twice" if steps[i] == 0 else f"is followed by {frames[i + 1]} (frames missing)"
            raise LeRobotImportError(f"episode {e}: {key_name} {frames[i]} {what}")
    return order, ids, ends


def _check_totals(info: dict[str, Any], episodes: int, frames: int) -> None:
    """info.json's totals must match the data: a mismatch means missing or extra data files."""
    for name, found in (("total_episodes", episodes), ("total_frames", frames)):
        stated = info.get(name)
        if isinstance(stated, int) and stated != found:
            raise LeRobotImportError(f"meta/info.json: {name} is {stated} but the data files hold {found}")


def _names(info: dict[str, Any], keys: Sequence[str]) -> tuple[list[str], list[str]]:
    """Concatenated column names; when features share a name, that feature's names get a ``<feature>.`` prefix."""
    per_key = {k: feature_names(k, info["features"][k]) for k in keys}
    notes = [note for _, note in per_key.values() if note]
    counts = collections.Counter(n for names, _ in per_key.values() for n in names)
    out = [n if counts[n] == 1 else f"{k}.{n}" for k, (names, _) in per_key.items() for n in names]
    return out, notes


def import_lerobot(
    root: str | pathlib.Path, observations: Sequence[str] = (), action: str = "action", task: str = ""
) -> Imported:
    """Read the LeRobot dataset at ``root``; ``observations`` empty = observation.state (+ environment_state).

    Errors name the dataset folder, then the file, feature or episode at fault.
    """
    root = pathlib.Path(root)
    try:
        return _import(root, observations, action, task)
    except LeRobotImportError as exc:
        raise LeRobotImportError(f"{root}: {exc}") from None


def _import(root: pathlib.Path, observations: Sequence[str], action: str, task: str) -> Imported:
    info = read_info(root)
    obs_keys, images = _select(info, observations, action)
    features = info["features"]
    dims = {k: _dim(k, features[k]) for k in [*obs_keys, action]}
    matrices, counters = _read_frames(root, dims)
    order, ids, ends = _episodes(counters)
    _check_totals(info, len(ids), len(order))
    obs = np.concatenate([matrices[k] for k in obs_keys], axis=1)[order]
    act = matrices[action][order]
    for name, arr in (("observations", obs), ("action", act)):
        if not np.all(np.isfinite(arr)):
            row = int(np.argwhere(~np.isfinite(arr))[0, 0])
            e = int(np.searchsorted(ends, row, side="right"))
            frame = row - (int(ends[e - 1]) if e else 0)
            raise LeRobotImportError(f"episode {ids[e]}, frame {frame}: {name} contain NaN or Inf")
    obs_names, notes = _names(info, obs_keys)
    act_names, act_notes = _names(info, [action])
    starts = np.concatenate([[0], ends[:-1]])
    unused = [k for k in features if k not in [*obs_keys, action, *images, *BOOKKEEPING]]
    skipped = [f"{k} ({features[k]['dtype']}): image observations come later" for k in images]
    skipped += [f"{k}: not selected" for k in unused]
    dataset = imported_dataset(
        observations=[obs[s:e] for s, e in zip(starts, ends, strict=True)],
        actions=[act[s:e] for s, e in zip(starts, ends, strict=True)],
        obs_names=obs_names,
        act_names=act_names,
        control_period_s=1.0 / float(info["fps"]),
        task=task,
        generator="vdd_ros.data.lerobot_import",
        source=str(root.resolve()),
        lerobot_codebase_version=info["codebase_version"],
        lerobot_features={"observations": obs_keys, "action": action},
        lerobot_episode_indices=[int(i) for i in ids],
    )
    return Imported(dataset, tuple(skipped), tuple(notes + act_notes))
