"""Teacher vs EM-MoE vs VDD on Avoiding, in one run on one machine: quality and batch-1 latency.

Quality: success rate and behaviour entropy over 480 rollouts (seed 0) for the teacher at
its default step count and at 1 step, the EM (maximum-likelihood) MoE and the VDD MoE.
Latency: one action for one observation window, p50/p99 over many calls,
  - onnxruntime CPU (1 thread): the MoE graphs, and the teacher's whole k-step sampler
    unrolled into one graph (same runtime, so the speed-up is like for like), both called
    through a BoundSession (inputs and outputs bound once), as the controller calls its policy;
  - PyTorch eager CPU (1 thread): the teacher's sampler and the MoE forward pass.
Writes JSON, a PNG and the markdown table between the bench markers in docs/results.md.

  python -m vdd_ros.cli.bench --teacher runs/teacher_ddpm --vdd runs/distill_vdd --em runs/distill_em
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import platform
import tempfile
import time
from collections.abc import Callable

import numpy as np
import torch

from vdd_ros.pipeline.distill_job import load_params_file, run_distillation
from vdd_ros.moe.policy import GaussianMoE, MoEConfig
from vdd_ros.runtime.bound_session import BoundSession
from vdd_ros.runtime.onnx_policy import NoiseSource, OnnxPolicy, load_policy
from vdd_ros.tasks.rollout import plot_trajectories, run_rollouts
from vdd_ros.teacher.policy import TeacherPolicy


def latency_samples_ms(fn: Callable[[], object], repeats: int, warmup: int = 20) -> np.ndarray:
    """Wall time of ``repeats`` calls after ``warmup`` untimed ones, in milliseconds."""
    for _ in range(warmup):
        fn()
    samples = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter()
        fn()
        samples[i] = time.perf_counter() - start
    return samples * 1e3


def _time_calls(fn: Callable[[], object], repeats: int) -> dict[str, float]:
    p50, p99 = np.percentile(latency_samples_ms(fn, repeats), [50, 99])
    return {"p50_ms": float(p50), "p99_ms": float(p99)}


class _UnrolledSampler(torch.nn.Module):
    """The teacher's k-step sampler as one module, so it can be exported to a single graph."""

    def __init__(self, teacher: torch.nn.Module, steps: int) -> None:
        super().__init__()
        self.teacher, self.steps = teacher, steps

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.teacher.sample(obs, steps=self.steps)


def teacher_onnx_latency(policy: TeacherPolicy, steps: int, repeats: int) -> dict[str, float] | str:
    """Export the unrolled sampler (legacy tracer: the loop has a fixed length) and time it."""
    import onnxruntime as ort

    from vdd_ros.runtime.onnx_policy import session_options

    obs = torch.zeros(1, policy.meta.obs_window, policy.meta.obs_dim)
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp, "teacher.onnx")
        try:
            torch.onnx.export(
                _UnrolledSampler(policy.teacher, steps).eval(),
                (obs,),
                str(path),
                dynamo=False,
                input_names=["obs"],
                output_names=["action"],
                opset_version=17,
            )
            session = ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])
        except Exception as exc:  # exporter limitations are reported, not fatal
            return f"not exportable: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    bound, feed = BoundSession(session), obs.numpy()  # the same call path as the MoE's LoadedPolicy.run
    return _time_calls(lambda: bound(feed), repeats)


def teacher_torch_latency(policy: TeacherPolicy, steps: int, repeats: int) -> dict[str, float]:
    obs = torch.zeros(1, policy.meta.obs_window, policy.meta.obs_dim)

    @torch.no_grad()
    def call() -> torch.Tensor:
        return policy.teacher.sample(obs, steps=steps)

    return _time_calls(call, repeats)


def moe_latencies(distill_dir: pathlib.Path, repeats: int) -> dict[str, dict[str, float] | str]:
    loaded = load_policy(str(distill_dir / "policy.onnx"))
    c = loaded.contract
    noise = NoiseSource("mean", 0, c.num_experts, c.act_chunk * c.act_dim)
    obs = np.zeros((1, c.obs_window, c.obs_dim), np.float32)
    gumbel, eps = noise.draw(1)
    out: dict[str, dict[str, float] | str] = {"onnxruntime": _time_calls(lambda: loaded.run(obs, gumbel, eps), repeats)}
    best = distill_dir / "best"
    if best.is_dir():
        moe = GaussianMoE.load(best).eval()
        obs_t = torch.from_numpy(obs)

        @torch.no_grad()
        def call() -> object:
            return moe(obs_t)

        out["torch"] = _time_calls(call, repeats)
    else:
        out["torch"] = "no best/ checkpoint saved by this run"
    return out


# (activation, width, trunk blocks) of the student layouts whose graph time the bench sweeps.
LAYOUTS: tuple[tuple[str, int, int], ...] = (
    ("mish", 256, 2),
    ("silu", 256, 2),
    ("silu", 256, 1),
    ("silu", 192, 2),
    ("silu", 128, 2),
    ("silu", 128, 1),
)


