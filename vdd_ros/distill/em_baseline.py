"""Baseline: the same Gaussian MoE fit to the demonstrations directly, by (generalised) EM.

This is the "MoE from scratch" comparison of VDD's Table 2 (EM-GPT): no teacher, the
forward-KL / maximum-likelihood fit. Each iteration takes one data batch, computes the
responsibilities r_z(s, a) with the current model (E-step, no grad), then takes one
Adam step on the expected complete-data log-likelihood
  sum_z r_z [log N(a; mu_z(s), Sigma_z(s)) + log q(z|s)]
for the experts (trunk and heads) and the gating (its own optimizer, detached features).
"""

from __future__ import annotations

import torch

from vdd_ros.distill.trainer import MoETrainer
from vdd_ros.moe.policy import expert_log_prob


class EMTrainer(MoETrainer):
    """Maximum-likelihood MoE on (obs, action) windows in normalised space.

    It shares ``TrainConfig`` (and so the state jitter) with VDD: a like-for-like baseline.
    """

    def step(self) -> dict[str, float]:
        idx = self._data_indices(self.train_config.batch_size)
        out = self.moe(self._jitter(self.obs[idx]))
        log_comp = expert_log_prob(self.actions[idx].unsqueeze(1), out.mean, out.scale)[:, 0]  # (B, Z)
        with torch.no_grad():
            resp = torch.softmax(log_comp + out.log_gating, dim=-1)
        expert_loss = -(resp * log_comp).sum(-1).mean()
        stats = {"expert_loss": self._update(self.expert_opt, expert_loss, "expert")}
        if self.gating_opt is not None:
            gating_loss = -(resp * out.log_gating).sum(-1).mean()
            stats["gating_loss"] = self._update(self.gating_opt, gating_loss, "gating")
        return stats
