"""The on-disk demonstration format: one ``.safetensors`` file (no pickle), see docs/dataset_format.md.

Episodes are concatenated into flat tensors with exclusive cumulative ``episode_ends``;
names, timing, task and provenance live in JSON inside the safetensors string metadata.
Loading validates everything, so a bad file fails loudly before hours of training.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import pathlib
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from vdd_ros.util.files import atomic_write, sha256_file

FORMAT_NAME = "vdd_ros.demos"
FORMAT_VERSION = 1
METADATA_KEY = "vdd_ros"
_TENSORS = {"observations": np.float32, "actions": np.float32, "episode_ends": np.int64, "mode_labels": np.int64}


class DatasetError(ValueError):
    """A demonstration file or dataset does not satisfy the format."""


@dataclasses.dataclass
class DemoDataset:
    """Episodes in raw physical units; ``mode_labels[e]`` is the behaviour label of episode e (-1 = unknown)."""

    observations: list[np.ndarray]  # each (L_e, obs_dim)
    actions: list[np.ndarray]  # each (L_e, act_dim)
    obs_names: tuple[str, ...]
    act_names: tuple[str, ...]
    control_period_s: float
    mode_labels: np.ndarray
    task: str = ""
    provenance: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def num_episodes(self) -> int:
        return len(self.observations)


def _check_names(names: Any, dim: int, what: str) -> tuple[str, ...]:
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) and n for n in names):
        raise DatasetError(f"{what}: expected a list of non-empty strings, got {names!r}")
    if len(names) != dim:
        raise DatasetError(f"{what}: {len(names)} names for {dim} columns")
    if len(set(names)) != len(names):
        raise DatasetError(f"{what}: duplicate names {list(names)}")
    return tuple(names)


def _check_arrays(obs: np.ndarray, act: np.ndarray, ends: np.ndarray, labels: np.ndarray) -> None:
    for name, arr in zip(_TENSORS, (obs, act, ends, labels), strict=True):
        if arr.dtype != _TENSORS[name]:
            raise DatasetError(f"tensor {name!r}: dtype {arr.dtype}, expected {np.dtype(_TENSORS[name])}")
    if obs.ndim != 2 or act.ndim != 2:
        raise DatasetError(f"observations/actions must be 2-D, got shapes {obs.shape} and {act.shape}")
    if obs.shape[0] != act.shape[0]:
        raise DatasetError(f"observations have {obs.shape[0]} rows but actions have {act.shape[0]}")
    if obs.shape[1] == 0 or act.shape[1] == 0:
        raise DatasetError("observations and actions need at least one column")
    for name, arr in (("observations", obs), ("actions", act)):
        if not np.all(np.isfinite(arr)):
            bad = int(np.argwhere(~np.isfinite(arr))[0, 0])
            raise DatasetError(f"tensor {name!r} contains NaN or Inf (first at row {bad})")
    if ends.ndim != 1 or ends.size == 0:
        raise DatasetError(f"episode_ends must be a non-empty 1-D tensor, got shape {ends.shape}")
    if ends[0] <= 0 or np.any(np.diff(ends) <= 0):
        raise DatasetError("episode_ends must be strictly increasing positive exclusive ends (no empty episode)")
    if ends[-1] != obs.shape[0]:
        raise DatasetError(f"episode_ends[-1] = {ends[-1]} but there are {obs.shape[0]} rows")
    if labels.shape != ends.shape:
        raise DatasetError(f"mode_labels has shape {labels.shape}, expected {ends.shape} (one per episode)")
    if np.any(labels < -1):
        raise DatasetError("mode_labels must be >= -1 (-1 = unknown)")


def _check_meta(meta: dict[str, Any], obs_dim: int, act_dim: int) -> dict[str, Any]:
    if meta.get("format") != FORMAT_NAME:
        raise DatasetError(f"metadata format is {meta.get('format')!r}, expected {FORMAT_NAME!r}")
    if meta.get("version") != FORMAT_VERSION:
        raise DatasetError(f"format version {meta.get('version')!r} is not supported (this reader: {FORMAT_VERSION})")
    period = meta.get("control_period_s")
    if isinstance(period, bool) or not isinstance(period, (int, float)) or not (math.isfinite(period) and period > 0):
        raise DatasetError(f"control_period_s must be a positive number, got {period!r}")
    if not isinstance(meta.get("task"), str):
        raise DatasetError(f"task must be a string, got {meta.get('task')!r}")
    if not isinstance(meta.get("provenance"), dict):
        raise DatasetError(f"provenance must be a JSON object, got {meta.get('provenance')!r}")
    return {
        "obs_names": _check_names(meta.get("obs_names"), obs_dim, "obs_names"),
        "act_names": _check_names(meta.get("act_names"), act_dim, "act_names"),
        "control_period_s": float(period),
        "task": meta["task"],
        "provenance": meta["provenance"],
    }


def _flatten(ds: DemoDataset) -> dict[str, np.ndarray]:
    if not ds.observations or len(ds.observations) != len(ds.actions):
        raise DatasetError(
            f"need >= 1 episode and as many action as observation arrays, got "
            f"{len(ds.observations)} and {len(ds.actions)}"
        )
    obs = [np.asarray(o, dtype=np.float32) for o in ds.observations]
    act = [np.asarray(a, dtype=np.float32) for a in ds.actions]
    for e, (o, a) in enumerate(zip(obs, act, strict=True)):
        if o.ndim != 2 or a.ndim != 2 or len(o) != len(a):
            raise DatasetError(f"episode {e}: observations {o.shape} and actions {a.shape} must be 2-D of equal length")
    if len({o.shape[1] for o in obs}) != 1 or len({a.shape[1] for a in act}) != 1:
        raise DatasetError("all episodes must have the same observation and action widths")
    return {
        "observations": np.ascontiguousarray(np.concatenate(obs)),
        "actions": np.ascontiguousarray(np.concatenate(act)),
        "episode_ends": np.cumsum([len(o) for o in obs]).astype(np.int64),
        "mode_labels": np.ascontiguousarray(np.asarray(ds.mode_labels, dtype=np.int64).reshape(-1)),
    }


def save_dataset(ds: DemoDataset, path: str | os.PathLike[str]) -> None:
    """Validate and write ``ds`` atomically (``util.files.atomic_write``)."""
    tensors = _flatten(ds)
    _check_arrays(*(tensors[k] for k in _TENSORS))
    meta = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "obs_names": list(ds.obs_names),
        "act_names": list(ds.act_names),
        "control_period_s": ds.control_period_s,
        "task": ds.task,
        "provenance": ds.provenance,
    }
    _check_meta(meta, tensors["observations"].shape[1], tensors["actions"].shape[1])
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={METADATA_KEY: json.dumps(meta)}))


def load_dataset(path: str | os.PathLike[str]) -> DemoDataset:
    """Read and fully validate a demonstration file; any defect raises DatasetError naming the file."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such dataset file")
    try:
        with safe_open(str(path), framework="np") as f:
            header = f.metadata() or {}
            names = set(f.keys())
            missing = sorted(set(_TENSORS) - names)
            if missing:
                raise DatasetError(f"{path}: missing tensor(s) {missing}; found {sorted(names)}")
            tensors = {k: f.get_tensor(k) for k in _TENSORS}
    except (SafetensorError, OSError) as exc:
        raise DatasetError(f"{path}: not a readable safetensors file ({exc})") from exc
    try:
        meta = json.loads(header[METADATA_KEY])
    except KeyError:
        raise DatasetError(f"{path}: no {METADATA_KEY!r} metadata entry; not a vdd_ros dataset") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: metadata is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise DatasetError(f"{path}: metadata must be a JSON object")
    obs, act, ends, labels = (tensors[k] for k in _TENSORS)
    try:
        _check_arrays(obs, act, ends, labels)
        checked = _check_meta(meta, obs.shape[1], act.shape[1])
    except DatasetError as exc:
        raise DatasetError(f"{path}: {exc}") from None
    starts = np.concatenate([[0], ends[:-1]])
    return DemoDataset(
        observations=[obs[s:e] for s, e in zip(starts, ends, strict=True)],
        actions=[act[s:e] for s, e in zip(starts, ends, strict=True)],
        mode_labels=labels,
        **checked,
    )


