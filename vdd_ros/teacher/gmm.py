"""An analytic stand-in teacher: a state-conditioned Gaussian mixture with an exact score.

Its score is exact, so a distillation failure on it is the distiller's fault, never the
teacher's. At noise level sigma the score is that of the mixture convolved with
N(0, sigma^2 I), i.e. every component's variance becomes std^2 + sigma^2 -- what a perfect
denoiser gives. Component k has weight w_k and mean ``centres[k] + slopes[k] @ s`` with s the
flattened observation window, so the modes move with the state while the weights stay
unequal and fixed. It has nothing to train, so it is a ``Teacher`` but not a registered
(trainable) family.
"""

from __future__ import annotations

import math

import torch

from vdd_ros.teacher.base import Teacher


class GaussianMixtureTeacher(Teacher):
    """pi(a|s) = sum_k w_k N(a; centres_k + slopes_k s, std^2 I) over whole chunks a (B, H, act_dim)."""

    family = "gmm"

    def __init__(
        self,
        centres: torch.Tensor,
        weights: torch.Tensor | None = None,
        slopes: torch.Tensor | None = None,
        std: float = 0.5,
        act_chunk: int = 1,
        obs_dim: int = 1,
        obs_window: int = 1,
    ) -> None:
        """``centres`` (K, H * act_dim); ``weights`` (K,) summing to 1 (default equal); ``slopes``
        (K, H * act_dim, obs_window * obs_dim) (default zero: state-independent modes)."""
        super().__init__()
        k, d = centres.shape
        if d % act_chunk:
            raise ValueError(f"centres of width {d} do not split into chunks of {act_chunk} actions")
        self.obs_dim, self.act_dim, self.obs_window, self.act_chunk = obs_dim, d // act_chunk, obs_window, act_chunk
        self.std = std
        weights = torch.full((k,), 1.0 / k) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
        if weights.shape != (k,) or weights.min() <= 0 or abs(float(weights.sum()) - 1) > 1e-5:
            raise ValueError(f"weights must be {k} positive numbers summing to 1, got {weights.tolist()}")
        slopes = torch.zeros(k, d, obs_window * obs_dim) if slopes is None else slopes
        if slopes.shape != (k, d, obs_window * obs_dim):
            raise ValueError(f"slopes must have shape {(k, d, obs_window * obs_dim)}, got {tuple(slopes.shape)}")
        self.register_buffer("centres", centres.float())
        self.register_buffer("slopes", slopes.float())
        self.register_buffer("weights", weights)

    @classmethod
    def random(
        cls,
        weights: tuple[float, ...],
        act_dim: int,
        act_chunk: int = 1,
        obs_dim: int = 2,
        separation: float = 2.0,
        drift: float = 0.3,
        std: float = 0.3,
        seed: int = 0,
    ) -> GaussianMixtureTeacher:
        """A test mixture over chunks of D = act_chunk * act_dim >= len(weights) dimensions.

        The centres form a randomly rotated regular simplex (every pair ``separation`` apart,
        centred on 0); each mode moves by ``drift`` per unit of every state coordinate, in its
        own random directions, so the experts must follow the state.
        """
        k, d = len(weights), act_chunk * act_dim
        if d < k:
            raise ValueError(f"{k} equidistant modes need D >= {k}, got D = {d}")
        g = torch.Generator().manual_seed(seed)
        basis, _ = torch.linalg.qr(torch.randn(d, d, generator=g))
        centres = basis[:k] - basis[:k].mean(0)
        directions = torch.randn(k, d, obs_dim, generator=g)
        slopes = drift * directions / directions.norm(dim=1, keepdim=True)
        return cls(centres * separation / math.sqrt(2), torch.tensor(weights), slopes, std, act_chunk, obs_dim)

    @property
    def default_sample_steps(self) -> int:
        return 1

    @property
    def sampler(self) -> str:
        return "exact"

    def means(self, obs: torch.Tensor) -> torch.Tensor:
        """Component means (B, K, H * act_dim) at observation windows (B, T, obs_dim)."""
        return self.centres + torch.einsum("kds,bs->bkd", self.slopes, obs.reshape(obs.shape[0], -1).to(self.slopes))

    def _log_components(self, a: torch.Tensor, means: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        """log w_k + log N(a; m_k, var I) for a (B, D), means (B, K, D), var (B,) -> (B, K)."""
        sq = (a.unsqueeze(1) - means).square().sum(-1)
        log_norm = 0.5 * a.shape[-1] * torch.log(2 * math.pi * var)
        return self.weights.log() - 0.5 * sq / var.unsqueeze(1) - log_norm.unsqueeze(1)

    def _variance(self, a: torch.Tensor, noise_level: torch.Tensor | float) -> torch.Tensor:
        return self.std**2 + torch.as_tensor(noise_level, dtype=a.dtype, device=a.device).square().expand(a.shape[0])

    def log_prob(
        self, actions: torch.Tensor, obs: torch.Tensor, noise_level: torch.Tensor | float = 0.0
    ) -> torch.Tensor:
        """Exact log density (B,) of chunks (B, H, act_dim) given windows (B, T, obs_dim) at a noise level."""
        a = actions.reshape(actions.shape[0], -1)
        return torch.logsumexp(self._log_components(a, self.means(obs), self._variance(a, noise_level)), dim=-1)

    def responsibilities(self, actions: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """p(k | a, s) (B, K) of the clean mixture: which mode a chunk belongs to."""
        a = actions.reshape(actions.shape[0], -1)
        return torch.softmax(self._log_components(a, self.means(obs), self._variance(a, 0.0)), dim=-1)

    def mode_coverage(self, obs: torch.Tensor, expert_means: torch.Tensor, tol: float) -> torch.Tensor:
        """(B, K) bool: whether some expert mean (B, Z, D) lies within ``tol`` of mode k at each state."""
        return torch.cdist(self.means(obs), expert_means).min(-1).values < tol

    def mode_weights(self, obs: torch.Tensor, expert_means: torch.Tensor, gating: torch.Tensor) -> torch.Tensor:
        """(B, K) the student's weight of each mode: the gating (B, Z) summed over the experts nearest to it."""
        nearest = torch.cdist(expert_means, self.means(obs)).argmin(-1)
        return gating.new_zeros(gating.shape[0], len(self.weights)).scatter_add(1, nearest, gating)

    def score(self, actions: torch.Tensor, obs: torch.Tensor, noise_level: torch.Tensor) -> torch.Tensor:
        """sum_k r_k(a) (m_k - a) / (std^2 + sigma^2), with r the component responsibilities."""
        a = actions.reshape(actions.shape[0], -1)
        var = self._variance(a, noise_level)
        means = self.means(obs)
        r = torch.softmax(self._log_components(a, means, var), dim=-1)
        return ((torch.einsum("bk,bkd->bd", r, means) - a) / var.unsqueeze(1)).view_as(actions)

    def _sample(self, obs: torch.Tensor, steps: int, noise: torch.Tensor) -> torch.Tensor:
        """Exact draws: row 0 of ``noise`` is the Gaussian offset; row 1's first entry, through
        the normal CDF and the weights' inverse CDF, picks the mode (further rows are unused)."""
        u = torch.special.ndtr(noise[1, :, 0, 0]).clamp(max=1 - 1e-7)
        k = torch.searchsorted(self.weights.cumsum(0), u.to(self.weights), right=True).clamp(max=len(self.weights) - 1)
        mean = self.means(obs)[torch.arange(obs.shape[0], device=obs.device), k]
        return (mean + self.std * noise[0].reshape(obs.shape[0], -1)).view(obs.shape[0], self.act_chunk, self.act_dim)

    def _noise_range(self, low: float | None, high: float | None) -> tuple[float, float]:
        """Default 0 (the exact clean score needs no smoothing); ``high`` defaults to ``low``."""
        lo = 0.0 if low is None else low
        hi = lo if high is None else high
        if not 0 <= lo <= hi:
            raise ValueError(f"Gaussian-mixture noise levels are sigmas with 0 <= low <= high, got {lo}..{hi}")
        return lo, hi

    def sample_noise_levels(
        self, n: int, low: float | None = None, high: float | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        lo, hi = self._noise_range(low, high)
        u = torch.rand(n, generator=generator, device=self.centres.device)
        return lo + (hi - lo) * u
