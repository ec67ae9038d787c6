"""Teacher vs EM-MoE vs VDD on the teacher's task, in one run on one machine: quality and batch-1 latency.

Quality: success rate and behaviour entropy over ``episodes`` rollouts (seed 0) for the teacher
at its default step count and at 1 step, the EM (maximum-likelihood) MoE and the VDD MoE; for
a task with state-dependent mode preferences (Pushing) also the per-context mode proportions
against the demonstrator's (a bar chart and the mean total-variation distance).
Latency: one action for one observation window, p50/p99 over many calls, in onnxruntime CPU
(1 thread; the teacher's whole k-step sampler unrolled into one graph, so the speed-up is like
for like, all called through a BoundSession as the controller calls its policy) and in PyTorch
eager CPU (1 thread). Writes bench.json, bench.md and PNGs under ``output``; only with
``update_docs=true`` also the bench sections of <docs>/results.md and <docs>/img/.
Example: bench teacher=runs/demo/teacher_ddpm vdd=runs/demo/distill_vdd dataset=runs/demo/demos.safetensors
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from vdd_ros.cli.common import output_dir, require_dir, require_file, require_positive, run_tool
from vdd_ros.runtime.latency import time_interleaved
from vdd_ros.util.config import knob

if TYPE_CHECKING:
    from vdd_ros.teacher.policy import TeacherPolicy


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """The runs to compare and where the report goes."""

    teacher: str = knob("runs/teacher_ddpm", "teacher checkpoint directory")
    vdd: str = knob("runs/distill_vdd", "VDD distillation output directory (policy.onnx, best/)")
    em: str = knob("", "EM baseline distillation output directory ('': fit one into <output>/distill_em, reused later)")
    dataset: str = knob("runs/demos/avoiding.safetensors", "demonstrations, for fitting the EM baseline")
    distill: str = knob("config/distill_avoiding.yaml", "distillation settings file, for fitting the EM baseline")
    episodes: int = knob(480, "rollouts per policy (seed 0)")
    repeats: int = knob(500, "timed calls per teacher latency figure (4x as many for the MoEs)")
    output: str = knob("runs/bench", "output directory (bench.json, bench.md, plots)")
    update_docs: bool = knob(False, "also rewrite the bench sections of <docs>/results.md and the plots in <docs>/img/")
    docs: str = knob("docs", "documentation folder updated with update_docs=true")

    def check(self) -> None:
        require_dir(self.teacher, "teacher")
        require_file(str(pathlib.Path(self.vdd, "policy.onnx")), "VDD policy")
        if self.em:
            require_file(str(pathlib.Path(self.em, "policy.onnx")), "EM policy")
        elif not pathlib.Path(self.em_dir, "policy.onnx").is_file():
            require_file(self.dataset, "dataset (to fit the EM baseline)")
            require_file(self.distill, "distillation settings (to fit the EM baseline)")
        require_positive({"episodes": self.episodes, "repeats": self.repeats})
        if self.update_docs:
            require_dir(self.docs, "docs")

    @property
    def em_dir(self) -> pathlib.Path:
        return pathlib.Path(self.em or pathlib.Path(self.output, "distill_em"))


def moe_calls(distill_dir: pathlib.Path) -> dict[str, Callable[[], object] | str]:
    """Batch-1 calls of a distilled MoE, to be timed: its ONNX graph, and its best/ weights in PyTorch when saved."""
    import torch

    from vdd_ros.moe.policy import GaussianMoE
    from vdd_ros.runtime.onnx_policy import NoiseSource, load_policy

    loaded = load_policy(str(distill_dir / "policy.onnx"))
    c = loaded.contract
    noise = NoiseSource("mean", 0, c.num_experts, c.act_chunk * c.act_dim)
    obs = np.zeros((1, c.obs_window, c.obs_dim), np.float32)
    gumbel, eps = noise.draw(1)
    out: dict[str, Callable[[], object] | str] = {"onnxruntime": lambda: loaded.run(obs, gumbel, eps)}
    best = distill_dir / "best"
    if best.is_dir():
        moe = GaussianMoE.load(best).eval()
        obs_t = torch.from_numpy(obs)

        @torch.no_grad()
        def call() -> object:
            return moe(obs_t)

        out["torch"] = call
    else:
        out["torch"] = "no best/ checkpoint saved by this run"
    return out


def time_rows(calls: list[dict[str, Callable[[], object] | str]], repeats: list[int]) -> list[dict]:
    """Each row's latency per runtime; one runtime's calls are timed interleaved, so their ratios are like for like."""
    timed: list[dict] = [{} for _ in calls]
    for runtime in ("onnxruntime", "torch"):
        group = {i: (c[runtime], repeats[i]) for i, c in enumerate(calls) if callable(c[runtime])}
        for i, lat in time_interleaved(group).items():
            timed[i][runtime] = lat
        for i, c in enumerate(calls):
            if not callable(c[runtime]):
                timed[i][runtime] = c[runtime]
    return timed


# (activation, width, trunk blocks) of the student layouts whose graph time the bench sweeps.
LAYOUTS: tuple[tuple[str, int, int], ...] = (
    ("mish", 256, 2),
    ("silu", 256, 2),
    ("silu", 256, 1),
    ("silu", 192, 2),
    ("silu", 128, 2),
    ("silu", 128, 1),
)


def layout_latencies(
    teacher: TeacherPolicy, teacher_call: Callable[[], object], repeats: int
) -> tuple[list[dict], float]:
    """(rows, teacher p50 [ms]): batch-1 onnxruntime time of untrained students of each layout (it depends
    on the layout, not the weights), timed interleaved with ``teacher_call`` (the teacher's onnxruntime
    sampler), which a row's speed-up divides by."""
    import onnxruntime as ort

    from vdd_ros.export.contract import INPUT_NAMES, OUTPUT_NAMES
    from vdd_ros.export.onnx_export import to_onnx_bytes
    from vdd_ros.moe.config import MoEConfig
    from vdd_ros.moe.policy import GaussianMoE
    from vdd_ros.runtime.bound_session import BoundSession
    from vdd_ros.runtime.onnx_policy import session_options

    meta = teacher.meta
    calls: dict[object, tuple[Callable[[], object], int]] = {"teacher": (teacher_call, max(1, repeats // 4))}
    for layout in LAYOUTS:
        activation, width, blocks = layout
        cfg = MoEConfig(activation=activation, hidden=width, trunk_blocks=blocks, gating="uniform")
        graph = to_onnx_bytes(GaussianMoE(teacher.teacher.shape, cfg), meta.obs_norm, meta.act_norm)
        session = ort.InferenceSession(graph, session_options(), providers=["CPUExecutionProvider"])
        bound = BoundSession(session, 1, INPUT_NAMES, OUTPUT_NAMES)
        feed = [np.zeros_like(buf) for buf in bound.inputs]
        calls[layout] = (lambda b=bound, f=feed: b(*f), repeats)
    timed = time_interleaved(calls)
    teacher_p50 = timed.pop("teacher")["p50_ms"]
    rows = [
        {"activation": a, "width": w, "blocks": b, **lat, "speedup": teacher_p50 / lat["p50_ms"]}
        for (a, w, b), lat in timed.items()
    ]
    return rows, teacher_p50


def layouts_markdown(rows: list[dict], teacher_name: str, teacher_p50_ms: float) -> str:
    lines = [
        f"Untrained students of each layout (uniform gating, current export), onnxruntime CPU, 1 thread, "
        f"batch 1, against `{teacher_name}` in onnxruntime (p50 {teacher_p50_ms * 1e3:.0f} µs, "
        f"timed interleaved with these graphs).",
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
    ax1.set(xticks=x, ylim=(0, 1.05), title=f"{report['task']}, {report['episodes']} rollouts")
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


def _solved(row: dict) -> np.ndarray:
    """(contexts,) whether the policy succeeded at least once in each context."""
    return np.asarray(row["context_mode_proportions"]).sum(axis=1) > 0


def _mean_proportions(row: dict) -> np.ndarray:
    """A policy's mode proportions averaged over the contexts it solved at least once (zeros if none)."""
    got, solved = np.asarray(row["context_mode_proportions"]), _solved(row)
    return got[solved].mean(axis=0) if solved.any() else np.zeros(got.shape[1])


def modes_markdown(report: dict, path: pathlib.Path) -> str:
    from vdd_ros.tasks.pushing.expert import NEARER_FIRST_PROB, SHORTER_ASSIGNMENT_PROB

    rows = report["rows"]
    lines = [
        "Mode proportions per context against the demonstrator's (its probabilities at each start): "
        "`preference_gap` is their total-variation distance averaged over the contexts a policy solved; "
        "`context_entropy` is D3IL's per-context entropy (unsolved contexts count 0). The last two columns "
        "split the gap into the demonstrator's two choices: the shares of successes that pushed the nearer "
        f"block first (demonstrator: {NEARER_FIRST_PROB}) and chose the shorter assignment "
        f"(demonstrator: {SHORTER_ASSIGNMENT_PROB}).",
        "",
        "| policy | contexts solved | context entropy | preference gap | nearer first | shorter assignment |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        solved = int(_solved(r).sum())
        gap, nearer, shorter = (
            _figure(r, k) for k in ("preference_gap", "nearer_first_share", "shorter_assignment_share")
        )
        cells = [r["name"], f"{solved}/{r['contexts']}", f"{r['context_entropy']:.3f}", gap, nearer, shorter]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Plot: `{path}`."]
    return "\n".join(lines)


def _figure(row: dict, key: str) -> str:
    """A row's figure to three decimals, n/a where the policy had nothing to measure it on."""
    return "n/a" if row.get(key) is None else f"{row[key]:.3f}"


def plot_mode_proportions(report: dict, path: pathlib.Path) -> None:
    """Bars per mode: the demonstrator's probabilities and each policy's proportions, averaged over contexts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vdd_ros.tasks.registry import get_task

    rows = report["rows"]
    names = get_task(report["task"]).mode_names
    series = [("demonstrator", np.asarray(rows[0]["expert_mode_probabilities"]).mean(axis=0))]
    series += [(r["name"], _mean_proportions(r)) for r in rows]
    fig, ax = plt.subplots(figsize=(9, 4))
    x, width = np.arange(len(names)), 0.8 / len(series)
    for k, (label, values) in enumerate(series):
        ax.bar(x + (k - (len(series) - 1) / 2) * width, values, width, label=label)
    ax.set(xticks=x, ylabel="share of successful rollouts", title=f"{report['task']}: modes, mean over contexts")
    ax.set_xticklabels(names, rotation=15, ha="right")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _fit_em(cfg: BenchConfig) -> None:
    """The maximum-likelihood baseline with the VDD run's settings, when no EM run was given."""
    from vdd_ros.pipeline.distill_config import DistillJobConfig
    from vdd_ros.pipeline.distill_job import run_distillation
    from vdd_ros.util.config import load_config
    from vdd_ros.util.progress import printer

    print(f"bench: fitting the EM baseline into {cfg.em_dir} ({cfg.distill}, method em)", flush=True)
    overrides = {
        "method": "em",
        "teacher": cfg.teacher,
        "dataset": cfg.dataset,
        "output": str(cfg.em_dir),
        "eval.final_episodes": 0,
    }
    run_distillation(load_config(DistillJobConfig, cfg.distill, overrides), on_progress=printer("  "))


def _update_docs(cfg: BenchConfig, task: str, tables: dict[str, str], plots: list[pathlib.Path]) -> None:
    """Copy the plots into <docs>/img and rewrite the marked bench sections of results.md to point there."""
    from vdd_ros.util.report import update_results

    img = pathlib.Path(cfg.docs, "img")
    img.mkdir(exist_ok=True)
    # Avoiding keeps the original section and plot names; another task gets its own beside them
    suffix, on = ("", "") if task == "avoiding" else (f"_{task}", f" on {task.capitalize()}")
    moved = {}
    for plot_path in plots:
        target = img / f"{plot_path.stem}{suffix}{plot_path.suffix}"
        shutil.copyfile(plot_path, target)
        moved[str(plot_path)] = str(target)
    headings = {"bench": f"Teacher vs EM-MoE vs VDD{on} (bench)", "bench_layouts": f"Student layouts{on} (bench)"}
    for key, table in tables.items():
        for source, target in moved.items():
            table = table.replace(source, target)
        update_results(pathlib.Path(cfg.docs, "results.md"), table, key + suffix, headings[key])
    print(f"bench: updated {cfg.docs}/results.md and {img}/")


def run(cfg: BenchConfig) -> int:
    import torch

    from vdd_ros.pipeline.evaluate import evaluate_policy, open_policy
    from vdd_ros.pipeline.latency import teacher_onnx_call, teacher_torch_call
    from vdd_ros.util.files import atomic_write_json, atomic_write_text
    from vdd_ros.util.progress import printer
    from vdd_ros.util.report import machine_name

    torch.set_num_threads(1)
    out = output_dir(cfg.output)
    if not pathlib.Path(cfg.em_dir, "policy.onnx").is_file():
        _fit_em(cfg)
    teacher = open_policy(teacher=cfg.teacher)
    default_steps = teacher.teacher.default_sample_steps
    rows, calls, repeats = [], [], []
    for name, policy, steps in (
        (f"teacher {teacher.meta.family} {default_steps} steps", teacher, default_steps),
        (f"teacher {teacher.meta.family} 1 step", open_policy(teacher=cfg.teacher, steps=1), 1),
        ("EM-MoE (max. likelihood)", open_policy(str(cfg.em_dir / "policy.onnx")), None),
        ("VDD-MoE", open_policy(str(pathlib.Path(cfg.vdd, "policy.onnx"))), None),
    ):
        print(f"bench: {name}: {cfg.episodes} rollouts ...", flush=True)
        slug = name.split(" (")[0].replace(" ", "_").lower()
        result = evaluate_policy(
            policy, teacher.meta.task, cfg.episodes, 0, out / f"traj_{slug}.png", name, printer("  ")
        )
        if steps is not None:
            ort_call, torch_call = teacher_onnx_call(teacher, steps), teacher_torch_call(teacher, steps)
            calls.append({"onnxruntime": ort_call, "torch": torch_call})
            repeats.append(cfg.repeats)
        else:
            calls.append(moe_calls(pathlib.Path(cfg.vdd) if name.startswith("VDD") else cfg.em_dir))
            repeats.append(4 * cfg.repeats)
        rows.append({"name": name, **result.to_json_dict()})
        print(f"  success {result.success_rate:.3f} entropy {result.entropy:.3f}", flush=True)
    print("bench: batch-1 latency, all policies interleaved ...", flush=True)
    for row, lat in zip(rows, time_rows(calls, repeats), strict=True):
        row["latency"] = lat
        print(f"  {row['name']}: {json.dumps(lat)}", flush=True)
    report = {
        "machine": machine_name(),
        "task": teacher.meta.task,
        "episodes": cfg.episodes,
        "rows": rows,
        "plot": str(out / "bench.png"),
        "command": f"bench teacher={cfg.teacher} vdd={cfg.vdd} em={cfg.em} dataset={cfg.dataset}",
    }
    plot(report, out / "bench.png")
    plots = [out / "bench.png"]
    tables = {"bench": markdown(report)}
    if all(r.get("expert_mode_probabilities") for r in rows):
        plots.append(out / "mode_proportions.png")
        plot_mode_proportions(report, plots[-1])
        tables["bench"] += "\n\n" + modes_markdown(report, plots[-1])
    teacher_ort = calls[0]["onnxruntime"]
    if callable(teacher_ort):
        print("bench: student layouts (onnxruntime graph time) ...", flush=True)
        report["layouts"], report["layouts_teacher_p50_ms"] = layout_latencies(teacher, teacher_ort, cfg.repeats * 4)
        plots.append(out / "student_latency.png")
        plot_layouts(report["layouts"], report["layouts_teacher_p50_ms"], plots[-1])
        table = layouts_markdown(report["layouts"], rows[0]["name"], report["layouts_teacher_p50_ms"])
        tables["bench_layouts"] = table + f"\n\nPlot: `{plots[-1]}`."
    atomic_write_json(out / "bench.json", report, indent=2)
    atomic_write_text(out / "bench.md", "\n\n".join(tables.values()) + "\n")
    print("\n\n".join(tables.values()))
    print(f"bench: wrote {out}/bench.json, bench.md and plots")
    if cfg.update_docs:
        _update_docs(cfg, report["task"], tables, plots)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool("bench", __doc__, BenchConfig, run, argv)


if __name__ == "__main__":
    sys.exit(main())
