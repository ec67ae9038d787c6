"""Batch-1 latency and parity of the GPU serving paths, on a machine with an NVIDIA GPU.

    scripts/device_check.sh [--policy policies/avoiding_vdd.onnx] [--calls 2000]

Serves the shipped default student (its ``.onnx`` and the ``.safetensors`` beside it) through
every path this machine offers -- onnxruntime on the CPU, on CUDA, on CUDA with a CUDA graph
(and TensorRT if present), the torch backend on the CPU, on CUDA and with a CUDA graph --
each loaded and vetted by the controller's own loader, and the teacher's default sampling
(a DDPM teacher of the default size with random weights: 8 steps, width 256, 3 blocks;
its latency does not depend on what the weights learnt). For each it prints batch-1 p50/p99
over ``--calls`` calls, the largest action difference from the reference (onnxruntime CPU,
or torch CPU without onnxruntime) on the same inputs and noise, and whether consecutive
sampled actions differ (fresh noise on every call, CUDA-graph replays included).

Needs PyTorch; onnxruntime(-gpu) is optional (its rows are then skipped), as are the other
rows' packages: a row that cannot run says why. Without a CUDA GPU it says so and exits 0.
Exit status: 0, or 1 if a path that ran broke parity or repeated a sampled action.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

PARITY = 1e-5
WARMUP_CALLS = 50


def _percentiles(run: Callable[[int], Any], calls: int) -> tuple[float, float]:
    """(p50, p99) in microseconds of ``run(i)`` (batch 1) after a warm-up."""
    for i in range(WARMUP_CALLS):
        run(i)
    times = np.empty(calls)
    for i in range(calls):
        start = time.perf_counter()
        run(i)
        times[i] = time.perf_counter() - start
    return float(np.percentile(times, 50) * 1e6), float(np.percentile(times, 99) * 1e6)


class Check:
    """Inputs shared by every row: windows in the normaliser's box and sampled noise for each call."""

    def __init__(self, contract: Any, calls: int) -> None:
        from vdd_ros.runtime.noise import NoiseSource

        c = contract
        rng = np.random.default_rng(0)
        mean, std = (np.asarray(c.obs_normalizer[k], np.float32) for k in ("mean", "std"))
        n = max(calls, WARMUP_CALLS)
        self.obs = (mean + 2 * std * rng.standard_normal((n, 1, c.obs_window, c.obs_dim))).astype(np.float32)
        noise = NoiseSource("sample", 0, c.num_experts, c.act_chunk * c.act_dim)
        self.noise = [noise.draw(1) for _ in range(n)]
        self.calls = calls
        self.reference: list[np.ndarray] | None = None

    def row(self, name: str, policy: Any) -> list[str]:
        """Measure ``policy.run``; the first row measured becomes the parity reference."""
        actions = [policy.run(self.obs[i], *self.noise[i])[0] for i in range(200)]
        if self.reference is None:
            self.reference, parity = actions, "reference"
        else:
            worst = max(float(np.abs(a - b).max()) for a, b in zip(actions, self.reference, strict=True))
            parity = f"{worst:.1e}" + ("" if worst <= PARITY else " FAIL")
        window = self.obs[0]
        repeated = [policy.run(window, *self.noise[i])[0] for i in range(20)]  # same window, fresh noise
        fresh = all(not np.array_equal(a, b) for a, b in itertools.pairwise(repeated))
        n = len(self.obs)
        p50, p99 = _percentiles(lambda i: policy.run(self.obs[i % n], *self.noise[i % n]), self.calls)
        return [name, f"{p50:.1f}", f"{p99:.1f}", parity, "yes" if fresh else "NO", policy.provider]


