"""What the task runner needs from a policy, whatever it is (teacher, ONNX MoE, expert)."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Policy(Protocol):
    """N parallel closed-loop streams in raw (physical) units.

    ``reset`` starts new episodes (fresh observation windows, reseeded randomness);
    ``act`` takes the newest observation of every stream, shape (N, obs_dim), and returns
    the action to apply now, shape (N, act_dim). Windowing happens inside the policy.
    """

    name: str

    def reset(self, n: int, seed: int) -> None: ...

    def act(self, obs: np.ndarray) -> np.ndarray: ...
