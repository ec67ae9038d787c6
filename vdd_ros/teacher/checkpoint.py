"""Teacher checkpoints without pickle: ``model.safetensors`` + ``teacher.json``.

The JSON carries everything a consumer (distillation, TeacherPolicy, export contract)
needs to rebuild the teacher and feed it raw data: family, network and diffusion
config, window sizes, names, normalisers, task and provenance hashes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import tempfile
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vdd_ros.util.config import ConfigError, from_dict
from vdd_ros.data.normalizer import Normalizer
from vdd_ros.teacher.base import DiffusionTeacher
from vdd_ros.teacher.ddpm import DDPMConfig, DDPMTeacher
from vdd_ros.teacher.edm import EDMConfig, EDMTeacher
from vdd_ros.teacher.network import NetworkConfig

FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
META_FILE = "teacher.json"
_FAMILIES: dict[str, tuple[type[DiffusionTeacher], type]] = {
    "ddpm": (DDPMTeacher, DDPMConfig),
    "edm": (EDMTeacher, EDMConfig),
}


class TeacherCheckpointError(ValueError):
    """A teacher checkpoint is missing, corrupt, or inconsistent with its metadata."""


@dataclasses.dataclass(frozen=True)
class TeacherMeta:
    """Everything about a trained teacher except its weights."""

    family: str
    network: dict[str, Any]
    diffusion: dict[str, Any]
    obs_window: int
    act_chunk: int
    obs_dim: int
    act_dim: int
    obs_names: tuple[str, ...]
    act_names: tuple[str, ...]
    control_period_s: float
    task: str
    obs_normalizer: dict[str, list[float]]
    act_normalizer: dict[str, list[float]]
    dataset_sha256: str = ""
    training: dict[str, Any] = dataclasses.field(default_factory=dict)
    created_utc: str = ""
    format_version: int = FORMAT_VERSION

    @property
    def obs_norm(self) -> Normalizer:
        return Normalizer.from_dict(self.obs_normalizer)

    @property
    def act_norm(self) -> Normalizer:
        return Normalizer.from_dict(self.act_normalizer)


def build_teacher(meta: TeacherMeta) -> DiffusionTeacher:
    """Construct an untrained teacher of the family and sizes that ``meta`` names."""
    if meta.family not in _FAMILIES:
        raise TeacherCheckpointError(f"unknown teacher family {meta.family!r}; known: {sorted(_FAMILIES)}")
    cls, cfg_cls = _FAMILIES[meta.family]
    try:
        network = from_dict(NetworkConfig, meta.network, "network")
        config = from_dict(cfg_cls, meta.diffusion, "diffusion")
    except ConfigError as exc:
        raise TeacherCheckpointError(f"teacher.json: {exc}") from exc
    return cls(meta.obs_dim, meta.act_dim, meta.obs_window, meta.act_chunk, network, config)


def teacher_meta_fields(teacher: DiffusionTeacher) -> dict[str, Any]:
    """The meta fields a teacher object itself determines (family, sizes, configs)."""
    return {
        "family": teacher.family,
        "network": dataclasses.asdict(teacher.network_config),
        "diffusion": dataclasses.asdict(teacher.config),
        "obs_window": teacher.obs_window,
        "act_chunk": teacher.act_chunk,
        "obs_dim": teacher.obs_dim,
        "act_dim": teacher.act_dim,
    }


def _atomic_write(path: pathlib.Path, write: Any) -> None:
    """Write through a temp file in the same directory, then os.replace (atomic on POSIX)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_teacher(teacher: DiffusionTeacher, meta: TeacherMeta, directory: str | pathlib.Path) -> pathlib.Path:
    """Write weights and metadata; each file is replaced atomically, weights first."""
    if meta.family != teacher.family or teacher_meta_fields(teacher) != {
        k: getattr(meta, k) for k in teacher_meta_fields(teacher)
    }:
        raise TeacherCheckpointError("metadata does not describe this teacher (family, sizes or configs differ)")
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in teacher.state_dict().items()}
    _atomic_write(directory / MODEL_FILE, lambda p: save_file(tensors, p, metadata={"format": "vdd_ros.teacher"}))
    text = json.dumps(dataclasses.asdict(meta), indent=2, sort_keys=True)
    _atomic_write(directory / META_FILE, lambda p: pathlib.Path(p).write_text(text))
    return directory


