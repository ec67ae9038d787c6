"""The tensor shapes a policy reads and writes, fixed by the teacher and the data rather than chosen.

Kept apart from the student's architecture settings (``vdd_ros.moe.policy.MoEConfig``) so a
distillation config holds only what a user may choose; the shapes come from the teacher.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class PolicyShape:
    """Observation window (T, obs_dim) in, action chunk (H, act_dim) out."""

    obs_dim: int
    act_dim: int
    obs_window: int = 1
    act_chunk: int = 1

    @property
    def action_size(self) -> int:
        """D = H * act_dim: the flattened chunk the MoE's Gaussians live on."""
        return self.act_chunk * self.act_dim

    @property
    def default_act_exec(self) -> int:
        """Actions of a chunk executed per inference unless a setting says otherwise: half the chunk, rounded up.

        Diffusion Policy executes 8 of 16: enough of the plan to keep its temporal consistency,
        re-planning often enough to react. A single action (H = 1) is always executed.
        """
        return -(-self.act_chunk // 2)
