"""Scale of the successive differences inside observation windows, shared by teacher and student nets.

Observations are z-scored over the whole workspace, so one control step moves a position by
a few hundredths of a unit: a network over absolute coordinates barely resolves the motion.
Nets that want it as an input multiply the differences by this scale (a buffer fitted on the
training windows and saved with the weights), which brings them to unit std.
"""

from __future__ import annotations

import torch


def step_scale(obs: torch.Tensor) -> torch.Tensor:
    """(F,) 1 / std of the successive differences of windows (N, T, F); ones when T == 1."""
    if obs.shape[1] < 2:
        return torch.ones(obs.shape[-1], dtype=obs.dtype, device=obs.device)
    std = (obs[:, 1:] - obs[:, :-1]).reshape(-1, obs.shape[-1]).std(0)
    return 1.0 / std.clamp_min(1e-6)
