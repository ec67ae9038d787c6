"""A folder of verified training checkpoints: named tensor groups plus JSON fields, no pickle.

A folder keeps the last two checkpoints. Each is one safetensors file per tensor group,
``<group>-<iteration>.safetensors``, named by a JSON state (iteration, the group files, the
sha256 of each, and the caller's JSON fields): ``state.json`` for the newest,
``state.prev.json`` for the one before.

Every file is written to a temporary name, flushed and renamed. A save writes the tensor
files, then ``state.prev.json`` (the checkpoint this store last committed or loaded, so
already verified), then ``state.json`` (the commit point), and only then deletes tensor files
that neither state names: a kill at any moment leaves a loadable checkpoint. A save refuses
non-finite floating tensors (NonFiniteError), so a diverged model never replaces a good one.

Loading verifies the newest checkpoint (files present, checksums, parseable, all values
finite, then whatever the caller's ``apply`` checks) and falls back to the previous one,
recording why in ``skipped``; a folder whose checkpoints are all unusable raises
CheckpointError instead of silently starting over. A ``state.json`` without checksums (the
older single-checkpoint layout, recognisable by having no ``state.prev.json``) is accepted.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Callable, Mapping
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from vdd_ros.util.files import atomic_write, sha256_bytes

STATE, PREVIOUS = "state.json", "state.prev.json"


class NonFiniteError(RuntimeError):
    """Training produced NaN/inf (a loss or weights); the last good checkpoint is left untouched."""


class CheckpointError(ValueError):
    """A checkpoint folder holds checkpoints but none is usable; starting over silently would discard the run."""


class UnusableCheckpointError(Exception):
    """One checkpoint failed verification (raised by the store or the caller's ``apply``); the load falls back."""

    def __init__(self, path: pathlib.Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A checkpoint whose files passed every check of the store, handed to the caller's ``apply``."""

    path: pathlib.Path  # its state file
    iteration: int
    files: dict[str, str]  # group -> tensor file name
    tensors: dict[str, dict[str, torch.Tensor]]  # group -> tensor name -> tensor (on the CPU)
    fields: dict[str, Any]  # the caller's JSON fields

    def file(self, group: str) -> pathlib.Path:
        """The tensor file of ``group``, for error messages."""
        return self.path.parent / self.files[group]


@dataclasses.dataclass(frozen=True)
class _Committed:
    """A state file's exact bytes, kept so a later save can rewrite it as ``state.prev.json``."""

    iteration: int
    files: tuple[str, ...]
    text: bytes


def _file_name(group: str, iteration: int) -> str:
    return f"{group}-{iteration:08d}.safetensors"


def non_finite(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of floating tensors holding NaN/inf: such weights must neither be saved nor resumed."""
    return [k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def shape_mismatch(expected: Mapping[str, torch.Tensor], got: Mapping[str, torch.Tensor]) -> str:
    """Empty if ``got`` has exactly the keys and shapes of ``expected``, else a short description."""
    missing = sorted(expected.keys() - got.keys())
    unexpected = sorted(got.keys() - expected.keys())
    reshaped = sorted(k for k in expected.keys() & got.keys() if expected[k].shape != got[k].shape)
    parts = [
        f"{what} {', '.join(keys[:3])}"
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", reshaped))
        if keys
    ]
    return "; ".join(parts)


def _read_bytes(path: pathlib.Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise UnusableCheckpointError(path, "missing") from None
    except OSError as exc:
        raise UnusableCheckpointError(path, f"unreadable ({exc.strerror})") from exc


class CheckpointStore:
    """The checkpoints of one run in ``directory``: tensor ``groups`` plus typed JSON ``fields``.

    One store per folder and run: it remembers the state it last committed or loaded, which
    the next save keeps as ``state.prev.json``.
    """

    def __init__(self, directory: str | pathlib.Path, groups: tuple[str, ...], fields: Mapping[str, type]) -> None:
        self.directory = pathlib.Path(directory)
        self.groups = groups
        self._types: dict[str, type] = {"iteration": int, **{g: str for g in groups}, **fields}
        self.skipped: list[str] = []  # "<file>: <reason>" for each checkpoint the last load skipped
        self._committed: list[_Committed] = []  # newest first

    def save(
        self, iteration: int, tensors: Mapping[str, Mapping[str, torch.Tensor]], fields: Mapping[str, Any]
    ) -> None:
        """Commit ``tensors`` (one mapping per group) and ``fields`` as the newest checkpoint."""
        if set(tensors) != set(self.groups) or set(fields) != set(self._types) - {"iteration", *self.groups}:
            raise ValueError(f"a checkpoint holds groups {self.groups} and fields {sorted(self._types)}")
        cpu = {g: {k: v.detach().contiguous().cpu() for k, v in tensors[g].items()} for g in self.groups}
        bad = [name for g in self.groups for name in non_finite(cpu[g])]
        if bad:
            raise NonFiniteError(f"non-finite {', '.join(bad[:3])} at iteration {iteration}; checkpoint not written")
        self.directory.mkdir(parents=True, exist_ok=True)
        names = tuple(_file_name(g, iteration) for g in self.groups)
        digests = {}
        for group, name in zip(self.groups, names, strict=True):
            data = save(cpu[group])
            atomic_write(self.directory / name, data)
            digests[name] = sha256_bytes(data)
        state = {"iteration": iteration, **dict(zip(self.groups, names, strict=True)), "sha256": digests, **fields}
        newest = _Committed(iteration, names, json.dumps(state, indent=1).encode())
        previous = next((c for c in self._committed if c.iteration < iteration), None)
        if previous is not None:
            atomic_write(self.directory / PREVIOUS, previous.text)
        atomic_write(self.directory / STATE, newest.text)  # the commit point
        self._committed = [newest] if previous is None else [newest, previous]
        self._prune()

    def _prune(self) -> None:
        """After the commit: delete tensor files (and a stale ``state.prev.json``) no kept state names."""
        keep = {name for c in self._committed for name in c.files}
        for old in self.directory.glob("*.safetensors"):
            if old.name not in keep:
                old.unlink(missing_ok=True)
        if len(self._committed) < 2:
            (self.directory / PREVIOUS).unlink(missing_ok=True)

    def load(self, apply: Callable[[Checkpoint], None]) -> Checkpoint | None:
        """Verify the newest checkpoint and ``apply`` it, else fall back to the previous one.

        ``apply`` loads a checkpoint into the caller's objects and raises UnusableCheckpointError
        when it does not fit them. Returns the applied checkpoint, or None when the folder
        holds none (a fresh start); raises CheckpointError when none is usable.
        """
        self.skipped = []
        candidates = [self.directory / STATE]
        if (self.directory / PREVIOUS).is_file():
            candidates.append(self.directory / PREVIOUS)
        if not any(path.is_file() for path in candidates):
            return None
        for i, path in enumerate(candidates):
            try:
                text = _read_bytes(path)
                checkpoint = self._read(path, text)
                apply(checkpoint)
            except UnusableCheckpointError as exc:
                self.skipped.append(str(exc))
                continue
            files = tuple(checkpoint.files.values())
            self._committed = [_Committed(checkpoint.iteration, files, text), *self._older(candidates[i + 1 :])]
            return checkpoint
        raise CheckpointError(
            f"no usable checkpoint in {self.directory}: {'; '.join(self.skipped)}. "
            f"To start over (losing this run's progress), delete {self.directory}"
        )

    def _parse(self, path: pathlib.Path, text: bytes) -> dict[str, Any]:
        """The state JSON, its fields type-checked so later lookups cannot raise KeyError/TypeError."""
        try:
            state = json.loads(text)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            raise UnusableCheckpointError(path, f"not valid JSON ({exc})") from None
        if not isinstance(state, dict):
            raise UnusableCheckpointError(path, "not a JSON object")
        wrong = [k for k, kind in self._types.items() if not isinstance(state.get(k), kind)]
        if not isinstance(state.get("sha256", {}), dict):
            wrong.append("sha256")
        if wrong:
            raise UnusableCheckpointError(path, f"missing or mistyped fields: {', '.join(wrong)}")
        for group in self.groups:
            if state[group] in ("", ".", "..") or pathlib.Path(state[group]).name != state[group]:
                raise UnusableCheckpointError(path, f"{group} file name {state[group]!r} is not a plain file name")
        return state

    def _read(self, path: pathlib.Path, text: bytes) -> Checkpoint:
        """Parse one state and read and verify its tensor files, without touching the caller."""
        state = self._parse(path, text)
        files = {g: state[g] for g in self.groups}
        tensors = {g: self._tensors(state, name) for g, name in files.items()}
        fields = {k: state[k] for k in self._types if k != "iteration" and k not in self.groups}
        return Checkpoint(path, state["iteration"], files, tensors, fields)

    def _tensors(self, state: dict[str, Any], name: str) -> dict[str, torch.Tensor]:
        """Load one tensor file on the CPU after checking its checksum (absent in the old layout)."""
        path = self.directory / name
        data = _read_bytes(path)
        expected = state.get("sha256")
        if expected is None and (self.directory / PREVIOUS).exists():  # only the one-checkpoint layout had none
            raise UnusableCheckpointError(path, "its state records no checksum, as no state of this layout would")
        if expected is not None and expected.get(name) != sha256_bytes(data):
            raise UnusableCheckpointError(path, "sha256 mismatch (damaged or changed after it was written)")
        try:
            tensors = load(data)
        except SafetensorError as exc:
            raise UnusableCheckpointError(path, f"not a valid safetensors file ({exc})") from None
        bad = non_finite(tensors)
        if bad:
            raise UnusableCheckpointError(path, f"non-finite values in {', '.join(bad[:3])}")
        return tensors

    def _older(self, paths: list[pathlib.Path]) -> list[_Committed]:
        """The older states still on disk that parse, kept as ``state.prev.json`` by the next save."""
        kept = []
        for path in paths:
            try:
                text = _read_bytes(path)
                state = self._parse(path, text)
            except UnusableCheckpointError:
                continue
            kept.append(_Committed(state["iteration"], tuple(state[g] for g in self.groups), text))
        return kept
