"""What every MoE trainer shares: two Adams, linear LR decay, the NaN guard, checkpoint/resume.

A checkpoint folder keeps the last two checkpoints. Each is a pair of tensor files,
``model-<it>.safetensors`` and ``optim-<it>.safetensors`` (model, Adam moments, RNG state),
named by a JSON state (iteration, Adam hyperparameters, scalars and the sha256 of each
tensor file): ``state.json`` for the newest, ``state.prev.json`` for the one before.

Every file is written to a temporary name, flushed and renamed. A save writes the tensor
files, then ``state.prev.json`` (the checkpoint this trainer last committed or loaded, so
already verified), then ``state.json`` (the commit point), and only then deletes tensor
files that neither state names: a kill at any moment leaves a loadable checkpoint.

Loading verifies the newest checkpoint (files present, checksums, parseable, keys and
shapes fit the model, all values finite) and falls back to the previous one, recording why
in ``skipped_checkpoints``; a folder whose checkpoints are all unusable raises
CheckpointError instead of silently starting over. A ``state.json`` without checksums (the
older single-checkpoint layout) is still accepted. No pickle anywhere.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import json
import os
import pathlib
import tempfile
from collections.abc import Callable
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from vdd_ros.moe.policy import GaussianMoE

_STATE, _PREVIOUS = "state.json", "state.prev.json"
_FIELDS: dict[str, type] = {"iteration": int, "model": str, "optim": str, "optimizers": dict, "extra": dict}


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss; the last good checkpoint is left untouched."""


class CheckpointError(ValueError):
    """A checkpoint folder holds checkpoints but none is usable; starting over silently would discard the run."""


