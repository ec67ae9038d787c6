"""The whole product in one command (``make demo``; ``make demo FAST=1`` for a quick look).

demonstrations -> diffusion teacher -> VDD distillation -> ONNX -> controller + task_sim over
ROS 2, then one summary: teacher vs VDD quality, inference latency and speed-up, loop
latency, and the plots written. The task (``make demo TASK=pushing``; Avoiding by default)
picks ``config/teacher_<task>.yaml`` and ``config/distill_<task>.yaml``. Where the package ships
a teacher trained with those settings on the demo's own demonstrations
(``policies/<task>_teacher``; Pushing's takes longer to train than the demo's budget), the demo
distils that one after checking it was trained on these exact demonstrations;
``train_teacher=true`` trains it here instead. Every stage resumes or is skipped when its
output is already complete, so a second run (or a run after Ctrl-C) continues where it stopped.
Example: demo task=pushing fast=true
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from vdd_ros.cli.common import EXIT_INTERRUPTED, ToolError, require_file, run_tool
from vdd_ros.util.config import ConfigError, knob

if TYPE_CHECKING:
    from vdd_ros.tasks.rollout import RolloutResult

DEFAULT_TASK = "avoiding"
SHIPPED_TEACHERS = "policies"
_CONTEXT_FIGURES = ("context_entropy", "preference_gap")  # Pushing's per-context mode figures


@dataclasses.dataclass(frozen=True)
class DemoPlan:
    """Budgets of one demo run."""

    root: str
    demos: int
    teacher_iterations: int | None  # None: the task's teacher config, unchanged
    distill_iterations: int | None  # None: the task's distillation config, unchanged
    eval_episodes: int
    ros_episodes: int


FULL = DemoPlan("runs/demo", 1200, None, None, 480, 48)
FAST = DemoPlan("runs/demo_fast", 1200, 3000, 1000, 96, 6)


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Which task and budget, and where everything goes."""

    task: str = knob(DEFAULT_TASK, "registered task: config/teacher_<task>.yaml and config/distill_<task>.yaml")
    fast: bool = knob(False, "small budgets (3000 teacher and 1000 distillation iterations): a quick look")
    train_teacher: bool = knob(False, "train the teacher even where policies/<task>_teacher ships one")
    output: str = knob("", "output directory ('': runs/demo[_fast], with _<task> for a task other than avoiding)")

    @property
    def teacher_config(self) -> str:
        return f"config/teacher_{self.task}.yaml"

    @property
    def distill_config(self) -> str:
        return f"config/distill_{self.task}.yaml"

    @property
    def shipped_teacher(self) -> pathlib.Path | None:
        """The teacher this demo distils instead of training one, if the package ships it."""
        path = pathlib.Path(SHIPPED_TEACHERS, f"{self.task}_teacher")
        return None if self.train_teacher or not (path / "teacher.json").is_file() else path

    def check(self) -> None:
        from vdd_ros.tasks.registry import task_names

        if self.task not in task_names():
            raise ConfigError(f"unknown task {self.task!r}; known tasks: {', '.join(task_names())}")
        require_file(self.teacher_config, f"{self.task} teacher settings")
        require_file(self.distill_config, f"{self.task} distillation settings")

    @property
    def plan(self) -> DemoPlan:
        plan = FAST if self.fast else FULL
        root = self.output or (plan.root if self.task == DEFAULT_TASK else f"{plan.root}_{self.task}")
        return dataclasses.replace(plan, root=root)


def _stage(n: int, text: str) -> float:
    print(f"\n=== [{n}/6] {text}", flush=True)
    return time.monotonic()


