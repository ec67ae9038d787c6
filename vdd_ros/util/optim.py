"""Optimizer state as tensors + JSON (for ``util.checkpoint``), learning-rate schedules, the loss guard.

Shared by teacher training and distillation so both resume the same way and decay the
learning rate with the same formulas.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Literal

import torch

from vdd_ros.util.checkpoint import NonFiniteError

Schedule = Literal["constant", "linear", "cosine"]


def optimizer_tensors(prefix: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``opt.state_dict()`` into tensors ``<prefix>.<param>.<slot>`` and JSON (param groups, scalars)."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, state in sd["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.{idx}.{name}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{idx}.{name}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def restore_optimizer(prefix: str, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Inverse of ``optimizer_tensors``; tensors without ``<prefix>.`` are ignored.

    ``load_state_dict`` moves the moments to the parameters' device.
    """
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        head, _, rest = key.partition(".")
        if head == prefix:
            idx, name = rest.split(".", 1)
            state.setdefault(int(idx), {})[name] = value
    for key, value in meta["scalars"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def lr_factor(step: int, total: int, schedule: Schedule = "linear", warmup: int = 0) -> float:
    """Multiplier of the base learning rate at 0-based ``step`` of ``total``.

    Linear warm-up over ``warmup`` steps, then constant, or linear or cosine decay reaching 0
    at ``total``.
    """
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else 1 - progress


def set_lr(optimizers: Iterable[torch.optim.Optimizer], lr: float) -> None:
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = lr


def checked_step(opt: torch.optim.Optimizer, loss: torch.Tensor, what: str, iteration: int) -> float:
    """Backward + optimizer step, refusing a non-finite loss before it touches the weights."""
    value = float(loss.detach())
    if not math.isfinite(value):
        raise NonFiniteError(f"{what} loss is {value} at iteration {iteration}; stopped, last good checkpoint kept")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return value
