"""1-D temporal U-Net denoiser over the action chunk (the network of Diffusion Policy, Chi et al. 2023).

The chunk (B, H, act_dim) is read as act_dim channels over H time steps. Each level has two
residual blocks of two (Conv1d, GroupNorm, Mish) layers; the condition -- the flattened
observation window and the noise-level embedding, through a small MLP -- sets a per-channel
scale and shift (FiLM) after the first layer of every block. Between levels a stride-2
convolution halves the time axis on the way down and a transposed convolution doubles it on
the way up, with skip connections between equal levels; two more blocks run at the coarsest
length in between.

Any H >= 1 works: the time axis is zero-padded on the right to a multiple of 2^(levels - 1)
(so every level always runs and the weights do not depend on H) and the output is cropped
back to H. Its constructor takes plain values, so an external teacher YAML can name it
(``module: vdd_ros.teacher.unet``, ``class: TemporalUNet``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vdd_ros.teacher.network import NoiseEmbedding, WindowFeatures


class ConvNormAct(nn.Sequential):
    """Conv1d (same length) -> GroupNorm -> Mish."""

    def __init__(self, c_in: int, c_out: int, kernel: int, groups: int) -> None:
        super().__init__(nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2), nn.GroupNorm(groups, c_out), nn.Mish())


class FiLMResidualBlock(nn.Module):
    """Two conv layers with FiLM from the condition between them, plus a (1x1 if needed) skip."""

    def __init__(self, c_in: int, c_out: int, cond_dim: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.first = ConvNormAct(c_in, c_out, kernel, groups)
        self.second = ConvNormAct(c_out, c_out, kernel, groups)
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * c_out))
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(cond).unsqueeze(-1).chunk(2, dim=1)
        h = self.first(x) * (1 + scale) + shift  # 1 + scale: a zero FiLM output leaves the features as they are
        return self.second(h) + self.skip(x)


class TemporalUNet(nn.Module):
    """f(noisy actions (B,H,A), obs window (B,T,O), condition (B,)) -> (B,H,A), like ``DenoiserMLP``.

    ``channels``: width per level (len(channels) - 1 halvings of the time axis); ``kernel_size``:
    odd temporal kernel; ``groups``: GroupNorm groups, dividing every width; ``emb_dim``: noise
    features; ``cond_width``: width of the conditioning MLP that feeds every block's FiLM;
    ``obs_deltas``, ``obs_differences``: also condition on the window's scaled successive differences
    and on standardised differences of observation pairs (``WindowFeatures``).
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        obs_window: int,
        act_chunk: int,
        channels: Sequence[int] = (64, 128, 256),
        kernel_size: int = 5,
        groups: int = 8,
        emb_dim: int = 32,
        cond_width: int = 256,
        obs_deltas: bool = False,
        obs_differences: tuple[tuple[int, int], ...] = (),
    ) -> None:
        super().__init__()
        channels = tuple(channels)
        self.act_shape = (act_chunk, act_dim)
        self.multiple = 2 ** (len(channels) - 1)  # the padded length must survive every halving
        self.embed = NoiseEmbedding(emb_dim)
        self.window = WindowFeatures(obs_dim, obs_window, obs_deltas, obs_differences)
        self.cond_mlp = nn.Sequential(
            nn.Linear(emb_dim + self.window.size, cond_width), nn.Mish(), nn.Linear(cond_width, cond_width)
        )

        def block(c_in: int, c_out: int) -> FiLMResidualBlock:
            return FiLMResidualBlock(c_in, c_out, cond_width, kernel_size, groups)

        self.down = nn.ModuleList(
            nn.ModuleList([block(c_in, c_out), block(c_out, c_out)])
            for c_in, c_out in zip((act_dim, *channels[:-1]), channels, strict=True)
        )
        self.downsample = nn.ModuleList(nn.Conv1d(c, c, 3, stride=2, padding=1) for c in channels[:-1])
        self.mid = nn.ModuleList([block(channels[-1], channels[-1]), block(channels[-1], channels[-1])])
        self.upsample = nn.ModuleList(nn.ConvTranspose1d(c, c, 4, stride=2, padding=1) for c in channels[:0:-1])
        self.up = nn.ModuleList(
            nn.ModuleList([block(c_out + c_in, c_in), block(c_in, c_in)])
            for c_in, c_out in zip(channels[-2::-1], channels[:0:-1], strict=True)
        )
        self.head = nn.Sequential(
            ConvNormAct(channels[0], channels[0], kernel_size, groups), nn.Conv1d(channels[0], act_dim, 1)
        )

    def forward(self, noisy: torch.Tensor, obs: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        b = noisy.shape[0]
        horizon = self.act_shape[0]
        c = self.cond_mlp(torch.cat([self.embed(cond), self.window(obs)], dim=-1))
        x = noisy.reshape(b, *self.act_shape).transpose(1, 2)  # (B, A, H): channels over time
        x = F.pad(x, (0, -horizon % self.multiple))
        skips = []
        for i, (first, second) in enumerate(self.down):
            x = second(first(x, c), c)
            if i < len(self.downsample):
                skips.append(x)
                x = self.downsample[i](x)
        for mid in self.mid:
            x = mid(x, c)
        for upsample, (first, second) in zip(self.upsample, self.up, strict=True):
            x = upsample(x)
            x = second(first(torch.cat([x, skips.pop()], dim=1), c), c)
        return self.head(x)[:, :, :horizon].transpose(1, 2)