def _read_meta(path: pathlib.Path) -> TeacherMeta:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise TeacherCheckpointError(f"missing {path}") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TeacherCheckpointError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise TeacherCheckpointError(f"{path} is not a JSON object")
    if data.get("format_version") != FORMAT_VERSION:
        raise TeacherCheckpointError(
            f"{path}: format_version {data.get('format_version')!r} unsupported (expected {FORMAT_VERSION})"
        )
    names = {f.name for f in dataclasses.fields(TeacherMeta)}
    unknown = set(data) - names
    if unknown:
        raise TeacherCheckpointError(f"{path}: unknown field(s) {sorted(unknown)}")
    try:
        meta = TeacherMeta(**{**data, "obs_names": tuple(data["obs_names"]), "act_names": tuple(data["act_names"])})
        meta.obs_norm, meta.act_norm  # noqa: B018 -- validates the normalisers
    except (KeyError, TypeError, ValueError) as exc:
        raise TeacherCheckpointError(f"{path}: invalid metadata: {exc}") from exc
    sizes = (
        (len(meta.obs_names), meta.obs_dim, "obs_names"),
        (len(meta.act_names), meta.act_dim, "act_names"),
        (len(meta.obs_normalizer["mean"]), meta.obs_dim, "obs_normalizer"),
        (len(meta.act_normalizer["mean"]), meta.act_dim, "act_normalizer"),
    )
    for got, want, what in sizes:
        if got != want:
            raise TeacherCheckpointError(f"{path}: {what} has {got} entries, expected {want}")
    return meta


def load_teacher(directory: str | pathlib.Path, device: str = "cpu") -> tuple[DiffusionTeacher, TeacherMeta]:
    """Rebuild a teacher from ``directory``; returns it in eval mode with its metadata."""
    directory = pathlib.Path(directory)
    meta = _read_meta(directory / META_FILE)
    teacher = build_teacher(meta)
    try:
        tensors = load_file(directory / MODEL_FILE)
    except FileNotFoundError as exc:
        raise TeacherCheckpointError(f"missing {directory / MODEL_FILE}") from exc
    except (SafetensorError, OSError) as exc:
        raise TeacherCheckpointError(f"{directory / MODEL_FILE} is corrupt: {exc}") from exc
    try:
        teacher.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise TeacherCheckpointError(f"{directory / MODEL_FILE} does not match teacher.json: {exc}") from exc
    return teacher.to(device).eval(), meta


def teacher_sha256(directory: str | pathlib.Path) -> str:
    """Identity of a teacher: SHA-256 over model.safetensors then teacher.json."""
    directory = pathlib.Path(directory)
    h = hashlib.sha256()
    for name in (MODEL_FILE, META_FILE):
        try:
            h.update((directory / name).read_bytes())
        except OSError as exc:
            raise TeacherCheckpointError(f"cannot read {directory / name}: {exc}") from exc
    return h.hexdigest()


STATE_TENSORS = "state.safetensors"
STATE_JSON = "state.json"


@dataclasses.dataclass
class TrainingState:
    """What resuming needs: live and EMA weights, AdamW moments, step, RNG, scalars."""

    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    step: int
    rng: dict[str, torch.Tensor]
    info: dict[str, Any] = dataclasses.field(default_factory=dict)


def save_training_state(state: TrainingState, directory: str | pathlib.Path) -> None:
    """Flatten everything into one safetensors file plus JSON scalars (no pickle)."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v for k, v in state.model.items()}
    tensors |= {f"ema.{k}": v for k, v in state.ema.items()}
    tensors |= {f"rng.{k}": v for k, v in state.rng.items()}
    opt_scalars: dict[str, dict[str, Any]] = {}
    for idx, slots in state.optimizer["state"].items():
        for key, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value
            else:
                opt_scalars.setdefault(str(idx), {})[key] = value
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    scalars = {
        "format_version": FORMAT_VERSION,
        "step": state.step,
        "param_groups": state.optimizer["param_groups"],
        "optim_scalars": opt_scalars,
        "info": state.info,
    }
    _atomic_write(directory / STATE_TENSORS, lambda p: save_file(tensors, p))
    _atomic_write(directory / STATE_JSON, lambda p: pathlib.Path(p).write_text(json.dumps(scalars, indent=1)))


def load_training_state(directory: str | pathlib.Path) -> TrainingState:
    """Inverse of ``save_training_state``; raises TeacherCheckpointError when unreadable."""
    directory = pathlib.Path(directory)
    try:
        scalars = json.loads((directory / STATE_JSON).read_text())
        tensors = load_file(directory / STATE_TENSORS)
    except (OSError, json.JSONDecodeError, SafetensorError) as exc:
        raise TeacherCheckpointError(f"cannot read training state in {directory}: {exc}") from exc
    if not isinstance(scalars, dict) or scalars.get("format_version") != FORMAT_VERSION:
        raise TeacherCheckpointError(f"{directory / STATE_JSON}: unsupported or corrupt training state")
    groups: dict[str, dict[str, torch.Tensor]] = {"model": {}, "ema": {}, "rng": {}}
    opt_state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        kind, rest = name.split(".", 1)
        if kind == "optim":
            idx, key = rest.split(".", 1)
            opt_state.setdefault(int(idx), {})[key] = value
        else:
            groups[kind][rest] = value
    for idx, slots in scalars["optim_scalars"].items():
        opt_state.setdefault(int(idx), {}).update(slots)
    return TrainingState(
        model=groups["model"],
        ema=groups["ema"],
        optimizer={"state": opt_state, "param_groups": scalars["param_groups"]},
        step=int(scalars["step"]),
        rng=groups["rng"],
        info=scalars.get("info", {}),
    )
