"""Teacher checkpoints without pickle: ``model.safetensors`` + ``teacher.json``.

The JSON carries everything a consumer (distillation, TeacherPolicy, export contract)
needs to rebuild the teacher and feed it raw data: family, network and diffusion
config, window sizes, names, normalisers, task and provenance hashes. Both files are
replaced atomically, weights first.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vdd_ros.data.normalizer import Normalizer
from vdd_ros.data.shape import PolicyShape
from vdd_ros.teacher.base import Teacher, TrainableTeacher
from vdd_ros.teacher.config import NetworkConfig
from vdd_ros.teacher.registry import get_family
from vdd_ros.util.config import from_dict
from vdd_ros.util.files import atomic_write, atomic_write_text, sha256_file

FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
META_FILE = "teacher.json"
# Family settings older teacher.json files may hold that are no longer teacher settings:
# the sampler-noise correlation belongs to the policy wrapper (``TeacherPolicy``).
_RETIRED_KEYS = frozenset({"noise_correlation"})


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
    dataset_content_sha256: str = ""  # data.dataset.content_sha256: the same demos collected again match it
    training: dict[str, Any] = dataclasses.field(default_factory=dict)
    created_utc: str = ""
    format_version: int = FORMAT_VERSION

    @property
    def obs_norm(self) -> Normalizer:
        return Normalizer.from_dict(self.obs_normalizer)

    @property
    def act_norm(self) -> Normalizer:
        return Normalizer.from_dict(self.act_normalizer)


def build_teacher(meta: TeacherMeta, overrides: dict[str, Any] | None = None) -> TrainableTeacher:
    """An untrained teacher of the family, sizes and settings ``meta`` names (``overrides``: family settings)."""
    diffusion = {k: v for k, v in meta.diffusion.items() if k not in _RETIRED_KEYS} | (overrides or {})
    try:
        family = get_family(meta.family)
        network = from_dict(NetworkConfig, meta.network, "network")
        config = family.parse_config(diffusion, "diffusion")
    except ValueError as exc:  # ConfigError, UnknownFamilyError, a config's own validation
        raise TeacherCheckpointError(f"teacher.json: {exc}") from exc
    return family.build(PolicyShape(meta.obs_dim, meta.act_dim, meta.obs_window, meta.act_chunk), network, config)


def _as_stored(config: Any) -> dict[str, Any]:
    """A config dataclass as teacher.json holds it (tuples as lists), so a loaded meta equals a fresh one."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def teacher_meta_fields(teacher: TrainableTeacher) -> dict[str, Any]:
    """The meta fields a teacher object itself determines (family, sizes, configs)."""
    return {
        "family": teacher.family,
        "network": _as_stored(teacher.network_config),
        "diffusion": _as_stored(teacher.config),
        "obs_window": teacher.obs_window,
        "act_chunk": teacher.act_chunk,
        "obs_dim": teacher.obs_dim,
        "act_dim": teacher.act_dim,
    }


def save_teacher(teacher: TrainableTeacher, meta: TeacherMeta, directory: str | pathlib.Path) -> pathlib.Path:
    """Write weights and metadata; each file is replaced atomically, weights first."""
    own = teacher_meta_fields(teacher)
    if own != {k: getattr(meta, k) for k in own}:
        raise TeacherCheckpointError("metadata does not describe this teacher (family, sizes or configs differ)")
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in teacher.state_dict().items()}
    atomic_write(directory / MODEL_FILE, lambda p: save_file(tensors, p, metadata={"format": "vdd_ros.teacher"}))
    atomic_write_text(directory / META_FILE, json.dumps(dataclasses.asdict(meta), indent=2, sort_keys=True))
    return directory


def is_teacher_yaml(path: str | pathlib.Path) -> bool:
    """A teacher YAML file (an external network) rather than a checkpoint folder."""
    return pathlib.Path(path).suffix in (".yaml", ".yml")


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


def load_teacher(
    directory: str | pathlib.Path, device: str = "cpu", sampler: str | None = None
) -> tuple[Teacher, TeacherMeta]:
    """Rebuild a teacher from ``directory``; returns it in eval mode with its metadata.

    ``directory`` may also be a teacher YAML describing an external network (``teacher.external``).
    ``sampler`` replaces the family's saved sampler setting (e.g. "ddim" for a DDPM teacher).
    """
    if is_teacher_yaml(directory):
        from vdd_ros.teacher.external import load_external  # deferred: external builds on this module

        return load_external(directory, device, sampler)
    directory = pathlib.Path(directory)
    meta = _read_meta(directory / META_FILE)
    teacher = build_teacher(meta, None if sampler is None else {"sampler": sampler})
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
    """Identity of a teacher: SHA-256 over model.safetensors then teacher.json (a YAML: itself, then its weights)."""
    if is_teacher_yaml(directory):
        from vdd_ros.teacher.external import external_sha256

        return external_sha256(directory)
    directory = pathlib.Path(directory)
    try:
        return sha256_file(directory / MODEL_FILE, directory / META_FILE)
    except OSError as exc:
        raise TeacherCheckpointError(f"cannot read {exc.filename}: {exc.strerror}") from exc
