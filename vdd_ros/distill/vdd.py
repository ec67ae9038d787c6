"""Variational Diffusion Distillation (Zhou et al., NeurIPS 2024): the trainer.

Follows vdd_method.md §1-§5 and the §10 checklist. Per iteration: ``expert_steps``
expert updates on fresh batches of dataset states, then ``gating_steps`` gating updates
on a fresh batch of (state, action) pairs. Everything lives in the teacher's
normalised spaces.

Expert objective for state s and expert z (maximised), with a_v = mu_z + L_z eps_v:
  O_{s,z} = 1/V sum_v [ sg(S(a_v, s, sigma_v)) . a_v + log q~(z | a_v, s) ] + H[N(mu_z, Sigma_z)]
  loss    = -mean_{s,z} sg(q(z|s)) O_{s,z}
where S is the teacher score (no grad), q~ the responsibilities computed with detached
mu, L and gating but the live sample a_v (the term that keeps experts apart), and the
entropy is closed-form with full gradient.

Noise schedule (``VDDConfig.noise_schedule``): "uniform" draws every level in the whole
[noise_low, noise_high] all run (the paper); "anneal" lowers the upper end towards
noise_low, so the smoothed score first pulls the experts apart onto separate modes and
the nearly clean score then sharpens each one (docs/results.md, "noise schedule").
"""

from __future__ import annotations

import torch

from vdd_ros.distill.config import TrainConfig, VDDConfig
from vdd_ros.distill.trainer import MoETrainer
from vdd_ros.moe.policy import GaussianMoE, MoEOutput, entropy, expert_log_prob, rsample
from vdd_ros.teacher.base import Teacher


def log_q_tilde(samples: torch.Tensor, out: MoEOutput) -> torch.Tensor:
    """log q~(z | a, s) of each expert's own samples, (B, Z, V).

    mu, L and the gating are detached (q~ is the fixed E-step posterior); ``samples``
    (B, Z, V, D) stay live, so the gradient moves a_v towards where expert z dominates.
    """
    b, z, v, d = samples.shape
    joint = expert_log_prob(samples.reshape(b, z * v, d), out.mean.detach(), out.scale.detach())
    joint = (joint + out.log_gating.detach().unsqueeze(1)).view(b, z, v, z)
    own = torch.diagonal(joint, dim1=1, dim2=3).permute(0, 2, 1)  # joint[b, z, v, z] -> (B, Z, V)
    return own - torch.logsumexp(joint, dim=-1)


def annealed_noise_range(low: float, high: float, progress: float, fraction: float) -> tuple[float, float]:
    """[low, high'] at ``progress`` (0..1) of the run: high' falls linearly from high to low until ``fraction``.

    Whole-step (int) bounds, as DDPM teachers resolve them, stay whole steps (rounded).
    """
    done = 1.0 if fraction <= 0 else min(1.0, progress / fraction)
    top = high - (high - low) * done
    if isinstance(low, int) and isinstance(high, int):
        return low, max(low, round(top))
    return low, max(low, top)  # high - (high - low) can round below low (1.0 - 0.8 = 0.19999999999999996)