def layout_latencies(teacher: TeacherPolicy, teacher_p50_ms: float, repeats: int) -> list[dict]:
    """Batch-1 onnxruntime time of untrained students of each layout (it depends on the layout, not the weights)."""
    import onnxruntime as ort

    from vdd_ros.export.contract import INPUT_NAMES, OUTPUT_NAMES
    from vdd_ros.export.onnx_export import to_onnx_bytes
    from vdd_ros.runtime.onnx_policy import session_options

    meta, rows = teacher.meta, []
    for activation, width, blocks in LAYOUTS:
        cfg = MoEConfig(
            obs_dim=meta.obs_dim,
            act_dim=meta.act_dim,
            obs_window=meta.obs_window,
            act_chunk=meta.act_chunk,
            activation=activation,
            hidden=width,
            trunk_blocks=blocks,
            gating="uniform",
        )
        graph = to_onnx_bytes(GaussianMoE(cfg), meta.obs_norm, meta.act_norm)
        session = ort.InferenceSession(graph, session_options(), providers=["CPUExecutionProvider"])
        bound = BoundSession(session, 1, INPUT_NAMES, OUTPUT_NAMES)
        feed = [np.zeros_like(buf) for buf in bound.inputs]
        lat = _time_calls(lambda b=bound, f=feed: b(*f), repeats)
        rows.append({"activation": activation, "width": width, "blocks": blocks, **lat})
        rows[-1]["speedup"] = teacher_p50_ms / lat["p50_ms"]
    return rows


def layouts_markdown(rows: list[dict], teacher_row: dict) -> str:
    t = teacher_row["latency"]["onnxruntime"]
    lines = [
        f"Untrained students of each layout (uniform gating, current export), onnxruntime CPU, 1 thread, "
        f"batch 1, against `{teacher_row['name']}` in onnxruntime (p50 {t['p50_ms'] * 1e3:.0f} µs).",
        "",
        "| activation | width | trunk blocks | p50 / p99 [µs] | speed-up vs teacher |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['activation']} | {r['width']} | {r['blocks']} | {r['p50_ms'] * 1e3:.1f} / {r['p99_ms'] * 1e3:.1f} | "
            f"{r['speedup']:.1f}x |"
        )
    return "\n".join(lines)