def _teacher_row(contract: Any, calls: int, device: str) -> list[str]:
    """The default DDPM teacher's batch-1 sampling (random weights, default size) on ``device``."""
    import torch

    from vdd_ros.data.shape import PolicyShape
    from vdd_ros.teacher.config import NetworkConfig
    from vdd_ros.teacher.ddpm import DDPMConfig
    from vdd_ros.teacher.registry import get_family

    torch.manual_seed(0)
    shape = PolicyShape(contract.obs_dim, contract.act_dim, contract.obs_window, contract.act_chunk)
    teacher = get_family("ddpm").build(shape, NetworkConfig(), DDPMConfig()).to(device).eval()
    obs = torch.zeros(1, contract.obs_window, contract.obs_dim, device=device)
    samples = [teacher.sample(obs).cpu() for _ in range(2)]
    p50, p99 = _percentiles(lambda i: teacher.sample(obs).cpu(), min(calls, 500))
    fresh = "yes" if not torch.equal(*samples) else "NO"
    name = f"teacher ddpm {teacher.default_sample_steps} steps"
    return [name, f"{p50:.1f}", f"{p99:.1f}", "-", fresh, f"torch:{device} (random weights)"]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", default="policies/avoiding_vdd.onnx")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--cpu-only", action="store_true", help="without a GPU: run the CPU rows (tries the script)")
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("device_check: PyTorch is not installed here, so no GPU path can be checked; nothing measured")
        return 0
    gpu = torch.cuda.is_available()
    if not gpu and not args.cpu_only:
        print("device_check: no CUDA GPU visible to PyTorch (torch.cuda.is_available() is False); nothing measured")
        return 0

    from vdd_ros.runtime.providers import CPU, CUDA, TENSORRT, ProviderOptions
    from vdd_ros.runtime.torch_policy import load_torch_policy

    try:
        import onnxruntime as ort

        from vdd_ros.runtime.onnx_policy import load_policy

        available = ort.get_available_providers()
    except ImportError as exc:
        load_policy, available = None, []
        print(f"device_check: onnxruntime rows skipped ({exc})")
    cache = tempfile.mkdtemp(prefix="vdd_trt_")
    ort_paths = [("onnxruntime CPU", [CPU], ProviderOptions())]
    ort_paths += [
        ("onnxruntime CUDA", [CUDA], ProviderOptions()),
        ("onnxruntime CUDA graph", [CUDA], ProviderOptions(cuda_graph=True)),
    ]
    ort_paths += [("onnxruntime TensorRT", [TENSORRT, CUDA], ProviderOptions(trt_engine_cache=cache))]
    torch_paths = [("torch CPU", [CPU], ProviderOptions()), ("torch CUDA", [CUDA], ProviderOptions())]
    torch_paths += [("torch CUDA graph", [CUDA], ProviderOptions(cuda_graph=True))]

    where = torch.cuda.get_device_name(0) if gpu else "no GPU (--cpu-only)"
    print(f"device_check: {where}, torch {torch.__version__}, policy {args.policy}")
    rows, contract, check = [], None, None
    for loader, paths in ((load_policy, ort_paths), (load_torch_policy, torch_paths)):
        for name, providers, options in paths:
            if loader is None or (loader is load_policy and providers[0] not in available):
                rows.append([name, "-", "-", "-", "-", "skipped: not in this onnxruntime"])
                continue
            if not gpu and providers[0] != CPU:
                rows.append([name, "-", "-", "-", "-", "skipped: no CUDA GPU"])
                continue
            try:
                policy = loader(args.policy, providers, options=options)
                if check is None:
                    contract, check = policy.contract, Check(policy.contract, args.calls)
                rows.append(check.row(name, policy))
            except Exception as exc:  # a path that cannot run here says why; the others still run
                rows.append([name, "-", "-", "-", "-", f"failed: {str(exc)[:100]}"])
    if contract is not None:
        try:
            rows.append(_teacher_row(contract, args.calls, "cuda" if gpu else "cpu"))
        except Exception as exc:
            rows.append(["teacher ddpm", "-", "-", "-", "-", f"failed: {str(exc)[:100]}"])
    header = ["path (batch 1)", "p50 us", "p99 us", "max |da|", "fresh", "provider"]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)))
    broken = [r[0] for r in rows if r[3].endswith("FAIL") or r[4] == "NO"]
    if broken:
        print(f"device_check: parity or fresh noise broken on: {', '.join(broken)}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
