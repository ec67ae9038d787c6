"""Acceptance run of "your own teacher": a network trained outside the package, distilled through its YAML.

1. Avoiding demonstrations from the package's scripted expert (``pipeline.collect``).
2. An epsilon-prediction MLP trained by a plain PyTorch loop that knows nothing of vdd_ros: its
   own windows, its own normaliser (observations z-scored, actions min-max scaled to [-1, 1]),
   its own cosine schedule (16 steps), its own time embedding and call order. Saved as
   safetensors + teacher.yaml, whose package_normalization z-scores the actions, so the
   adapter's chain rule is exercised at full scale.
3. That teacher through the adapter: 480 rollouts (``pipeline.evaluate``).
4. VDD distillation (``run_distillation``, config/distill_avoiding.yaml, teacher = the YAML) and the
   student's final 480 rollouts. Target: student success >= 0.9 x the teacher's.

Usage: python scripts/external_teacher_check.py [--out runs/external_check] [--iterations 8000] [key=value ...]
Writes <out>/result.json and prints it.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import time

import numpy as np
import torch
import yaml
from safetensors.torch import save_file

ROOT = pathlib.Path(__file__).resolve().parents[1]
T, STEPS = 5, 16  # observation window, diffusion steps

# -- the external code base: torch only, written into the output folder as the network's module ----

NETWORK_SOURCE = '''
"""An epsilon-prediction MLP for Avoiding (external: no vdd_ros import)."""

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.body = nn.Sequential(nn.LayerNorm(width), nn.Mish(), nn.Linear(width, width),
                                  nn.LayerNorm(width), nn.Mish(), nn.Linear(width, width))

    def forward(self, h):
        return h + self.body(h)


class EpsNet(nn.Module):
    """eps_hat(noisy action (B, A), step index t (B,), flat observation window (B, T * O))."""

    def __init__(self, obs_features, act_dim, steps, width=256, blocks=3, t_dim=64):
        super().__init__()
        self.t_embed = nn.Embedding(steps, t_dim)
        self.inp = nn.Linear(obs_features + act_dim + t_dim, width)
        self.blocks = nn.Sequential(*[Block(width) for _ in range(blocks)])
        self.out = nn.Sequential(nn.LayerNorm(width), nn.Mish(), nn.Linear(width, act_dim))

    def forward(self, noisy, t, obs):
        return self.out(self.blocks(self.inp(torch.cat([obs, noisy, self.t_embed(t)], dim=-1))))
'''


def cosine_alpha_bar(steps: int, s: float = 0.008) -> list[float]:
    f = [math.cos((i / steps + s) / (1 + s) * math.pi / 2) ** 2 for i in range(steps + 1)]
    out, prod = [], 1.0
    for i in range(steps):
        prod *= 1 - min(1 - f[i + 1] / f[i], 0.999)
        out.append(prod)
    return out


def windows(observations: list[np.ndarray], actions: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(N, T, O) windows padded with each episode's first observation, and the (N, A) action at each step."""
    obs_out, act_out = [], []
    for obs, act in zip(observations, actions, strict=True):
        idx = np.clip(np.arange(len(obs))[:, None] + np.arange(1 - T, 1)[None, :], 0, None)
        obs_out.append(obs[idx])
        act_out.append(act)
    return np.concatenate(obs_out).astype(np.float32), np.concatenate(act_out).astype(np.float32)