def make_windows(ds: DemoDataset, obs_window: int, act_chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Training samples in raw units, one per time step: obs (N, T, obs_dim) and action chunks (N, H, act_dim).

    The observation history is padded with the episode's first observation (as ObservationWindow
    does at deployment) and chunks running past the episode end repeat its last action.
    """
    if obs_window < 1 or act_chunk < 1:
        raise ValueError("make_windows: obs_window and act_chunk must be >= 1")
    obs_out, act_out = [], []
    for obs, act in zip(ds.observations, ds.actions, strict=True):
        t = np.arange(len(obs))[:, None]
        obs_idx = np.clip(t + np.arange(1 - obs_window, 1)[None, :], 0, None)
        act_idx = np.clip(t + np.arange(act_chunk)[None, :], None, len(act) - 1)
        obs_out.append(np.asarray(obs, dtype=np.float32)[obs_idx])
        act_out.append(np.asarray(act, dtype=np.float32)[act_idx])
    return np.concatenate(obs_out), np.concatenate(act_out)


def episode_steps(ds: DemoDataset) -> np.ndarray:
    """Each ``make_windows`` sample's step within its demonstration (N,), in the same order."""
    return np.concatenate([np.arange(len(obs)) for obs in ds.observations])


def dataset_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of the file bytes, so checkpoints can record exactly which data trained them."""
    return sha256_file(path)


def content_sha256(ds: DemoDataset) -> str:
    """Hex SHA-256 of what a model learns from (arrays, names, period, task), not of provenance.

    Two collections with the same seed and settings hold the same demonstrations but different
    creation times, so their files differ while this digest does not.
    """
    digest = hashlib.sha256()
    head = [list(ds.obs_names), list(ds.act_names), float(ds.control_period_s), ds.task]
    digest.update(json.dumps(head).encode())
    for name, array in sorted(_flatten(ds).items()):
        digest.update(f"{name}{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()
