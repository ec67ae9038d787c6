"""Your own teacher: any noise-prediction network, described by a small YAML, as a ``Teacher``.

A ``teacher.yaml`` names a ``torch.nn.Module`` (import path or a ``.py`` file next to the
YAML), its constructor arguments, a safetensors state dict, what it predicts, how it is
called, its diffusion schedule and its own normalisation. ``load_teacher`` (teacher.checkpoint)
accepts such a file wherever it accepts a checkpoint folder, so ``distill`` and ``evaluate``
run on the network unchanged. Loading a YAML imports and runs the module it names: load only
files you trust (a checkpoint folder, by contrast, holds data only).

Spaces. The network works in *its* space: observations o = (raw - m_o) / s_o and actions
a = (raw - m_a) / s_a (``normalization``; omitted = raw units). The package (distillation,
student, export) works in its normalised space u (``package_normalization``; omitted = the
model's). Per feature a = s u + m with s = s_pkg / s_a and m = (m_pkg - m_a) / s_a. A density
transforms as p_u(u) = p_a(s u + m) |s|, so

    grad_u log p_u(u) = s * grad_a log p_a(s u + m)           (elementwise, s diagonal).

Noise levels are the model's (the step t, or sigma in the model's action units): noise of
std sigma on a is noise of std sigma / s on u, so the score returned at level sigma is the
exact score of the package-space action density convolved with N(0, diag(sigma / s)^2).

Score per prediction (VDD feeds the clean action as the noisy input x, as ``ddpm.py`` does).
DDPM, x = sqrt(ab) x0 + sqrt(1 - ab) eps with ab = alpha_bar_t, grad_x log p_t(x) = -E[eps | x] / sqrt(1 - ab):

- epsilon: score = -eps_hat / sqrt(1 - ab).
- x0: eps_hat = (x - sqrt(ab) x0_hat) / sqrt(1 - ab), so score = (sqrt(ab) x0_hat - x) / (1 - ab).
- v = sqrt(ab) eps - sqrt(1 - ab) x0. With x = sqrt(ab) x0 + sqrt(1 - ab) eps:
  sqrt(ab) x - sqrt(1 - ab) v = (ab + 1 - ab) x0 + (sqrt(ab) sqrt(1 - ab) - sqrt(1 - ab) sqrt(ab)) eps = x0,
  sqrt(1 - ab) x + sqrt(ab) v = (1 - ab + ab) eps + 0 * x0 = eps,
  so x0_hat = sqrt(ab) x - sqrt(1 - ab) v_hat and eps_hat = sqrt(1 - ab) x + sqrt(ab) v_hat.

EDM (x = x0 + sigma eps): score = (D(x; sigma) - x) / sigma^2 with the denoiser D = E[x0 | x].
``preconditioning: none``: the network is called with sigma and returns D (``prediction: x0``)
or eps_hat (``prediction: epsilon``, D = x - sigma eps_hat). ``preconditioning: karras``: the
network is the raw F, called with (c_in x, c_noise = ln(sigma) / 4) (``samplers.edm_scalings``),
and D = c_skip x + c_out F. v-prediction is supported for DDPM schedules only.

Sampling runs the shared samplers (``teacher.samplers``) in the model's space and maps the
result to u. The wrapped module is frozen: eval mode (kept by ``train``), no gradients.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import math
import pathlib
import sys
from types import ModuleType
from typing import Any, Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from vdd_ros.data.normalizer import Normalizer
from vdd_ros.teacher import samplers
from vdd_ros.teacher.base import Teacher
from vdd_ros.teacher.checkpoint import TeacherCheckpointError, TeacherMeta
from vdd_ros.teacher.ddpm import _SAMPLERS as DDPM_SAMPLERS
from vdd_ros.teacher.ddpm import _step_range, cosine_alpha_bar, strided_timesteps
from vdd_ros.teacher.edm import _SAMPLERS as EDM_SAMPLERS
from vdd_ros.teacher.edm import _sigma_range, karras_sigmas
from vdd_ros.util.config import ConfigError, from_dict, knob, read_yaml
from vdd_ros.util.files import sha256_file

FAMILY = "external"
ROLES = ("noisy", "obs", "t")


@dataclasses.dataclass(frozen=True)
class LinearBetas:
    """Linearly spaced betas (the DDPM paper's schedule)."""

    steps: int = knob(1000, "N, number of steps")
    beta_start: float = knob(1e-4, "beta_0")
    beta_end: float = knob(0.02, "beta_{N-1}")


@dataclasses.dataclass(frozen=True)
class DDPMSchedule:
    """A variance-preserving schedule: give exactly one of alpha_bar, betas, cosine, linear."""

    kind: Literal["ddpm"] = knob("ddpm", "ddpm: variance preserving, noise level = step index t")
    steps: int = knob(0, "N the network was trained with; 0 = the length of the given schedule")
    alpha_bar: tuple[float, ...] = knob((), "cumulative alpha_bar_t for t = 0..N-1, decreasing in (0, 1)")
    betas: tuple[float, ...] = knob((), "beta_t for t = 0..N-1, in (0, 1)")
    cosine: int = knob(0, "N of the Nichol & Dhariwal cosine schedule (betas capped at 0.999)")
    linear: LinearBetas | None = knob(None, "linearly spaced betas: {steps, beta_start, beta_end}")  # noqa: RUF009
    timestep: Literal["zero_based", "one_based", "fraction"] = knob(
        "zero_based", "what the network gets as t: step index 0..N-1 (int64), index + 1 (int64), or index / N (float)"
    )
    sampler: Literal["ddpm", "ddim"] = knob("ddpm", "ddpm: ancestral (stochastic); ddim: deterministic")
    sample_steps: int = knob(0, "default sampling steps k, a strided sub-sequence of the N steps; 0 = all N")
    clip_x0: float = knob(0.0, "bound on the predicted clean action (model units) in each sampler step; 0 = off")
    noise_low: int = knob(0, "default lowest distillation step t (0 <= low <= high < N)")
    noise_high: int = knob(0, "default highest distillation step t")

    def __post_init__(self) -> None:
        given = [name for name in ("alpha_bar", "betas", "cosine", "linear") if getattr(self, name)]
        if len(given) != 1:
            raise ValueError(f"a ddpm schedule needs exactly one of alpha_bar, betas, cosine, linear; got {given}")
        table = self.table()
        n = len(table)
        if self.steps and n != self.steps:
            raise ValueError(f"the {given[0]} schedule has {n} steps but steps is {self.steps}")
        if not (bool(torch.all(table > 0)) and bool(torch.all(table < 1)) and bool(torch.all(table[1:] < table[:-1]))):
            raise ValueError("alpha_bar must decrease strictly within (0, 1) (betas in (0, 1))")
        if not 0 <= self.sample_steps <= n:
            raise ValueError(f"sample_steps must be in 0..{n} (0 = all), got {self.sample_steps}")
        if self.clip_x0 < 0:
            raise ValueError(f"clip_x0 must be >= 0 (0 = off), got {self.clip_x0}")
        _step_range(self.noise_low, self.noise_high, n)

    def table(self) -> torch.Tensor:
        """alpha_bar_t, t = 0..N-1 (float64)."""
        if self.alpha_bar:
            return torch.tensor(self.alpha_bar, dtype=torch.float64)
        if self.cosine:
            if self.cosine < 1:
                raise ValueError(f"cosine needs N >= 1 steps, got {self.cosine}")
            return cosine_alpha_bar(self.cosine)
        if self.linear is not None:
            lin = self.linear
            if lin.steps < 1:
                raise ValueError(f"linear needs steps >= 1, got {lin.steps}")
            betas = torch.linspace(lin.beta_start, lin.beta_end, lin.steps, dtype=torch.float64)
        else:
            betas = torch.tensor(self.betas, dtype=torch.float64)
        if not bool(torch.all((betas > 0) & (betas < 1))):
            raise ValueError("betas must lie in (0, 1)")
        return torch.cumprod(1 - betas, dim=0)


@dataclasses.dataclass(frozen=True)
class EDMSchedule:
    """A variance-exploding (EDM) schedule; the noise level is sigma in the model's action units."""

    kind: Literal["edm"] = knob("edm", "edm: x = x0 + sigma eps, noise level = sigma")
    sigma_data: float = knob(0.5, "sigma_data of the Karras preconditioning (preconditioning: karras)")
    sigma_min: float = knob(0.002, "smallest sampled sigma")
    sigma_max: float = knob(80.0, "largest sampled sigma, where sampling starts")
    rho: float = knob(7.0, "Karras schedule exponent")
    preconditioning: Literal["none", "karras"] = knob(
        "none",
        "none: the network is called with sigma and returns D or eps; karras: it is the raw F of D = c_skip x "
        "+ c_out F(c_in x, ln(sigma) / 4)",
    )
    sampler: Literal["euler", "heun", "euler_ancestral"] = knob(
        "euler_ancestral", "euler | heun (deterministic) | euler_ancestral (stochastic)"
    )
    sample_steps: int = knob(8, "default sampling steps (>= 1)")
    noise_low: float = knob(0.2, "default lowest distillation sigma (0 < low <= high)")
    noise_high: float = knob(0.5, "default highest distillation sigma")

    def __post_init__(self) -> None:
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError("edm needs 0 < sigma_min < sigma_max")
        if self.sigma_data <= 0 or self.rho <= 0 or self.sample_steps < 1:
            raise ValueError("edm needs sigma_data > 0, rho > 0 and sample_steps >= 1")
        _sigma_range(self.noise_low, self.noise_high)


_SCHEDULES: dict[str, type] = {"ddpm": DDPMSchedule, "edm": EDMSchedule}
_SAMPLER_NAMES = {"ddpm": tuple(DDPM_SAMPLERS), "edm": tuple(EDM_SAMPLERS)}


@dataclasses.dataclass(frozen=True)
class Affine:
    """x_norm = (x - mean) / std per feature, raw units; both empty = identity."""

    mean: tuple[float, ...] = knob((), "per-feature mean (raw units)")
    std: tuple[float, ...] = knob((), "per-feature std (raw units, > 0)")


@dataclasses.dataclass(frozen=True)
class Spaces:
    """Normalisation of observations and actions."""

    obs: Affine = dataclasses.field(default_factory=Affine)
    act: Affine = dataclasses.field(default_factory=Affine)


@dataclasses.dataclass(frozen=True)
class ExternalTeacherConfig:
    """A ``teacher.yaml``: the network, how to call it, its schedule and spaces, the policy's metadata.

    The YAML spells ``class_name`` as ``class``. Paths are relative to the YAML file.
    """

    module: str = knob("", "import path of the network's module, or a .py file relative to the YAML")
    class_name: str = knob("", "the torch.nn.Module class in that module (YAML key: class)")
    kwargs: dict[str, Any] | None = knob(None, "keyword arguments of the class's constructor")  # noqa: RUF009
    weights: str = knob("", "safetensors state dict relative to the YAML; '' = the module as constructed")
    prediction: Literal["epsilon", "x0", "v"] = knob("epsilon", "what the network predicts (v: ddpm only)")
    schedule: object = knob(None, "the diffusion schedule: {kind: ddpm, ...} or {kind: edm, ...} (required)")
    call: tuple[str, ...] = knob(("noisy", "obs", "t"), "positional arguments of forward, in order: noisy, obs, t")
    call_keywords: dict[str, str] | None = knob(  # noqa: RUF009
        None, "keyword arguments of forward: {keyword: noisy | obs | t}"
    )
    obs_shape: Literal["window", "flat"] = knob("window", "observations as (B, T, obs_dim) or (B, T * obs_dim)")
    act_shape: Literal["chunk", "flat"] = knob("chunk", "noisy input and output as (B, H, act_dim) or (B, H * act_dim)")
    obs_window: int = knob(1, "T, observations per window (>= 1)")
    act_chunk: int = knob(1, "H, actions per chunk (>= 1)")
    obs_dim: int = knob(0, "observation features (>= 1)")
    act_dim: int = knob(0, "action features (>= 1)")
    obs_names: tuple[str, ...] = knob((), "observation feature names (obs_dim of them; a dataset must match)")
    act_names: tuple[str, ...] = knob((), "action feature names (act_dim of them)")
    control_period_s: float = knob(0.0, "seconds between actions (> 0)")
    task: str = knob("", "task the policy acts in ('' = none; a registered task enables rollout evaluation)")
    normalization: Spaces = dataclasses.field(default_factory=Spaces)  # the model's own; empty = raw units
    package_normalization: Spaces = dataclasses.field(default_factory=Spaces)  # the package's; empty = the model's
    obs_noise: float | None = knob(
        None, "observation jitter the network was trained with, package-normalised units (distillation reuses it)"
    )

    def __post_init__(self) -> None:
        if not self.module or not self.class_name:
            raise ValueError("module and class are required")
        if isinstance(self.schedule, dict):
            kind = self.schedule.get("kind")
            if kind not in _SCHEDULES:
                raise ValueError(f"schedule.kind must be one of {sorted(_SCHEDULES)}, got {kind!r}")
            try:
                object.__setattr__(self, "schedule", from_dict(_SCHEDULES[kind], self.schedule, "schedule"))
            except ConfigError:
                raise
            except ValueError as exc:  # the schedule's own validation
                raise ValueError(f"schedule: {exc}") from None
        if not isinstance(self.schedule, (DDPMSchedule, EDMSchedule)):
            raise ValueError("schedule is required: {kind: ddpm, ...} or {kind: edm, ...}")
        for name in ("obs_window", "act_chunk", "obs_dim", "act_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.control_period_s > 0:
            raise ValueError(f"control_period_s must be > 0, got {self.control_period_s}")
        for names, dim, what in ((self.obs_names, self.obs_dim, "obs"), (self.act_names, self.act_dim, "act")):
            if len(names) != dim:
                raise ValueError(f"{what}_names has {len(names)} entries, expected {what}_dim = {dim}")
        for where in ("normalization", "package_normalization"):
            spaces = getattr(self, where)
            for what, affine, dim in (("obs", spaces.obs, self.obs_dim), ("act", spaces.act, self.act_dim)):
                if (affine.mean or affine.std) and not (len(affine.mean) == len(affine.std) == dim):
                    raise ValueError(f"{where}.{what}: mean and std need {dim} entries each (or neither)")
                if any(not (s > 0 and math.isfinite(s)) for s in affine.std):
                    raise ValueError(f"{where}.{what}.std must be finite and > 0")
        roles = [*self.call, *(self.call_keywords or {}).values()]
        if sorted(roles) != sorted(ROLES):
            raise ValueError(f"call + call_keywords must name each of {', '.join(ROLES)} once, got {roles}")
        if self.prediction == "v" and self.schedule.kind != "ddpm":
            raise ValueError("prediction v needs a ddpm schedule")
        karras = isinstance(self.schedule, EDMSchedule) and self.schedule.preconditioning == "karras"
        if karras and self.prediction != "x0":
            raise ValueError("preconditioning karras defines the denoiser D: prediction must be x0")
        if self.obs_noise is not None and self.obs_noise < 0:
            raise ValueError(f"obs_noise must be >= 0, got {self.obs_noise}")

    def affine(self, what: Literal["obs", "act"]) -> tuple[Normalizer, Normalizer]:
        """(the model's normaliser, the package's) for observations or actions."""
        dim = self.obs_dim if what == "obs" else self.act_dim

        def norm(affine: Affine, fallback: Normalizer) -> Normalizer:
            if not affine.mean:
                return fallback
            return Normalizer.from_dict({"mean": list(affine.mean), "std": list(affine.std)})

        identity = Normalizer.from_dict({"mean": [0.0] * dim, "std": [1.0] * dim})
        model = norm(getattr(self.normalization, what), identity)
        return model, norm(getattr(self.package_normalization, what), model)


def _to_model(model: Normalizer, package: Normalizer) -> tuple[torch.Tensor, torch.Tensor]:
    """(s, m) with model = s * package + m per feature (see the module docstring)."""
    mean_m, std_m = (torch.tensor(v, dtype=torch.float64) for v in (model.mean, model.std))
    mean_p, std_p = (torch.tensor(v, dtype=torch.float64) for v in (package.mean, package.std))
    return (std_p / std_m).float(), ((mean_p - mean_m) / std_m).float()


class ExternalTeacher(Teacher):
    """A frozen external network as a ``Teacher`` in the package's normalised spaces."""

    family = FAMILY

    def __init__(self, net: nn.Module, config: ExternalTeacherConfig) -> None:
        super().__init__()
        c = self.config = config
        self.obs_dim, self.act_dim, self.obs_window, self.act_chunk = c.obs_dim, c.act_dim, c.obs_window, c.act_chunk
        self.schedule: DDPMSchedule | EDMSchedule = c.schedule  # type: ignore[assignment]
        self.net = net.requires_grad_(False).eval()
        for what in ("obs", "act"):
            scale, shift = _to_model(*config.affine(what))
            self.register_buffer(f"{what}_scale", scale, persistent=False)
            self.register_buffer(f"{what}_shift", shift, persistent=False)
        if isinstance(self.schedule, DDPMSchedule):
            self.register_buffer("alpha_bar", self.schedule.table().float(), persistent=False)

    def train(self, mode: bool = True) -> ExternalTeacher:
        """The wrapped network stays in eval mode whatever the caller asks (it is never trained here)."""
        super().train(mode)
        self.net.eval()
        return self

    @property
    def steps(self) -> int:
        """N of a DDPM schedule."""
        return int(self.alpha_bar.shape[0])

    @property
    def default_sample_steps(self) -> int:
        s = self.schedule
        return (s.sample_steps or self.steps) if isinstance(s, DDPMSchedule) else s.sample_steps

    @property
    def sampler(self) -> str:
        return self.schedule.sampler

    # -- calling the network ------------------------------------------------------------------

    def _call(self, noisy: torch.Tensor, obs: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The network on model-space inputs, arranged as the YAML says; (B, H, act_dim) out."""
        b = noisy.shape[0]
        values = {
            "noisy": noisy if self.config.act_shape == "chunk" else noisy.reshape(b, -1),
            "obs": obs if self.config.obs_shape == "window" else obs.reshape(b, -1),
            "t": cond,
        }
        args = [values[role] for role in self.config.call]
        kwargs = {key: values[role] for key, role in (self.config.call_keywords or {}).items()}
        out = self.net(*args, **kwargs)
        if not isinstance(out, torch.Tensor) or out.numel() != noisy.numel():
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"{self.config.class_name} returned {got}, expected {tuple(noisy.shape)} values")
        return out.reshape(noisy.shape).to(noisy.dtype)

    def _timestep(self, t: torch.Tensor) -> torch.Tensor:
        convention = self.schedule.timestep  # type: ignore[union-attr]
        if convention == "fraction":
            return t.float() / self.steps
        return t.long() + (1 if convention == "one_based" else 0)

    def eps(self, x: torch.Tensor, obs: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """DDPM: the predicted noise at steps t (B,), model space, whatever the network predicts."""
        out = self._call(x, obs, self._timestep(t))
        ab = self.alpha_bar[t].view(-1, 1, 1).to(x.dtype)
        if self.config.prediction == "epsilon":
            return out
        if self.config.prediction == "x0":
            return (x - ab.sqrt() * out) / (1 - ab).sqrt()
        return (1 - ab).sqrt() * x + ab.sqrt() * out  # v

    def denoise(self, x: torch.Tensor, obs: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """EDM: D(x; sigma) for sigmas (B,), model space."""
        sched: EDMSchedule = self.schedule  # type: ignore[assignment]
        if sched.preconditioning == "karras":
            c_skip, c_out, c_in, c_noise = samplers.edm_scalings(sigma, sched.sigma_data)
            return c_skip * x + c_out * self._call(c_in * x, obs, c_noise)
        out = self._call(x, obs, sigma)
        return out if self.config.prediction == "x0" else x - sigma.view(-1, 1, 1) * out

    def _model_obs(self, obs: torch.Tensor) -> torch.Tensor:
        return obs * self.obs_scale + self.obs_shift

    # -- the Teacher interface ----------------------------------------------------------------

    def score(self, actions: torch.Tensor, obs: torch.Tensor, noise_level: torch.Tensor) -> torch.Tensor:
        x = actions * self.act_scale + self.act_shift
        obs_m = self._model_obs(obs)
        if isinstance(self.schedule, DDPMSchedule):
            t = noise_level.long().to(actions.device)
            score = -self.eps(x, obs_m, t) / (1 - self.alpha_bar[t]).sqrt().view(-1, 1, 1).to(x.dtype)
        else:
            sigma = noise_level.to(actions.device, actions.dtype)
            score = (self.denoise(x, obs_m, sigma) - x) / sigma.view(-1, 1, 1) ** 2
        return score * self.act_scale  # the chain rule: grad_u = s * grad_a

    def _noise_range(self, low: float | None, high: float | None) -> tuple[float, float]:
        lo = self.schedule.noise_low if low is None else low
        hi = self.schedule.noise_high if high is None else high
        if isinstance(self.schedule, DDPMSchedule):
            return _step_range(lo, hi, self.steps)
        return _sigma_range(lo, hi)

    def sample_noise_levels(
        self, n: int, low: float | None = None, high: float | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        lo, hi = self._noise_range(low, high)
        device = self.act_scale.device
        if isinstance(self.schedule, DDPMSchedule):
            return torch.randint(int(lo), int(hi) + 1, (n,), generator=generator, device=device)
        return lo + (hi - lo) * torch.rand(n, generator=generator, device=device)

    def _sample(self, obs: torch.Tensor, steps: int, noise: torch.Tensor) -> torch.Tensor:
        obs_m = self._model_obs(obs)
        b = obs.shape[0]
        s = self.schedule
        if isinstance(s, DDPMSchedule):

            def eps(x: torch.Tensor, t: int) -> torch.Tensor:
                return self.eps(x, obs_m, torch.full((b,), t, device=obs.device))

            timesteps = strided_timesteps(self.steps, steps)
            x = DDPM_SAMPLERS[s.sampler](eps, self.alpha_bar.to(obs.dtype), timesteps, noise, s.clip_x0)
        else:

            def denoise(x: torch.Tensor, sigma: float) -> torch.Tensor:
                return self.denoise(x, obs_m, torch.full((b,), sigma, device=obs.device, dtype=obs.dtype))

            x = EDM_SAMPLERS[s.sampler](denoise, karras_sigmas(steps, s.sigma_min, s.sigma_max, s.rho).tolist(), noise)
        return (x - self.act_shift) / self.act_scale


# -- loading ------------------------------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def read_external_config(path: str | pathlib.Path) -> ExternalTeacherConfig:
    """The typed config of a teacher YAML; TeacherCheckpointError (one line, naming the file) if invalid."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise TeacherCheckpointError(f"missing {path}")
    try:
        data = read_yaml(path)
        if "class" in data:
            data["class_name"] = data.pop("class")
        return from_dict(ExternalTeacherConfig, data, str(path))
    except ValueError as exc:  # ConfigError, or a dataclass's own validation
        message = " ".join(str(exc).split())
        raise TeacherCheckpointError(message if message.startswith(str(path)) else f"{path}: {message}") from exc


def _import(spec: str, base: pathlib.Path) -> ModuleType:
    """The module ``spec`` names: a ``.py`` file relative to ``base``, or an import path."""
    if not spec.endswith(".py"):
        try:
            return importlib.import_module(spec)
        except Exception as exc:  # anything the user's module raises while importing
            raise TeacherCheckpointError(f"cannot import module {spec!r}: {_one_line(exc)}") from exc
    file = (base / spec).resolve()
    if not file.is_file():
        raise TeacherCheckpointError(f"module file {file} does not exist")
    name = "vdd_ros_external_" + hashlib.sha256(str(file).encode()).hexdigest()[:16]
    module_spec = importlib.util.spec_from_file_location(name, file)
    if module_spec is None or module_spec.loader is None:
        raise TeacherCheckpointError(f"cannot import {file}")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # dataclasses and pickling-free typing in the module look themselves up here
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise TeacherCheckpointError(f"cannot import {file}: {_one_line(exc)}") from exc
    return module


def _build(cfg: ExternalTeacherConfig, base: pathlib.Path) -> nn.Module:
    """The network, constructed and loaded with its weights (strictly: every tensor, every shape)."""
    module = _import(cfg.module, base)
    cls = getattr(module, cfg.class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        what = "no class" if cls is None else "no torch.nn.Module class"
        raise TeacherCheckpointError(f"module {cfg.module!r} has {what} {cfg.class_name!r}")
    try:
        net = cls(**(cfg.kwargs or {}))
    except Exception as exc:
        raise TeacherCheckpointError(f"{cfg.class_name}(**kwargs) failed: {_one_line(exc)}") from exc
    if not cfg.weights:
        return net
    file = base / cfg.weights
    try:
        tensors = load_file(file)
    except FileNotFoundError as exc:
        raise TeacherCheckpointError(f"missing weights {file}") from exc
    except (SafetensorError, OSError) as exc:
        raise TeacherCheckpointError(f"weights {file} are not a safetensors file: {_one_line(exc)}") from exc
    own = net.state_dict()
    problems = [f"missing {sorted(set(own) - set(tensors))}"] if set(own) - set(tensors) else []
    problems += [f"unexpected {sorted(set(tensors) - set(own))}"] if set(tensors) - set(own) else []
    problems += [
        f"{k}: {tuple(v.shape)} in the file, {tuple(own[k].shape)} in {cfg.class_name}"
        for k, v in tensors.items()
        if k in own and v.shape != own[k].shape
    ]
    if problems:
        raise TeacherCheckpointError(f"weights {file} do not fit {cfg.class_name}: {'; '.join(problems)}")
    net.load_state_dict(tensors, strict=True)
    return net


def external_meta(cfg: ExternalTeacherConfig) -> TeacherMeta:
    """The metadata a checkpoint would carry, from the YAML (normalisers: the package's spaces)."""
    network = {k: getattr(cfg, k) for k in ("module", "class_name", "kwargs", "weights", "call", "call_keywords")}
    network |= {"obs_shape": cfg.obs_shape, "act_shape": cfg.act_shape}
    return TeacherMeta(
        family=FAMILY,
        network=network,
        diffusion={"prediction": cfg.prediction, **dataclasses.asdict(cfg.schedule)},
        obs_window=cfg.obs_window,
        act_chunk=cfg.act_chunk,
        obs_dim=cfg.obs_dim,
        act_dim=cfg.act_dim,
        obs_names=cfg.obs_names,
        act_names=cfg.act_names,
        control_period_s=cfg.control_period_s,
        task=cfg.task,
        obs_normalizer=cfg.affine("obs")[1].to_dict(),
        act_normalizer=cfg.affine("act")[1].to_dict(),
        training={} if cfg.obs_noise is None else {"config": {"obs_noise": cfg.obs_noise}},
    )


def load_external(
    path: str | pathlib.Path, device: str = "cpu", sampler: str | None = None
) -> tuple[ExternalTeacher, TeacherMeta]:
    """The teacher a YAML describes, in eval mode on ``device``, and its metadata.

    ``sampler`` replaces the schedule's sampler (ddpm | ddim, or euler | heun | euler_ancestral).
    """
    path = pathlib.Path(path)
    cfg = read_external_config(path)
    if sampler is not None:
        kind = cfg.schedule.kind  # type: ignore[attr-defined]
        if sampler not in _SAMPLER_NAMES[kind]:
            raise TeacherCheckpointError(f"sampler {sampler!r} is not one of {_SAMPLER_NAMES[kind]} ({kind} schedule)")
        cfg = dataclasses.replace(cfg, schedule=dataclasses.replace(cfg.schedule, sampler=sampler))  # type: ignore[type-var]
    try:
        net = _build(cfg, path.parent)
    except TeacherCheckpointError as exc:
        raise TeacherCheckpointError(f"{path}: {exc}") from exc
    teacher = ExternalTeacher(net, cfg)
    return teacher.to(device).eval(), external_meta(cfg)


def external_sha256(path: str | pathlib.Path) -> str:
    """Identity of an external teacher: SHA-256 over the YAML bytes, then the weights file."""
    path = pathlib.Path(path)
    cfg = read_external_config(path)
    files = [path] + ([path.parent / cfg.weights] if cfg.weights else [])
    try:
        return sha256_file(*files)
    except OSError as exc:
        raise TeacherCheckpointError(f"cannot read {exc.filename}: {exc.strerror}") from exc