def _teacher_step(out: pathlib.Path) -> int:
    """The teacher training's committed step (-1: none); a state of an older layout is refused, not overwritten."""
    from vdd_ros.teacher.config import STATE_DIR

    state = out / STATE_DIR / "state.json"
    if not state.exists():
        return -1
    try:
        return int(json.loads(state.read_text())["iteration"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ToolError(
            f"{state} is not a training state of this version ({type(exc).__name__}); "
            f"move {out.parent} away (or `make clean`) or pass output=<a new folder>"
        ) from None


def _take_shipped_teacher(shipped: pathlib.Path, demos: pathlib.Path, teacher_dir: pathlib.Path) -> None:
    """Copy the shipped teacher into the run, refusing one trained on other demonstrations."""
    from vdd_ros.data.dataset import content_sha256, load_dataset
    from vdd_ros.teacher.checkpoint import TeacherCheckpointError, load_teacher
    from vdd_ros.util.files import atomic_write

    try:
        _, meta = load_teacher(shipped)
    except TeacherCheckpointError as exc:
        raise ToolError(f"shipped teacher: {exc}; train_teacher=true trains one instead") from None
    if not meta.dataset_content_sha256 or meta.dataset_content_sha256 != content_sha256(load_dataset(demos)):
        raise ToolError(
            f"{shipped} was not trained on the demonstrations in {demos}; train_teacher=true trains a teacher on these"
        )
    teacher_dir.mkdir(parents=True, exist_ok=True)
    for name in ("model.safetensors", "teacher.json"):
        atomic_write(teacher_dir / name, (shipped / name).read_bytes())
    trained = meta.training
    print(f"    {trained['config']['iterations']} iterations, {trained['seconds']:.0f} s of training, on {demos.name}")


def _histogram(teacher_ms: np.ndarray, moe_ms: np.ndarray, loop: dict, path: pathlib.Path, steps: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    bins = np.logspace(np.log10(min(moe_ms.min(), teacher_ms.min()) * 0.8), np.log10(teacher_ms.max() * 1.2), 60)
    ax.hist(teacher_ms, bins=bins, alpha=0.7, label=f"teacher, {steps} denoising steps (PyTorch)")
    ax.hist(moe_ms, bins=bins, alpha=0.7, label="VDD MoE, one ONNX run (onnxruntime)")
    ax.axvline(loop["obs_to_action_p50_ms"], color="k", ls="--", label="ROS loop obs->action p50")
    ax.set(xscale="log", xlabel="batch-1 latency [ms]", ylabel="calls", title="One action on this CPU (1 thread)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(cfg: DemoConfig) -> int:
    import torch

    from vdd_ros.pipeline.collect import CollectConfig, collect_demos
    from vdd_ros.pipeline.distill_config import DistillJobConfig
    from vdd_ros.pipeline.distill_job import run_distillation
    from vdd_ros.pipeline.evaluate import evaluate_policy, open_policy, rollout_evaluator
    from vdd_ros.pipeline.latency import teacher_onnx_call, teacher_torch_call
    from vdd_ros.runtime.latency import interleaved_samples_ms, percentiles
    from vdd_ros.runtime.onnx_policy import NoiseSource, load_policy
    from vdd_ros.tasks.registry import get_task
    from vdd_ros.teacher.config import TeacherTrainConfig
    from vdd_ros.teacher.train import load_train_data, train_teacher
    from vdd_ros.util.config import load_config
    from vdd_ros.util.files import atomic_write_json
    from vdd_ros.util.progress import printer
    from vdd_ros.util.report import machine_name

    plan = cfg.plan
    root = pathlib.Path(plan.root)
    root.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(
        f"vdd_ros demo ({'FAST' if cfg.fast else 'full'}) on {machine_name()}, training on {device}; "
        f"outputs in {root}/",
        flush=True,
    )

    task = get_task(cfg.task)
    t = _stage(1, f"scripted multi-modal {task.name} demonstrations ({plan.demos} episodes, {task.num_modes} modes)")
    demos = root / "demos.safetensors"
    if not demos.exists():
        collect = CollectConfig(
            task=task.name, episodes=plan.demos, output=str(demos), mode_distribution=task.demo_mode_distribution
        )
        collect_demos(collect, log=lambda line: print(f"    {line}"))
    print(f"    {demos} ({time.monotonic() - t:.0f} s)")

    teacher_dir = root / "teacher_ddpm"
    overrides = {"dataset": str(demos), "output": str(teacher_dir)}
    shipped = cfg.shipped_teacher
    if plan.teacher_iterations is not None and shipped is None:
        overrides["iterations"] = plan.teacher_iterations
    tcfg = load_config(TeacherTrainConfig, cfg.teacher_config, overrides)
    t = _stage(
        2,
        f"{tcfg.family.upper()} diffusion teacher "
        + (f"shipped in {shipped}" if shipped else f"({tcfg.iterations} iterations)"),
    )
    step = -1 if shipped is not None else _teacher_step(teacher_dir)
    if shipped is not None:
        _take_shipped_teacher(shipped, demos, teacher_dir)
    elif step < tcfg.iterations:
        data = load_train_data(tcfg)
        evaluate = rollout_evaluator(data.task, tcfg.eval_episodes, tcfg.seed)
        result = train_teacher(
            tcfg, data, teacher_dir, resume=step >= 0, evaluate=evaluate, on_progress=printer("    ")
        )
        if result.interrupted:
            print("interrupted: run `make demo` again to resume")
            return EXIT_INTERRUPTED
    print(f"    {teacher_dir} ({time.monotonic() - t:.0f} s)")

    overrides = {
        "teacher": str(teacher_dir),
        "dataset": str(demos),
        "output": str(root / "distill_vdd"),
        "eval.final_episodes": plan.eval_episodes,
    }
    if plan.distill_iterations is not None:
        every = max(plan.distill_iterations // 4, 1)
        overrides.update({"train.iterations": plan.distill_iterations, "eval.every": every})
    dcfg = load_config(DistillJobConfig, cfg.distill_config, overrides)
    t = _stage(
        3, f"VDD distillation into {dcfg.moe.num_experts} experts ({dcfg.train.iterations} iterations) and ONNX export"
    )
    summary_file = root / "distill_vdd" / "summary.json"
    done = summary_file.exists() and json.loads(summary_file.read_text()).get("status") == "done"
    summary = json.loads(summary_file.read_text()) if done else run_distillation(dcfg, printer("    "))
    if summary["status"] != "done":
        print("interrupted: run `make demo` again to resume")
        return EXIT_INTERRUPTED
    policy_path = summary["policy"]
    print(f"    {policy_path} sha256 {summary['sha256'][:12]} ({time.monotonic() - t:.0f} s)")

    t = _stage(4, f"teacher vs VDD on {task.name} ({plan.eval_episodes} rollouts each)")
    plots = {
        "teacher trajectories": root / "trajectories_teacher.png",
        "VDD trajectories": root / "trajectories_vdd.png",
        "latency histogram": root / "latency_histogram.png",
    }
    teacher = open_policy(teacher=str(teacher_dir))
    teacher_name = f"{tcfg.family.upper()} teacher"
    t_res = evaluate_policy(
        teacher, task, plan.eval_episodes, 0, plots["teacher trajectories"], teacher_name, printer("    ")
    )
    s_res = evaluate_policy(
        open_policy(policy_path), task, plan.eval_episodes, 0, plots["VDD trajectories"], "VDD MoE", printer("    ")
    )
    print(f"    ({time.monotonic() - t:.0f} s)")

    _stage(5, "batch-1 inference latency on this CPU (1 thread)")
    torch.set_num_threads(1)
    steps = teacher.teacher.default_sample_steps
    loaded = load_policy(policy_path)
    c = loaded.contract
    feed = (
        np.zeros((1, c.obs_window, c.obs_dim), np.float32),
        *NoiseSource("mean", 0, c.num_experts, c.act_chunk * c.act_dim).draw(1),
    )
    calls = {"teacher": (teacher_torch_call(teacher, steps), 300), "moe": (lambda: loaded.run(*feed), 2000)}
    teacher_onnx = teacher_onnx_call(teacher, steps)  # the like-for-like comparison
    if callable(teacher_onnx):
        calls["teacher_onnx"] = (teacher_onnx, 1000)
    samples = interleaved_samples_ms(calls)  # all three meet the same machine load
    teacher_ms, moe_ms = samples["teacher"], samples["moe"]
    teacher_ort = percentiles(samples["teacher_onnx"]) if "teacher_onnx" in samples else teacher_onnx

    t = _stage(6, f"closed loop over ROS 2: controller + task_sim processes, {plan.ros_episodes} episodes")
    from vdd_ros.harness.loop_eval import run_ros_loop

    loop = run_ros_loop(
        policy_path, task, episodes=plan.ros_episodes, log_dir=str(root), on_progress=printer("    ")
    ).to_json_dict()
    _histogram(teacher_ms, moe_ms, loop, plots["latency histogram"], steps)
    print(f"    ({time.monotonic() - t:.0f} s)")

    moe_p50 = float(np.median(moe_ms))
    same_runtime = teacher_ort["p50_ms"] / moe_p50 if isinstance(teacher_ort, dict) else None
    report = {
        "machine": machine_name(),
        "task": task.name,
        "teacher": {**_quality(t_res), "name": teacher_name, "steps": steps},
        "vdd": _quality(s_res),
        "episodes": plan.eval_episodes,
        "latency_ms": {
            "teacher_p50": float(np.median(teacher_ms)),
            "teacher_p99": float(np.percentile(teacher_ms, 99)),
            "teacher_onnxruntime": teacher_ort,
            "vdd_p50": moe_p50,
            "vdd_p99": float(np.percentile(moe_ms, 99)),
            "speedup_vs_pytorch_teacher_p50": float(np.median(teacher_ms)) / moe_p50,
            "speedup_same_runtime_p50": same_runtime,
        },
        "ros_loop": loop,
        "policy": policy_path,
        "plots": {k: str(v) for k, v in plots.items()},
        "total_seconds": round(time.monotonic() - started, 1),
    }
    atomic_write_json(root / "demo_summary.json", report, indent=2)
    _print_summary(report)
    return 0


def _quality(result: RolloutResult) -> dict:
    """Success and entropy, plus the per-context mode figures of a task with state-dependent modes."""
    per_context = {k: result.extras[k] for k in _CONTEXT_FIGURES if result.extras.get(k) is not None}
    return {"success_rate": result.success_rate, "entropy": result.entropy, **per_context}


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool("demo", __doc__, DemoConfig, run, argv)


def _print_summary(r: dict) -> None:
    lat, loop = r["latency_ms"], r["ros_loop"]
    print("\n" + "=" * 72)
    print(f"vdd_ros demo summary ({r['machine']}, {r['total_seconds']:.0f} s)")
    print("=" * 72)
    extra = [k for k in _CONTEXT_FIGURES if k in r["vdd"] and k in r["teacher"]]
    head = "".join(f"{k.replace('_', ' '):>18}" for k in extra)
    print(f"{'':24}{'success':>10}{'entropy':>10}{head}   ({r['task']}, {r['episodes']} rollouts, seed 0)")
    for name, key in ((r["teacher"]["name"], "teacher"), ("VDD MoE (ONNX)", "vdd")):
        row = "".join(f"{r[key][k]:>18.3f}" for k in extra)
        print(f"{name:24}{r[key]['success_rate']:>10.3f}{r[key]['entropy']:>10.3f}{row}")
    steps, t_ort, same = r["teacher"]["steps"], lat["teacher_onnxruntime"], lat["speedup_same_runtime_p50"]
    print(f"inference, batch 1:  VDD one ONNX run p50 {lat['vdd_p50']:.3f} ms (p99 {lat['vdd_p99']:.3f})")
    if same is not None:
        print(f"  teacher, {steps} steps in onnxruntime p50 {t_ort['p50_ms']:.3f} ms  ->  {same:.1f}x (same runtime)")
    print(
        f"  teacher, {steps} steps in PyTorch     p50 {lat['teacher_p50']:.3f} ms  ->  "
        f"{lat['speedup_vs_pytorch_teacher_p50']:.0f}x"
    )
    print(
        f"ROS loop ({loop['episodes']} episodes over DDS): success {loop['success_rate']:.3f}, "
        f"obs->action p50 {loop['obs_to_action_p50_ms']:.2f} ms, p99 {loop['obs_to_action_p99_ms']:.2f} ms, "
        f"late actions {loop['late_actions']}"
    )
    rate, n = loop["success_rate"], loop["episodes"]
    print(  # a binomial rate over a few dozen episodes cannot resolve a few points
        f"  against in process ({r['vdd']['success_rate']:.3f}, {r['episodes']} rollouts): "
        f"{rate - r['vdd']['success_rate']:+.3f}, one standard error of the loop's figure "
        f"{math.sqrt(rate * (1 - rate) / n):.3f} (more: evaluate policy=... ros=true episodes=N)"
    )
    print(f"policy: {r['policy']}")
    for name, path in r["plots"].items():
        print(f"plot ({name}): {path}")
    print("=" * 72)


if __name__ == "__main__":
    sys.exit(main())
