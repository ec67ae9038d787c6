"""What every MoE trainer shares: two Adams, linear LR decay, the NaN guard, checkpoint/resume.

A checkpoint (``vdd_ros.util.checkpoint``, whose module doc gives the crash guarantees) holds
two tensor groups, ``model`` (the MoE) and ``optim`` (Adam moments, the RNG state and the
student's visited states), plus JSON ``optimizers`` (Adam hyperparameters) and ``extra``
(the caller's state). The folder keeps the last two; a damaged newest one falls back to the
one before, and non-finite weights are never saved.

Data parallel (inside a ``vdd_ros.util.distributed`` session): every rank holds the same
weights and draws its own batches (generator seeded per rank); after each backward the
gradients are averaged over the ranks before the optimizer step, all ranks agree on
stopping, and rank 0 alone writes checkpoints, which hold every rank's generator state.
"""

from __future__ import annotations

import abc
import math
import pathlib
from collections.abc import Callable
from typing import Any

import torch

from vdd_ros.distill.config import TrainConfig
from vdd_ros.moe.policy import GaussianMoE
from vdd_ros.util import distributed
from vdd_ros.util.checkpoint import Checkpoint, CheckpointStore, NonFiniteError, UnusableCheckpointError, shape_mismatch
from vdd_ros.util.optim import checked_step, lr_factor, optimizer_tensors, restore_optimizer, set_lr


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
        train: TrainConfig,
        seed: int = 0,
        device: torch.device | str = "cpu",
        episode_steps: torch.Tensor | None = None,
    ) -> None:
        """``episode_steps`` (N,): each window's step within its demonstration, for ``train.start_fraction``."""
        device = torch.device(device)
        if train.iterations < 1:
            raise ValueError("iterations must be >= 1")
        if train.obs_noise < 0:
            raise ValueError("obs_noise must be resolved (>= 0) before training; < 0 means the teacher's value")
        self.obs = obs.to(device)  # (N, T, obs_dim) normalised dataset windows
        self.actions = actions.reshape(actions.shape[0], -1).to(device)  # (N, H * act_dim)
        if self.obs.shape[0] != self.actions.shape[0]:
            raise ValueError("obs and actions must hold the same number of windows")
        self.moe = moe.to(device)
        self.device = device
        self.start_windows = self._start_windows(episode_steps, train)
        # Normalised windows the student itself visited (see add_student_states); empty = dataset only.
        self.student_obs = torch.zeros((0, *self.obs.shape[1:]), dtype=self.obs.dtype, device=device)
        self.train_config = train
        self.iterations = train.iterations
        self.base_lr = train.lr
        self.lr_decay = train.lr_decay
        self.iteration = 0
        self.extra: dict[str, Any] = {}  # caller's JSON-safe state, saved and restored with checkpoints
        self.generator = torch.Generator(device=device).manual_seed(distributed.rank_seed(seed))
        self.skipped_checkpoints: list[str] = []  # "<file>: <reason>" for each checkpoint the last load skipped
        self._stores: dict[pathlib.Path, CheckpointStore] = {}  # one per checkpoint folder (see _store)
        self.expert_opt = torch.optim.Adam(moe.expert_parameters(), lr=train.lr)
        gating = moe.gating_parameters()
        self.gating_opt = torch.optim.Adam(gating, lr=train.lr) if gating else None

    @abc.abstractmethod
    def step(self) -> dict[str, float]:
        """One training iteration; returns scalar diagnostics."""

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        opts = {"expert": self.expert_opt}
        if self.gating_opt is not None:
            opts["gating"] = self.gating_opt
        return opts

    def _set_lr(self) -> float:
        lr = self.base_lr * lr_factor(self.iteration, self.iterations, "linear" if self.lr_decay else "constant")
        set_lr(self._optimizers().values(), lr)
        return lr

    def _update(self, opt: torch.optim.Optimizer, loss: torch.Tensor, what: str) -> float:
        """Backward + Adam step, refusing non-finite losses (NonFiniteError) before they touch the weights.

        Data parallel, the gradients and the loss are averaged over the ranks first (explicit
        all-reduce rather than DDP: the two optimizers take separate backward passes, the EM
        step two of them through one forward, and the gating loss bypasses ``forward``).
        Returns the loss (its mean over the ranks).
        """
        if not distributed.active():
            return checked_step(opt, loss, what, self.iteration)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        value = distributed.average_gradients((p for g in opt.param_groups for p in g["params"]), loss)
        if not math.isfinite(value):  # the same on every rank, so all stop together
            raise NonFiniteError(
                f"{what} loss is {value} at iteration {self.iteration} (mean over {distributed.world_size()} "
                "processes); stopped, last good checkpoint kept"
            )
        opt.step()
        return value

    def _batch_indices(self, n: int, batch: int) -> torch.Tensor:
        return torch.randint(n, (batch,), generator=self.generator, device=self.device)

    def _start_windows(self, episode_steps: torch.Tensor | None, train: TrainConfig) -> torch.Tensor:
        """Indices of the windows ``start_fraction`` over-samples (empty when it is off)."""
        if train.start_fraction <= 0:
            return torch.zeros(0, dtype=torch.long, device=self.device)
        if episode_steps is None or episode_steps.shape != (self.obs.shape[0],):
            raise ValueError("train.start_fraction needs each window's step within its demonstration (episode_steps)")
        return torch.nonzero(episode_steps.to(self.device) < train.start_steps).flatten()

    def _data_indices(self, batch: int) -> torch.Tensor:
        """Dataset windows of one batch: ``train.start_fraction`` of it from demonstration starts, the rest uniform.

        The demonstrator picks its mode in the first few windows of each demonstration; drawn
        uniformly they are under 1 % of a batch, too few for the student to learn the choice there.
        """
        k = round(batch * self.train_config.start_fraction) if self.start_windows.numel() else 0
        uniform = self._batch_indices(self.obs.shape[0], batch - k)
        if not k:
            return uniform
        return torch.cat([uniform, self.start_windows[self._batch_indices(self.start_windows.numel(), k)]])

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
        parts = [self.obs[self._data_indices(batch - k)]]
        if k:
            parts.append(self.student_obs[self._batch_indices(self.student_obs.shape[0], k)])
        return torch.cat(parts)

    def _jitter(self, obs: torch.Tensor) -> torch.Tensor:
        """Gaussian noise (``obs_noise``) on normalised dataset states, as the teacher saw them in training.

        Student rollouts drift slightly off the demonstrations; distilling on jittered states
        (where the teacher, trained with the same jitter, is reliable) teaches the way back.
        """
        std = self.train_config.obs_noise
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

        ``on_progress`` gets the mean of each diagnostic over the iterations since its last
        call (every ``progress_every`` iterations and at ``until``). Checkpoints every
        ``checkpoint_every`` iterations, when stopped and at ``until``; on a NaN the error
        propagates and the folder keeps the last good checkpoint.
        """
        until = self.iterations if until is None else min(until, self.iterations)
        self.moe.train()
        window: dict[str, list[float]] = {}
        while self.iteration < until:
            if should_stop is not None and distributed.any_rank(should_stop()):
                if checkpoint_dir is not None:
                    self.save_checkpoint(checkpoint_dir)
                return False
            lr = self._set_lr()
            for key, value in self.step().items():
                window.setdefault(key, []).append(value)
            self.iteration += 1
            if on_progress is not None and (self.iteration % progress_every == 0 or self.iteration == until):
                means = {key: sum(values) / len(values) for key, values in window.items()}
                window = {}
                on_progress({"iteration": self.iteration, "iterations": self.iterations, "lr": lr, **means})
            if checkpoint_dir is not None and checkpoint_every > 0 and self.iteration % checkpoint_every == 0:
                self.save_checkpoint(checkpoint_dir)
        if checkpoint_dir is not None and (checkpoint_every <= 0 or self.iteration % checkpoint_every != 0):
            self.save_checkpoint(checkpoint_dir)
        return True

    def _store(self, directory: str | pathlib.Path) -> CheckpointStore:
        """The store of ``directory``, which remembers the checkpoint this trainer last committed or loaded there."""
        path = pathlib.Path(directory)
        if path not in self._stores:
            self._stores[path] = CheckpointStore(path, ("model", "optim"), {"optimizers": dict, "extra": dict})
        return self._stores[path]

    def save_checkpoint(self, directory: str | pathlib.Path) -> None:
        """Commit the current state as the newest checkpoint, keeping the previous one.

        Refuses non-finite weights (NonFiniteError) so a diverged model never replaces a good checkpoint.
        Data parallel, every rank calls it (to hand over its generator state) and rank 0 writes.
        """
        optim, optimizers = self._optim_tensors()
        states = distributed.all_gather_object(optim["rng"])
        if not distributed.is_main():
            return
        optim.update({f"rng.{r}": state for r, state in enumerate(states) if r > 0})
        tensors = {"model": self.moe.state_dict(), "optim": optim}
        self._store(directory).save(self.iteration, tensors, {"optimizers": optimizers, "extra": self.extra})

    def _optim_tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """RNG, student states and Adam moments as tensors; Adam hyperparameters as JSON."""
        optim: dict[str, torch.Tensor] = {
            "rng": self.generator.get_state().cpu(),
            "student_obs": self.student_obs.detach().contiguous().cpu(),
        }
        meta = {}
        for name, opt in self._optimizers().items():
            tensors, meta[name] = optimizer_tensors(name, opt)
            optim.update(tensors)
        return optim, meta

    def load_checkpoint(self, directory: str | pathlib.Path) -> bool:
        """Restore the newest usable checkpoint in ``directory``; False if it holds none (a fresh start).

        Unusable checkpoints skipped on the way are listed in ``skipped_checkpoints`` ("<file>: <reason>").
        Raises CheckpointError if there are checkpoints but none is usable.
        """
        store = self._store(directory)
        try:
            return store.load(self._apply) is not None
        finally:
            self.skipped_checkpoints = list(store.skipped)

    def _apply(self, checkpoint: Checkpoint) -> None:
        """Load a verified checkpoint into the trainer; what does not fit it raises UnusableCheckpointError."""
        mismatch = shape_mismatch(self.moe.state_dict(), checkpoint.tensors["model"])
        if mismatch:
            raise UnusableCheckpointError(checkpoint.file("model"), f"does not fit this model ({mismatch})")
        optim = dict(checkpoint.tensors["optim"])
        rank = distributed.rank()
        try:
            self.moe.load_state_dict(checkpoint.tensors["model"])
            rng = optim.pop("rng")
            # Rank r > 0 resumes its own generator; one the checkpoint lacks (written by fewer
            # ranks) keeps its fresh per-rank seed.
            own_rng = rng if rank == 0 else optim.get(f"rng.{rank}")
            if own_rng is not None:
                self.generator.set_state(own_rng)
            student = optim.pop("student_obs", self.student_obs[:0].cpu())
            if student.shape[1:] != self.obs.shape[1:]:
                raise ValueError(f"student states of shape {tuple(student.shape)}")
            for name, opt in self._optimizers().items():
                restore_optimizer(name, opt, optim, checkpoint.fields["optimizers"][name])
        except (KeyError, ValueError, TypeError, AttributeError, RuntimeError) as exc:
            raise UnusableCheckpointError(
                checkpoint.path, f"does not fit this trainer ({type(exc).__name__}: {exc})"
            ) from None
        self.student_obs = student.to(self.device, self.obs.dtype)
        self.iteration = checkpoint.iteration
        self.extra = checkpoint.fields["extra"]