def train_external(obs: np.ndarray, act: np.ndarray, out: pathlib.Path, iterations: int, log) -> dict:
    """Train EpsNet with its own normaliser; write network.py, weights.safetensors; return the YAML fields."""
    (out / "network.py").write_text(NETWORK_SOURCE)
    namespace: dict = {}
    exec(compile(NETWORK_SOURCE, str(out / "network.py"), "exec"), namespace)
    o_mean, o_std = obs.reshape(-1, obs.shape[-1]).mean(0), np.maximum(obs.reshape(-1, obs.shape[-1]).std(0), 1e-6)
    a_mid, a_half = (act.max(0) + act.min(0)) / 2, np.maximum((act.max(0) - act.min(0)) / 2, 1e-6)
    x_obs = torch.from_numpy(((obs - o_mean) / o_std).reshape(len(obs), -1))
    x_act = torch.from_numpy((act - a_mid) / a_half)
    alpha_bar = cosine_alpha_bar(STEPS)
    ab_t = torch.tensor(alpha_bar)
    torch.manual_seed(0)
    kwargs = {"obs_features": x_obs.shape[1], "act_dim": act.shape[1], "steps": STEPS}
    net = namespace["EpsNet"](**kwargs)
    ema = namespace["EpsNet"](**kwargs)
    ema.load_state_dict(net.state_dict())
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    warmup = 500
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(i / iterations, 1.0)))
    )
    gen = torch.Generator().manual_seed(0)
    t0 = time.monotonic()
    for i in range(iterations):
        idx = torch.randint(0, len(x_obs), (256,), generator=gen)
        o = x_obs[idx] + 0.06 * torch.randn(256, x_obs.shape[1], generator=gen)  # jitter, z-scored units
        a0 = x_act[idx]
        t = torch.randint(0, STEPS, (256,), generator=gen)
        eps = torch.randn(a0.shape, generator=gen)
        ab = ab_t[t].unsqueeze(-1)
        loss = (net(ab.sqrt() * a0 + (1 - ab).sqrt() * eps, t, o) - eps).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), net.parameters(), strict=True):
                pe.lerp_(p, 1 - 0.999)
        if (i + 1) % 1000 == 0:
            log(f"external training {i + 1}/{iterations}: loss {loss.item():.4f} ({time.monotonic() - t0:.0f} s)")
    save_file({k: v.contiguous() for k, v in ema.state_dict().items()}, out / "weights.safetensors")
    return {
        "kwargs": kwargs,
        "alpha_bar": alpha_bar,
        "obs": {"mean": o_mean.tolist(), "std": o_std.tolist()},
        "act": {"mean": a_mid.tolist(), "std": a_half.tolist()},
        "seconds": round(time.monotonic() - t0, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/external_check")
    parser.add_argument("--iterations", type=int, default=8000, help="external training steps")
    parser.add_argument("--episodes", type=int, default=1200, help="demonstrations")
    parser.add_argument("--rollouts", type=int, default=480, help="teacher rollouts")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared CPU)")
    parser.add_argument("distill", nargs="*", help="key=value overrides of the distillation job (smoke runs)")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)

    def log(line: str) -> None:
        print(line, flush=True)

    from vdd_ros.data.normalizer import Normalizer
    from vdd_ros.pipeline.collect import CollectConfig, collect_demos
    from vdd_ros.pipeline.distill_config import DistillJobConfig
    from vdd_ros.pipeline.distill_job import run_distillation
    from vdd_ros.pipeline.evaluate import evaluate_policy, open_policy
    from vdd_ros.util.config import load_config
    from vdd_ros.util.progress import printer

    demos = out / "demos.safetensors"
    ds = collect_demos(CollectConfig(episodes=args.episodes, output=str(demos)))
    obs, act = windows(ds.observations, ds.actions)
    trained = train_external(obs, act, out, args.iterations, log)
    package_act = Normalizer.fit(np.concatenate(ds.actions)).to_dict()  # the package's action space: z-scored
    teacher_yaml = out / "teacher.yaml"
    doc = {
        "module": "network.py",
        "class": "EpsNet",
        "kwargs": trained["kwargs"],
        "weights": "weights.safetensors",
        "prediction": "epsilon",
        "schedule": {"kind": "ddpm", "alpha_bar": trained["alpha_bar"], "timestep": "zero_based", "clip_x0": 1.0},
        "call": ["noisy", "t", "obs"],
        "obs_shape": "flat",
        "act_shape": "flat",
        "obs_window": T,
        "act_chunk": 1,
        "obs_dim": len(ds.obs_names),
        "act_dim": len(ds.act_names),
        "obs_names": list(ds.obs_names),
        "act_names": list(ds.act_names),
        "control_period_s": ds.control_period_s,
        "task": ds.task,
        "normalization": {"obs": trained["obs"], "act": trained["act"]},
        "package_normalization": {"act": package_act},
        "obs_noise": 0.06,
    }
    teacher_yaml.write_text(yaml.safe_dump(doc, sort_keys=False))

    t0 = time.monotonic()
    teacher = evaluate_policy(open_policy(teacher=str(teacher_yaml)), ds.task, episodes=args.rollouts, seed=0)
    teacher_eval_s = time.monotonic() - t0
    log(f"teacher through the adapter: success {teacher.success_rate:.3f}, entropy {teacher.entropy:.3f}")

    inputs = [f"teacher={teacher_yaml}", f"dataset={demos}", f"output={out / 'distill_vdd'}"]
    overrides = [*inputs, f"torch_threads={args.threads}", *args.distill]
    cfg = load_config(DistillJobConfig, ROOT / "config" / "distill_avoiding.yaml", overrides)
    summary = run_distillation(cfg, on_progress=printer())
    student = summary["eval"]
    result = {
        "teacher": {"success": teacher.success_rate, "entropy": teacher.entropy, "eval_seconds": round(teacher_eval_s)},
        "student": {"success": student["success_rate"], "entropy": student["entropy"]},
        "ratio": student["success_rate"] / max(teacher.success_rate, 1e-9),
        "external_training_seconds": trained["seconds"],
        "distill_seconds": summary["seconds"],
        "selected_iteration": summary["selected_iteration"],
    }
    result["target_met"] = result["ratio"] >= 0.9
    (out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0 if result["target_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