class _UnusableError(Exception):
    """One checkpoint file failed verification; the loader moves on to the previous checkpoint."""

    def __init__(self, path: pathlib.Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")


@dataclasses.dataclass(frozen=True)
class _Committed:
    """A state file's exact bytes, kept so a later save can rewrite it as ``state.prev.json``."""

    iteration: int
    files: tuple[str, str]
    text: bytes


@dataclasses.dataclass(frozen=True)
class _Loaded:
    """A checkpoint that passed every file-level check, not yet applied to the trainer."""

    path: pathlib.Path
    committed: _Committed
    state: dict[str, Any]
    model: dict[str, torch.Tensor]
    optim: dict[str, torch.Tensor]


def _atomic_write(path: pathlib.Path, data: bytes) -> None:
    """Write ``data`` to a temporary file, flush it to disk, rename: readers see the old file or the new one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _non_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of floating tensors holding NaN/inf: such weights must neither be saved nor resumed."""
    return [k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def _read_bytes(path: pathlib.Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise _UnusableError(path, "missing") from None
    except OSError as exc:
        raise _UnusableError(path, f"unreadable ({exc.strerror})") from exc


def _parse_state(path: pathlib.Path, text: bytes) -> dict[str, Any]:
    """The state JSON, with its fields type-checked so later lookups cannot raise KeyError/TypeError."""
    try:
        state = json.loads(text)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise _UnusableError(path, f"not valid JSON ({exc})") from None
    if not isinstance(state, dict):
        raise _UnusableError(path, "not a JSON object")
    wrong = [k for k, kind in _FIELDS.items() if not isinstance(state.get(k), kind)]
    if not isinstance(state.get("sha256", {}), dict):
        wrong.append("sha256")
    if wrong:
        raise _UnusableError(path, f"missing or mistyped fields: {', '.join(wrong)}")
    for key in ("model", "optim"):
        if state[key] in ("", ".", "..") or pathlib.Path(state[key]).name != state[key]:
            raise _UnusableError(path, f"{key} file name {state[key]!r} is not a plain file name")
    return state


def _read_tensors(directory: pathlib.Path, state: dict[str, Any], key: str) -> dict[str, torch.Tensor]:
    """Load the tensor file ``state[key]`` on the CPU after checking its checksum (absent in old layouts)."""
    path = directory / state[key]
    data = _read_bytes(path)
    expected = state.get("sha256")
    if expected is None and (directory / _PREVIOUS).exists():  # only the one-checkpoint layout had none
        raise _UnusableError(path, "its state records no checksum, as no state of this layout would")
    if expected is not None and expected.get(state[key]) != _sha256(data):
        raise _UnusableError(path, "sha256 mismatch (damaged or changed after it was written)")
    try:
        tensors = load(data)
    except SafetensorError as exc:
        raise _UnusableError(path, f"not a valid safetensors file ({exc})") from None
    bad = _non_finite(tensors)
    if bad:
        raise _UnusableError(path, f"non-finite values in {', '.join(bad[:3])}")
    return tensors


def _shape_mismatch(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> str:
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


def _committed_states(paths: list[pathlib.Path]) -> list[_Committed]:
    """The older states still on disk that parse, kept as ``state.prev.json`` by the next save."""
    kept = []
    for path in paths:
        try:
            text = _read_bytes(path)
            state = _parse_state(path, text)
        except _UnusableError:
            continue
        kept.append(_Committed(state["iteration"], (state["model"], state["optim"]), text))
    return kept


def _optimizer_tensors(prefix: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state_dict into tensors (for safetensors) and plain JSON."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, state in sd["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.{idx}.{name}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{idx}.{name}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _restore_optimizer(prefix: str, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        head, idx, name = key.split(".", 2)
        if head == prefix:
            state.setdefault(int(idx), {})[name] = value
    for key, value in meta["scalars"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


class MoETrainer(abc.ABC):
    """Owns the MoE, its optimizers and RNG; subclasses define one training ``step``.

    The learning rate decays linearly to 0 over the *whole* run, updated once per
    iteration. (The official VDD code steps its scheduler after each of the two expert
    updates, so its expert LR reaches 0 at half the run; we deliberately do not copy that.)
    """

    def __init__(
        self,
        moe: GaussianMoE,
        obs: torch.Tensor,
        actions: torch.Tensor,
        iterations: int,
        lr: float,
        seed: int,
        device: torch.device,
        lr_decay: bool = True,
    ) -> None:
        if iterations < 1:
            raise ValueError("iterations must be >= 1")
        self.obs = obs.to(device)  # (N, T, obs_dim) normalised dataset windows
        self.actions = actions.reshape(actions.shape[0], -1).to(device)  # (N, H * act_dim)
        if self.obs.shape[0] != self.actions.shape[0]:
            raise ValueError("obs and actions must hold the same number of windows")
        self.moe = moe.to(device)
        self.device = device
        # Normalised windows the student itself visited (see add_student_states); empty = dataset only.
        self.student_obs = torch.zeros((0, *self.obs.shape[1:]), dtype=self.obs.dtype, device=device)
        self.iterations = iterations
        self.base_lr = lr
        self.lr_decay = lr_decay
        self.iteration = 0
        self.extra: dict[str, Any] = {}  # caller's JSON-safe state, saved and restored with checkpoints
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.skipped_checkpoints: list[str] = []  # "<file>: <reason>" for each checkpoint the last load skipped
        self._committed: list[_Committed] = []  # newest first: the states on disk this trainer wrote or loaded
        self.expert_opt = torch.optim.Adam(moe.expert_parameters(), lr=lr)
        gating = moe.gating_parameters()
        self.gating_opt = torch.optim.Adam(gating, lr=lr) if gating else None

    @abc.abstractmethod
    def step(self) -> dict[str, float]:
        """One training iteration; returns scalar diagnostics."""

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        opts = {"expert": self.expert_opt}
        if self.gating_opt is not None:
            opts["gating"] = self.gating_opt
        return opts

    def _set_lr(self) -> float:
        frac = 1.0 - self.iteration / self.iterations if self.lr_decay else 1.0
        lr = self.base_lr * frac
        for opt in self._optimizers().values():
            for group in opt.param_groups:
                group["lr"] = lr
        return lr

    def _update(self, opt: torch.optim.Optimizer, loss: torch.Tensor, what: str) -> float:
        """Backward + Adam step, refusing non-finite losses before they touch the weights."""
        value = float(loss.detach())
        if not torch.isfinite(loss.detach()):
            raise NonFiniteLossError(
                f"{what} loss is {value} at iteration {self.iteration}; stopped, last good checkpoint kept"
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return value

    def _batch_indices(self, n: int, batch: int) -> torch.Tensor:
        return torch.randint(n, (batch,), generator=self.generator, device=self.device)

    def add_student_states(self, windows: torch.Tensor, capacity: int) -> None:
        """Append normalised windows (M, T, obs_dim) the student visited, keeping the newest ``capacity``."""
        merged = torch.cat([self.student_obs, windows.to(self.device, self.obs.dtype)])
        self.student_obs = merged[-capacity:] if capacity > 0 else merged[:0]

    def _state_batch(self, batch: int, student_fraction: float) -> torch.Tensor:
        """Dataset states, with ``student_fraction`` of the batch from the student's own states when there are any.

        Distillation needs states only (the teacher labels them), so it can query the teacher
        where the student actually goes -- the covariate shift behaviour cloning cannot fix.
        """
        k = round(batch * student_fraction) if self.student_obs.shape[0] else 0
        parts = [self.obs[self._batch_indices(self.obs.shape[0], batch - k)]]
        if k:
            parts.append(self.student_obs[self._batch_indices(self.student_obs.shape[0], k)])
        return torch.cat(parts)

    def _jitter(self, obs: torch.Tensor, std: float) -> torch.Tensor:
        """Gaussian noise on normalised dataset states, as the teacher saw them in training.

        Student rollouts drift slightly off the demonstrations; distilling on jittered states
        (where the teacher, trained with the same jitter, is reliable) teaches the way back.
        """
        if std <= 0:
            return obs
        return obs + std * torch.randn(obs.shape, generator=self.generator, device=obs.device)

    def run(
        self,
        checkpoint_dir: str | pathlib.Path | None = None,
        checkpoint_every: int = 0,
        until: int | None = None,
        on_progress: Callable[[dict[str, float]], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        progress_every: int = 50,
    ) -> bool:
        """Train up to iteration ``until`` (default: the end); returns False if stopped early.

        Checkpoints every ``checkpoint_every`` iterations, when stopped and at ``until``; on
        a NaN the error propagates and the folder keeps the last good checkpoint.
        """
        until = self.iterations if until is None else min(until, self.iterations)
        self.moe.train()
        while self.iteration < until:
            if should_stop is not None and should_stop():
                if checkpoint_dir is not None:
                    self.save_checkpoint(checkpoint_dir)
                return False
            lr = self._set_lr()
            stats = self.step()
            self.iteration += 1
            if on_progress is not None and (self.iteration % progress_every == 0 or self.iteration == until):
                on_progress({"iteration": self.iteration, "iterations": self.iterations, "lr": lr, **stats})
            if checkpoint_dir is not None and checkpoint_every > 0 and self.iteration % checkpoint_every == 0:
                self.save_checkpoint(checkpoint_dir)
        if checkpoint_dir is not None and (checkpoint_every <= 0 or self.iteration % checkpoint_every != 0):
            self.save_checkpoint(checkpoint_dir)
        return True

    def save_checkpoint(self, directory: str | pathlib.Path) -> None:
        """Commit the current state as the newest checkpoint, keeping the previous one (see the module doc).

        Refuses non-finite weights (NonFiniteLossError) so a diverged model never replaces a good checkpoint.
        """
        directory = pathlib.Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tag = f"{self.iteration:08d}"
        model_name, optim_name = f"model-{tag}.safetensors", f"optim-{tag}.safetensors"
        model = {k: v.detach().contiguous().cpu() for k, v in self.moe.state_dict().items()}
        optim, optim_meta = self._optim_tensors()
        bad = _non_finite(model) + _non_finite(optim)
        if bad:
            raise NonFiniteLossError(
                f"non-finite {', '.join(bad[:3])} at iteration {self.iteration}; checkpoint not written"
            )
        model_bytes, optim_bytes = save(model), save(optim)
        _atomic_write(directory / model_name, model_bytes)
        _atomic_write(directory / optim_name, optim_bytes)
        state = {
            "iteration": self.iteration,
            "model": model_name,
            "optim": optim_name,
            "sha256": {model_name: _sha256(model_bytes), optim_name: _sha256(optim_bytes)},
            "optimizers": optim_meta,
            "extra": self.extra,
        }
        newest = _Committed(self.iteration, (model_name, optim_name), json.dumps(state, indent=1).encode())
        previous = next((c for c in self._committed if c.iteration < self.iteration), None)
        if previous is not None:
            _atomic_write(directory / _PREVIOUS, previous.text)
        _atomic_write(directory / _STATE, newest.text)  # the commit point
        self._committed = [newest] if previous is None else [newest, previous]
        self._prune(directory)

    def _optim_tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """RNG, student states and Adam moments as tensors; Adam hyperparameters as JSON."""
        optim: dict[str, torch.Tensor] = {
            "rng": self.generator.get_state().cpu(),
            "student_obs": self.student_obs.detach().contiguous().cpu(),
        }
        meta = {}
        for name, opt in self._optimizers().items():
            tensors, meta[name] = _optimizer_tensors(name, opt)
            optim.update(tensors)
        return optim, meta

    def _prune(self, directory: pathlib.Path) -> None:
        """After the commit: delete tensor files (and a stale ``state.prev.json``) no kept state names."""
        keep = {name for c in self._committed for name in c.files}
        for old in directory.glob("*.safetensors"):
            if old.name not in keep:
                old.unlink(missing_ok=True)
        if len(self._committed) < 2:
            (directory / _PREVIOUS).unlink(missing_ok=True)

    def load_checkpoint(self, directory: str | pathlib.Path) -> bool:
        """Restore the newest usable checkpoint in ``directory``; False if it holds none (a fresh start).

        Unusable checkpoints skipped on the way are listed in ``skipped_checkpoints`` ("<file>: <reason>").
        Raises CheckpointError if there are checkpoints but none is usable.
        """
        directory = pathlib.Path(directory)
        self.skipped_checkpoints = []
        candidates = [directory / _STATE] + ([directory / _PREVIOUS] if (directory / _PREVIOUS).is_file() else [])
        if not any(path.is_file() for path in candidates):
            return False
        for i, path in enumerate(candidates):
            try:
                loaded = self._read_checkpoint(path)
                self._apply(loaded)
            except _UnusableError as exc:
                self.skipped_checkpoints.append(str(exc))
                continue
            self._committed = [loaded.committed, *_committed_states(candidates[i + 1 :])]
            return True
        raise CheckpointError(
            f"no usable checkpoint in {directory}: {'; '.join(self.skipped_checkpoints)}. "
            f"To start over (losing this run's progress), delete {directory}"
        )

    def _read_checkpoint(self, path: pathlib.Path) -> _Loaded:
        """Read and verify one checkpoint's files without touching the trainer."""
        text = _read_bytes(path)
        state = _parse_state(path, text)
        model = _read_tensors(path.parent, state, "model")
        mismatch = _shape_mismatch(self.moe.state_dict(), model)
        if mismatch:
            raise _UnusableError(path.parent / state["model"], f"does not fit this model ({mismatch})")
        optim = _read_tensors(path.parent, state, "optim")
        committed = _Committed(state["iteration"], (state["model"], state["optim"]), text)
        return _Loaded(path, committed, state, model, optim)

    def _apply(self, loaded: _Loaded) -> None:
        """Load verified tensors into the trainer; what still does not fit (optimizer layout, RNG) is reported."""
        optim = dict(loaded.optim)
        try:
            self.moe.load_state_dict(loaded.model)
            self.generator.set_state(optim.pop("rng"))
            student = optim.pop("student_obs", self.student_obs[:0].cpu())
            if student.shape[1:] != self.obs.shape[1:]:
                raise ValueError(f"student states of shape {tuple(student.shape)}")
            for name, opt in self._optimizers().items():  # Adam.load_state_dict moves moments to the params' device
                _restore_optimizer(name, opt, optim, loaded.state["optimizers"][name])
        except (KeyError, ValueError, TypeError, AttributeError, RuntimeError) as exc:
            raise _UnusableError(loaded.path, f"does not fit this trainer ({type(exc).__name__}: {exc})") from None
        self.student_obs = student.to(self.device, self.obs.dtype)
        self.iteration = loaded.state["iteration"]
        self.extra = loaded.state["extra"]
