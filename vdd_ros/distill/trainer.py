"""What every MoE trainer shares: two Adams, linear LR decay, the NaN guard, checkpoint/resume.

A checkpoint is a folder holding ``model-<it>.safetensors`` and ``optim-<it>.safetensors``
(model, Adam moments, RNG state) plus ``state.json`` (iteration, Adam hyperparameters,
scalars). Each file is written to a temporary name and renamed; ``state.json`` is
replaced last and names the tensor files, so it is the single commit point: a kill at
any moment leaves the previous checkpoint loadable. No pickle anywhere.
"""

from __future__ import annotations

import abc
import json
import os
import pathlib
import tempfile
from collections.abc import Callable
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from vdd_ros.moe.policy import GaussianMoE

_STATE = "state.json"


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss; the last good checkpoint is left untouched."""


def _atomic_write(path: pathlib.Path, write: Callable[[str], None]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


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
        directory = pathlib.Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tag = f"{self.iteration:08d}"
        model_name, optim_name = f"model-{tag}.safetensors", f"optim-{tag}.safetensors"
        model = {k: v.detach().contiguous().cpu() for k, v in self.moe.state_dict().items()}
        optim: dict[str, torch.Tensor] = {
            "rng": self.generator.get_state().cpu(),
            "student_obs": self.student_obs.detach().contiguous().cpu(),
        }
        optim_meta = {}
        for name, opt in self._optimizers().items():
            tensors, optim_meta[name] = _optimizer_tensors(name, opt)
            optim.update(tensors)
        _atomic_write(directory / model_name, lambda p: save_file(model, p))
        _atomic_write(directory / optim_name, lambda p: save_file(optim, p))
        state = {
            "iteration": self.iteration,
            "model": model_name,
            "optim": optim_name,
            "optimizers": optim_meta,
            "extra": self.extra,
        }
        _atomic_write(directory / _STATE, lambda p: pathlib.Path(p).write_text(json.dumps(state, indent=1)))
        for old in directory.glob("*.safetensors"):  # only after the commit point
            if old.name not in (model_name, optim_name):
                old.unlink(missing_ok=True)

    def load_checkpoint(self, directory: str | pathlib.Path) -> bool:
        """Restore from ``directory`` if it holds a checkpoint; False if there is none."""
        directory = pathlib.Path(directory)
        if not (directory / _STATE).is_file():
            return False
        state = json.loads((directory / _STATE).read_text())
        self.moe.load_state_dict(load_file(str(directory / state["model"]), device=str(self.device)))
        optim = load_file(str(directory / state["optim"]), device="cpu")
        self.generator.set_state(optim.pop("rng"))
        self.student_obs = optim.pop("student_obs", self.student_obs[:0].cpu()).to(self.device, self.obs.dtype)
        for name, opt in self._optimizers().items():  # Adam.load_state_dict moves moments to the params' device
            _restore_optimizer(name, opt, optim, state["optimizers"][name])
        self.iteration = int(state["iteration"])
        self.extra = state["extra"]
        return True