def teacher_score(
    teacher: Teacher,
    samples: torch.Tensor,
    obs: torch.Tensor,
    noise_low: float | None,
    noise_high: float | None,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Score at every sample, one noise level per (state, expert, sample); a constant (no grad)."""
    b, z, v, d = samples.shape
    with torch.no_grad():
        levels = teacher.sample_noise_levels(b * z * v, noise_low, noise_high, generator=generator)
        obs_rep = obs.repeat_interleave(z * v, dim=0)
        actions = samples.detach().reshape(b * z * v, teacher.act_chunk, teacher.act_dim)
        return teacher.score(actions, obs_rep, levels).reshape(b, z, v, d)


def vdd_expert_loss(
    moe: GaussianMoE,
    teacher: Teacher,
    obs: torch.Tensor,
    samples_per_expert: int,
    noise_low: float | None = None,
    noise_high: float | None = None,
    generator: torch.Generator | None = None,
    use_q_tilde: bool = True,
    expert_weighting: str = "gating",
) -> tuple[torch.Tensor, dict[str, float]]:
    """The per-expert upper bound (negated, averaged over states and experts) and diagnostics.

    Each state's expert objectives are weighted by sg(q(z|s)) (``gating``, the paper) or 1/Z
    (``uniform``; see ``VDDConfig.expert_weighting``).
    """
    out = moe(obs)
    b, z, d = out.mean.shape
    eps = torch.randn(b, z, samples_per_expert, d, generator=generator, device=obs.device)
    samples = rsample(out.mean, out.scale, eps)
    score = teacher_score(teacher, samples, obs, noise_low, noise_high, generator)
    surrogate = (score * samples).sum(-1)  # gradient = score . da/dtheta
    lq = log_q_tilde(samples, out) if use_q_tilde else torch.zeros_like(surrogate)
    ent = entropy(out.mean, out.scale)
    objective = (surrogate + lq).mean(-1) + ent
    weight = out.log_gating.detach().exp() if expert_weighting == "gating" else 1.0 / z
    loss = -(weight * objective).mean()
    stats = {"log_q_tilde": float(lq.detach().mean()), "expert_entropy": float(ent.detach().mean())}
    return loss, stats


def responsibility_cross_entropy(
    log_gating: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor, actions: torch.Tensor
) -> torch.Tensor:
    """-sum_z r_z log q(z|s), r = softmax_z(log N(a; mu_z, Sigma_z) + log q(z|s)) held constant: the EM step."""
    with torch.no_grad():
        resp = torch.softmax(expert_log_prob(actions.unsqueeze(1), mean, scale)[:, 0] + log_gating, dim=-1)
    return -(resp * log_gating).sum(-1).mean()


def gating_loss(moe: GaussianMoE, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """EM soft cross-entropy of q(z|s) against responsibilities of dataset actions (B, D).

    The responsibilities are constants; the gating net reads detached trunk features, so
    only the gating net receives gradient.
    """
    feats = moe.features(obs)
    with torch.no_grad():
        mean, scale = moe.experts(feats)
    return responsibility_cross_entropy(moe.log_gating(feats), mean, scale, actions)


class VDDTrainer(MoETrainer):
    """Distils ``teacher`` into ``moe`` using only dataset states (and dataset actions for the gating)."""

    def __init__(
        self,
        moe: GaussianMoE,
        teacher: Teacher,
        obs: torch.Tensor,
        actions: torch.Tensor,
        train: TrainConfig,
        config: VDDConfig,
        seed: int = 0,
        device: torch.device | str = "cpu",
        use_q_tilde: bool = True,
        episode_steps: torch.Tensor | None = None,
    ) -> None:
        """``use_q_tilde`` False drops the term that keeps experts apart: the tests' negative control only."""
        super().__init__(moe, obs, actions, train, seed, torch.device(device), episode_steps)
        self.teacher = teacher.to(self.device).eval().requires_grad_(False)
        self.config = config
        self.use_q_tilde = use_q_tilde
        # Negative bounds select the teacher's own default range (None), resolved here only when
        # annealing needs numbers; "uniform" passes them through unchanged.
        self.noise_range = tuple(None if x < 0 else x for x in (config.noise_low, config.noise_high))
        if config.noise_schedule == "anneal":
            self.noise_range = self.teacher.check_noise_range(*self.noise_range)

    def current_noise_range(self) -> tuple[float | None, float | None]:
        """The range the score's noise levels are drawn from at this iteration (see ``noise_schedule``)."""
        if self.config.noise_schedule == "uniform":
            return self.noise_range
        low, high = self.noise_range
        return annealed_noise_range(low, high, self.iteration / self.iterations, self.config.anneal_fraction)

    def step(self) -> dict[str, float]:
        cfg, batch = self.config, self.train_config.batch_size
        stats: dict[str, float] = {}
        noise_range = self.current_noise_range()
        for _ in range(cfg.expert_steps):
            states = self._state_batch(batch, cfg.student_states)
            loss, stats = vdd_expert_loss(
                self.moe,
                self.teacher,
                self._jitter(states),
                cfg.samples_per_expert,
                *noise_range,
                self.generator,
                self.use_q_tilde,
                cfg.expert_weighting,
            )
            stats["expert_loss"] = self._update(self.expert_opt, loss, "expert")
        if self.gating_opt is not None:
            for _ in range(cfg.gating_steps):
                idx = self._data_indices(batch)
                loss = gating_loss(self.moe, self._jitter(self.obs[idx]), self.actions[idx])
                stats["gating_loss"] = self._update(self.gating_opt, loss, "gating")
        return stats