def plot_layouts(rows: list[dict], teacher_p50_ms: float, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    names = [f"{r['activation']} {r['width']}x{r['blocks']}" for r in rows]
    ax.bar(names, [r["p50_ms"] * 1e3 for r in rows], color="tab:blue")
    for factor, style in ((8, ":"), (20, "--")):
        ax.axhline(teacher_p50_ms * 1e3 / factor, color="k", ls=style, label=f"teacher / {factor}")
    ax.set(ylabel="batch-1 p50 [µs]", title="Student graph time by layout (onnxruntime CPU, 1 thread)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _fmt(v: dict[str, float] | str | None) -> str:
    return f"{v['p50_ms']:.3f} / {v['p99_ms']:.3f}" if isinstance(v, dict) else "n/a"


def markdown(report: dict) -> str:
    lines = [
        f"Machine: {report['machine']}; torch/onnxruntime threads: 1; {report['episodes']} rollouts, seed 0.",
        "",
        "| policy | success | entropy | ORT p50 / p99 [ms] | torch p50 / p99 [ms] | speed-up vs teacher, ORT / torch |",
        "|---|---|---|---|---|---|",
    ]
    base = report["rows"][0]["latency"]

    def ratio(key: str, lat: dict) -> str:
        a, b = base.get(key), lat.get(key)
        return f"{a['p50_ms'] / b['p50_ms']:.1f}x" if isinstance(a, dict) and isinstance(b, dict) else "n/a"

    for row in report["rows"]:
        lat = row["latency"]
        ort_l = lat.get("onnxruntime")
        speed = f"{ratio('onnxruntime', lat)} / {ratio('torch', lat)}"
        lines.append(
            f"| {row['name']} | {row['success_rate']:.3f} | {row['entropy']:.3f} | {_fmt(ort_l)} | "
            f"{_fmt(lat.get('torch'))} | {speed} |"
        )
    lines += ["", f"Plot: `{report['plot']}`. Reproduce: `{report['command']}`"]
    return "\n".join(lines)


def update_results(path: pathlib.Path, table: str, key: str, heading: str) -> None:
    """Replace the text between the ``key`` markers in ``path`` (append a section if there are none)."""
    start, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
    text = path.read_text() if path.exists() else "# Results\n"
    block = f"{start}\n{table}\n{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + f"\n\n## {heading}\n\n" + block + "\n"
    path.write_text(text)


def plot(report: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    names = [r["name"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    x = np.arange(len(rows))
    ax1.bar(x - 0.2, [r["success_rate"] for r in rows], 0.4, label="success")
    ax1.bar(x + 0.2, [r["entropy"] for r in rows], 0.4, label="entropy")
    ax1.set(xticks=x, ylim=(0, 1.05), title="Avoiding, 480 rollouts")
    ax1.set_xticklabels(names, rotation=20, ha="right")
    ax1.legend()
    for k, (key, label) in enumerate((("onnxruntime", "onnxruntime"), ("torch", "PyTorch"))):
        vals = [r["latency"].get(key) for r in rows]
        ax2.bar(x + (k - 0.5) * 0.4, [v["p50_ms"] if isinstance(v, dict) else 0 for v in vals], 0.4, label=label)
    ax2.set(xticks=x, yscale="log", ylabel="batch-1 latency p50 [ms]", title="one action, CPU, 1 thread")
    ax2.set_xticklabels(names, rotation=20, ha="right")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", default="runs/teacher_ddpm")
    ap.add_argument("--vdd", default="runs/distill_vdd", help="distill output folder (policy.onnx)")
    ap.add_argument("--em", default="runs/distill_em", help="EM baseline output folder (policy.onnx)")
    ap.add_argument(
        "--dataset", default="runs/demos/avoiding.safetensors", help="demonstrations (for a missing EM run)"
    )
    ap.add_argument("--distill-params", default="config/distill_avoiding.yaml", help="settings for a missing EM run")
    ap.add_argument("--episodes", type=int, default=480)
    ap.add_argument("--repeats", type=int, default=500)
    ap.add_argument("--out", default="runs/bench")
    ap.add_argument("--results", default="docs/results.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    em_policy = pathlib.Path(args.em, "policy.onnx")
    if not em_policy.exists():
        print(f"bench: no EM baseline at {em_policy}: fitting one (method em, {args.distill_params})", flush=True)
        base = load_params_file(args.distill_params)
        run_distillation(
            dataclasses.replace(
                base, method="em", teacher=args.teacher, dataset=args.dataset, output=args.em, final_eval_episodes=0
            )
        )
    teacher = TeacherPolicy.from_checkpoint(args.teacher)
    default_steps = teacher.teacher.config.sample_steps
    rows = []
    for name, policy, latency in (
        (f"teacher {teacher.meta.family} {default_steps} steps", teacher, default_steps),
        (f"teacher {teacher.meta.family} 1 step", TeacherPolicy.from_checkpoint(args.teacher, steps=1), 1),
        ("EM-MoE (max. likelihood)", OnnxPolicy(str(pathlib.Path(args.em, "policy.onnx"))), None),
        ("VDD-MoE", OnnxPolicy(str(pathlib.Path(args.vdd, "policy.onnx"))), None),
    ):
        print(f"bench: {name}: {args.episodes} rollouts ...", flush=True)
        result = run_rollouts(policy, episodes=args.episodes, seed=0)
        slug = name.split(" (")[0].replace(" ", "_").lower()
        plot_trajectories(
            result,
            out / f"traj_{slug}.png",
            title=f"{name}: success {result.success_rate:.2f}, entropy {result.entropy:.2f}",
        )
        if latency is not None:
            lat = {
                "onnxruntime": teacher_onnx_latency(teacher, latency, args.repeats),
                "torch": teacher_torch_latency(teacher, latency, args.repeats),
            }
        else:
            lat = moe_latencies(pathlib.Path(args.vdd if name.startswith("VDD") else args.em), args.repeats * 4)
        rows.append({"name": name, **result.to_json_dict(), "latency": lat})
        print(f"  success {result.success_rate:.3f} entropy {result.entropy:.3f} latency {json.dumps(lat)}", flush=True)
    report = {
        "machine": machine_name(),
        "episodes": args.episodes,
        "rows": rows,
        "plot": str(pathlib.Path(args.results).parent / "img" / "bench.png"),
        "command": f"python -m vdd_ros.cli.bench --teacher {args.teacher} --vdd {args.vdd} --em {args.em} "
        f"--dataset {args.dataset}",
    }
    plot_path = pathlib.Path(report["plot"])
    plot_path.parent.mkdir(parents=True, exist_ok=True)
    plot(report, plot_path)
    teacher_ort = rows[0]["latency"]["onnxruntime"]
    if isinstance(teacher_ort, dict):
        print("bench: student layouts (onnxruntime graph time) ...", flush=True)
        report["layouts"] = layout_latencies(teacher, teacher_ort["p50_ms"], args.repeats * 4)
        plot_layouts(report["layouts"], teacher_ort["p50_ms"], plot_path.with_name("student_latency.png"))
    (out / "bench.json").write_text(json.dumps(report, indent=2))
    table = markdown(report)
    update_results(pathlib.Path(args.results), table, "bench", "Teacher vs EM-MoE vs VDD (bench)")
    print(table)
    if "layouts" in report:
        table = layouts_markdown(report["layouts"], rows[0])
        table += f"\n\nPlot: `{plot_path.with_name('student_latency.png')}`."
        update_results(pathlib.Path(args.results), table, "bench_layouts", "Student layouts (bench)")
        print(table)
    return 0


def machine_name() -> str:
    """CPU model and usable core count, for the record next to every timing."""
    cores = len(os.sched_getaffinity(0))
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {cores} cores"
    except OSError:
        pass
    return f"{platform.machine()}, {cores} cores"


if __name__ == "__main__":
    raise SystemExit(main())
