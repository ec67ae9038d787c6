"""Benchmark the control loop over DDS: latency, achieved rate, overruns, hot-swap cost.

For each control rate, a controller process serves a policy while this process publishes
stamped JointState observations and times the first PolicyAction answering each one
(observation-to-action latency across two processes). Then the policy is swapped back
and forth through the parameter service while the loop runs at 500 Hz, and one slow (large
file) load is timed. Writes bench_loop[_sync].json/.png, logs and temporary policies under
``output``; only with ``update_docs=true`` also the marked section of <docs>/results.md.
Example: bench_loop policy=policies/avoiding_vdd.onnx rates=[100,500] seconds=3
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from vdd_ros.cli.common import output_dir, require_dir, require_file, require_positive, run_tool
from vdd_ros.util.config import ConfigError, knob

if TYPE_CHECKING:
    from vdd_ros_msgs.msg import PolicyAction, PolicyStatus

    from vdd_ros.harness.process import NodeProcess

CONTROLLER = "vdd_controller"


@dataclasses.dataclass(frozen=True)
class BenchLoopConfig:
    """What to serve, at which rates, and where the report goes."""

    policy: str = knob(
        "", "ONNX policy served in the rate runs ('': a random 8-expert MoE, distilled layout); swaps use random ones"
    )
    rates: tuple[float, ...] = knob((100.0, 500.0, 1000.0), "control rates to measure [Hz]")
    seconds: float = knob(5.0, "measured seconds per rate")
    obs_rate: float = knob(0.0, "observations per second (0: the control rate)")
    swaps: int = knob(20, "policy swaps at 500 Hz")
    big_policy_mb: int = knob(600, "size of the slow-load policy [MB]")
    realtime_priority: int = knob(0, "SCHED_FIFO priority of the controller's control thread (0: off)")
    sync: bool = knob(False, "controller ticks on fresh observations (sync_to_observations)")
    output: str = knob("runs/bench_loop", "output directory (report, plot, logs, temporary policies)")
    update_docs: bool = knob(False, "also rewrite the bench_loop section of <docs>/results.md")
    docs: str = knob("docs", "documentation folder updated with update_docs=true")

    def check(self) -> None:
        if self.policy:
            require_file(self.policy, "policy")
        if not self.rates:
            raise ConfigError("rates must list at least one control rate")
        require_positive({"seconds": self.seconds, "swaps": self.swaps, "big_policy_mb": self.big_policy_mb})
        require_positive({f"rates[{i}]": rate for i, rate in enumerate(self.rates)})
        if self.obs_rate < 0 or self.realtime_priority < 0:
            raise ConfigError("obs_rate and realtime_priority must be >= 0")
        if self.update_docs:
            require_dir(self.docs, "docs")

    @property
    def name(self) -> str:
        return "bench_loop_sync" if self.sync else "bench_loop"


class _Probe:
    """Publishes observations and matches answering actions by observation stamp."""

    def __init__(self, ns: str, names: list[str]) -> None:
        import rclpy
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import JointState
        from vdd_ros_msgs.msg import PolicyAction, PolicyStatus

        from vdd_ros.nodes.policy_client import PolicyClient
        from vdd_ros.nodes.shared import low_overhead_executor

        self.joint_state = JointState
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("vdd_bench_loop", context=self.context)
        self.names = names
        self.sent: dict[tuple[int, int], float] = {}
        self.latency: list[float] = []
        self.actions: list[PolicyAction] = []
        self.status: list[PolicyStatus] = []
        qos = QoSProfile(depth=5000, reliability=ReliabilityPolicy.RELIABLE)  # never drop while the probe waits
        self.node.create_subscription(PolicyAction, f"{ns}/policy_action", self._on_action, qos)
        self.node.create_subscription(PolicyStatus, f"{ns}/vdd_controller/status", self.status.append, 10)
        self.pub = self.node.create_publisher(JointState, f"{ns}/observation", 5)
        self.policies = PolicyClient(self.node, f"{ns}/{CONTROLLER}", wait=self.waiter)
        self.executor = low_overhead_executor(self.context)
        self.executor.add_node(self.node)
        self.rng = np.random.default_rng(0)

    def _on_action(self, msg: PolicyAction) -> None:
        now = time.monotonic()
        self.actions.append(msg)
        key = (msg.observation_stamp.sec, msg.observation_stamp.nanosec)
        sent = self.sent.pop(key, None)
        if sent is not None:
            self.latency.append(now - sent)

    def publish(self) -> None:
        msg = self.joint_state(name=self.names, position=self.rng.normal(0, 0.1, len(self.names)).tolist())
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.sent[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = time.monotonic()
        self.pub.publish(msg)

    def run_for(self, seconds: float, obs_rate: float = 100.0) -> None:
        end = time.monotonic() + seconds
        next_pub = time.monotonic()
        while (now := time.monotonic()) < end:
            if now >= next_pub:
                self.publish()
                next_pub = max(next_pub + 1.0 / obs_rate, now)
            self.executor.spin_once(timeout_sec=min(1e-3, max(0.0, next_pub - time.monotonic())))

    def waiter(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Spin (publishing observations, so the loop keeps running) until ``predicate`` or ``timeout``."""
        end = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > end:
                return False
            self.publish()
            self.executor.spin_once(timeout_sec=0.01)
        return True

    def wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        if not self.waiter(predicate, timeout):
            raise TimeoutError(f"bench_loop: no {what} within {timeout} s")

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def _start(policy: str, rate: float, ns: str, log_dir: pathlib.Path, extra: dict[str, object]) -> NodeProcess:
    from vdd_ros.harness.process import NodeProcess, ros_params

    params = {"policy_path": policy, "control_rate_hz": rate, "status_rate_hz": 2.0, "stale_timeout_s": 1.0, **extra}
    log = log_dir / f"controller_{int(rate)}.log"
    return NodeProcess("controller", ["-r", f"__ns:={ns}", *ros_params(params)], log)


def bench_rate(
    policy: str,
    names: list[str],
    rate: float,
    obs_rate: float,
    seconds: float,
    log_dir: pathlib.Path,
    extra: dict[str, object],
) -> dict:
    ns = f"/bench_{int(rate)}"
    proc = _start(policy, rate, ns, log_dir, extra)
    probe = _Probe(ns, names)
    try:
        probe.wait(lambda: len(probe.status) >= 2 and len(probe.actions) > 10, 30.0, "controller output")
        probe.latency.clear()
        first, count = probe.status[-1], len(probe.status)
        probe.run_for(seconds, obs_rate)
        probe.wait(lambda: probe.status[-1].ticks > first.ticks + 1 and len(probe.status) > 3, 5.0, "status")
        last = probe.status[-1]
        lat = np.array(probe.latency) * 1e3
        windows = probe.status[count:]  # the controller's own figures, one per status period
        inside_p50 = np.nanmedian([w.observation_to_action_p50_ms for w in windows])
        inside_p99 = np.nanmax([w.observation_to_action_p99_ms for w in windows])
        result = {
            "rate_hz": rate,
            "achieved_hz": (last.ticks - first.ticks) / max(1e-9, stamp_s(last) - stamp_s(first)),
            "obs_to_action_p50_ms": float(np.percentile(lat, 50)),
            "obs_to_action_p99_ms": float(np.percentile(lat, 99)),
            "controller_obs_to_action_p50_ms": float(inside_p50),
            "controller_obs_to_action_max_window_p99_ms": float(inside_p99),
            "obs_rate_hz": obs_rate,
            "inference_p50_ms": float(last.inference_latency_p50_ms),
            "inference_p99_ms": float(last.inference_latency_p99_ms),
            "overruns": int(last.tick_overruns - first.tick_overruns),
            "missed_ticks": int(last.missed_ticks - first.missed_ticks),
            "ticks": int(last.ticks - first.ticks),
            "samples": len(lat),
        }
    finally:
        probe.close()
        proc.stop()
    return result


def stamp_s(msg) -> float:
    return msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec


def _counts(status: PolicyStatus) -> tuple[int, int, int]:
    return int(status.missed_ticks), int(status.tick_overruns), int(status.stale_observations)


def _delta(after: PolicyStatus, before: PolicyStatus) -> dict[str, int]:
    a, b = _counts(after), _counts(before)
    return {"missed_ticks": a[0] - b[0], "overruns": a[1] - b[1], "stale_ticks": a[2] - b[2]}


def _intervals_periods(actions: list[PolicyAction], period_s: float) -> np.ndarray:
    """Intervals between consecutive actions (controller stamps), in control periods."""
    return np.diff(np.array([stamp_s(a) for a in actions])) / period_s


def _max_gap_periods(actions: list[PolicyAction], period_s: float) -> float:
    """Largest interval between consecutive actions, in control periods."""
    intervals = _intervals_periods(actions, period_s)
    return float(intervals.max()) if intervals.size else float("nan")


def plot_intervals(report: dict, path: pathlib.Path) -> None:
    """PNG: action intervals over time during the slow load and during an idle window of the same run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = report["swap"]
    fig, ax = plt.subplots(figsize=(8, 3.2))
    for key, label, color in (("idle_intervals", "idle", "tab:gray"), ("load_intervals", "slow load", "tab:red")):
        intervals = np.asarray(s[key])
        label = f"{label} (max {intervals.max():.1f})"
        ax.plot(np.cumsum(intervals) / 500.0, intervals, lw=0.7, color=color, label=label)
    ax.axhline(2.0, ls="--", color="black", lw=0.8)
    ax.set(xlabel="time in window [s]", ylabel="action interval [periods]", yscale="log")
    mode = "sync" if report["sync"] else "timer"
    ax.set_title(f"500 Hz, {mode} mode: {report['big_policy_mb']} MB policy loaded during the red window")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def bench_swap(
    policies: list[tuple[str, str]],
    big: str,
    names: list[str],
    swaps: int,
    log_dir: pathlib.Path,
    extra: dict[str, object],
) -> dict:
    """At 500 Hz: an idle baseline, then ``swaps`` swaps over as long, then one slow (large-file) load.

    Missed ticks and overruns during the swaps are compared with the idle window of the same
    length measured just before, so a busy machine's own misses are not charged to swapping.
    """
    ns = "/bench_swap"
    proc = _start(policies[0][0], 500.0, ns, log_dir, extra)
    probe = _Probe(ns, names)
    call_ms, first_action_ms = [], []
    try:
        probe.wait(lambda: len(probe.status) >= 2, 30.0, "controller status")
        probe.wait(probe.policies.client.services_are_ready, 10.0, "parameter services")
        probe.run_for(0.5)
        swaps_start = probe.status[-1]
        start = time.monotonic()
        for i in range(swaps):
            target, want = policies[(i + 1) % len(policies)]
            t0 = time.monotonic()
            swap = probe.policies.set_policy_path(target, timeout_s=10.0)
            t1 = time.monotonic()
            if not swap.ok:
                raise RuntimeError(f"swap rejected: {swap.reason}")
            call_ms.append((t1 - t0) * 1e3)
            count = len(probe.actions)
            probe.wait(lambda w=want, c=count: any(a.policy_id == w for a in probe.actions[c:]), 5.0, "new actions")
            first_action_ms.append((time.monotonic() - t0) * 1e3)
            probe.run_for(0.3)
        swap_seconds = time.monotonic() - start
        probe.run_for(0.6)  # the next status report covers the last swap
        swaps_end = probe.status[-1]
        count = len(probe.actions)
        probe.run_for(swap_seconds + 0.6)
        swap_window = _delta(swaps_end, swaps_start)
        idle_window = _delta(probe.status[-1], swaps_end)
        idle = probe.actions[count:]
        idle_window["max_action_gap_periods"] = _max_gap_periods(idle, 1.0 / 500.0)
        # the slow load: one parameter call that takes seconds to read, hash and parse
        count = len(probe.actions)
        before = probe.status[-1]
        t0 = time.monotonic()
        slow_load = probe.policies.set_policy_path(big, timeout_s=60.0)
        load_s = time.monotonic() - t0
        during = probe.actions[count:]
        probe.run_for(0.6)
        slow = _delta(probe.status[-1], before)
        answered = {(a.observation_stamp.sec, a.observation_stamp.nanosec) for a in during}
    finally:
        probe.close()
        proc.stop()
    return {
        "swaps": swaps,
        "swap_call_p50_ms": float(np.median(call_ms)),
        "swap_call_max_ms": float(np.max(call_ms)),
        "swap_to_first_new_action_p50_ms": float(np.median(first_action_ms)),
        "swap_window_s": swap_seconds,
        "during_swaps": swap_window,
        "idle_baseline": idle_window,
        "idle_intervals": _intervals_periods(idle, 1.0 / 500.0).tolist(),
        "load_intervals": _intervals_periods(during, 1.0 / 500.0).tolist(),
        "slow_load": {
            "accepted": slow_load.ok,
            "call_s": load_s,
            **slow,
            "max_action_gap_periods": _max_gap_periods(during, 1.0 / 500.0),
            "observations_answered": len(answered),
        },
    }


def markdown(report: dict, command: str) -> str:
    rows = [
        f"Machine: {report['machine']}; SCHED_FIFO priority {report['realtime_priority'] or 'off'}; "
        f"sync_to_observations {report['sync']}; "
        "random 8-expert MoE (same graph layout as a distilled one).",
        "",
        "| rate [Hz] | obs. rate [Hz] | achieved [Hz] | obs->action round trip p50 / p99 [ms] "
        "| obs->action in controller p50 / worst p99 [ms] | inference p50 / p99 [ms] | overruns | missed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rates"]:
        rows.append(
            f"| {r['rate_hz']:.0f} | {r['obs_rate_hz']:.0f} | {r['achieved_hz']:.1f} | "
            f"{r['obs_to_action_p50_ms']:.3f} / {r['obs_to_action_p99_ms']:.3f} | "
            f"{r['controller_obs_to_action_p50_ms']:.3f} / {r['controller_obs_to_action_max_window_p99_ms']:.3f} | "
            f"{r['inference_p50_ms']:.3f} / {r['inference_p99_ms']:.3f} | "
            f"{r['overruns']} of {r['ticks']} | {r['missed_ticks']} |"
        )
    rows += [
        "",
        "Round trip: probe process publishes a stamped JointState, times the PolicyAction answering it "
        "(two DDS hops, both ends in Python). In controller: observation callback to action publish, "
        "from PolicyStatus (median of the per-report p50s, worst per-report p99).",
    ]
    s = report["swap"]
    w, i, load = s["during_swaps"], s["idle_baseline"], s["slow_load"]
    rows += [
        "",
        f"Hot swap at 500 Hz, {s['swaps']} swaps over {s['swap_window_s']:.1f} s: parameter call p50 "
        f"{s['swap_call_p50_ms']:.1f} ms (max {s['swap_call_max_ms']:.1f}), first action of the new policy p50 "
        f"{s['swap_to_first_new_action_p50_ms']:.1f} ms after the call; missed ticks {w['missed_ticks']}, "
        f"overruns {w['overruns']} (idle baseline over as long: missed {i['missed_ticks']}, "
        f"overruns {i['overruns']}, largest gap between actions {i['max_action_gap_periods']:.1f} periods).",
        "",
        f"Slow load at 500 Hz ({report['big_policy_mb']} MB policy, parameter call {load['call_s']:.2f} s, "
        f"{'accepted' if load['accepted'] else 'REJECTED'}): stale ticks {load['stale_ticks']}, largest gap between "
        f"actions {load['max_action_gap_periods']:.1f} periods, {load['observations_answered']} distinct observations "
        f"answered during the call, missed ticks {load['missed_ticks']}, overruns {load['overruns']}.",
        "",
        f"Reproduce: `{command}`",
    ]
    return "\n".join(rows)


def run(cfg: BenchLoopConfig) -> int:
    from vdd_ros.export.random_policy import export_random_policy
    from vdd_ros.runtime.onnx_policy import load_policy
    from vdd_ros.util.files import atomic_write_json
    from vdd_ros.util.report import machine_name, update_results

    out = output_dir(cfg.output)
    work = out / ("work_sync" if cfg.sync else "work")  # controller logs and the generated policies
    work.mkdir(exist_ok=True)
    extra = {"realtime_priority": cfg.realtime_priority, "sync_to_observations": cfg.sync}
    names = [f"obs_{i}" for i in range(4)]
    policies = []  # (path, policy_id) swapped in turn
    for k in ("a", "b"):
        path = str(work / f"policy_{k}.onnx")
        export_random_policy(path, policy_id=f"policy_{k}", seed=len(policies), num_experts=8)
        policies.append((path, f"policy_{k}"))
    served, served_names = policies[0][0], names
    if cfg.policy:
        served, served_names = str(pathlib.Path(cfg.policy).resolve()), list(load_policy(cfg.policy).contract.obs_names)
    big = work / "policy_big.onnx"
    export_random_policy(big, policy_id="policy_big", seed=2, ballast_mb=cfg.big_policy_mb)
    report = {
        "machine": machine_name(),
        "policy": cfg.policy or "random 8-expert MoE",
        "rates": [],
        "swap": None,
        "realtime_priority": cfg.realtime_priority,
        "big_policy_mb": cfg.big_policy_mb,
        "sync": cfg.sync,
    }
    try:
        for rate in cfg.rates:
            r = bench_rate(served, served_names, rate, cfg.obs_rate or rate, cfg.seconds, work, extra)
            report["rates"].append(r)
            print(
                f"{rate:6.0f} Hz: achieved {r['achieved_hz']:7.1f} Hz, obs->action p50 "
                f"{r['obs_to_action_p50_ms']:.3f} p99 {r['obs_to_action_p99_ms']:.3f} ms (in controller p50 "
                f"{r['controller_obs_to_action_p50_ms']:.3f} "
                f"p99 {r['controller_obs_to_action_max_window_p99_ms']:.3f}), "
                f"inference p99 {r['inference_p99_ms']:.3f} ms, overruns {r['overruns']}, missed {r['missed_ticks']}",
                flush=True,
            )
        report["swap"] = bench_swap(policies, str(big), names, cfg.swaps, work, extra)
    finally:
        big.unlink(missing_ok=True)  # hundreds of MB of ballast
        pathlib.Path(f"{big}.sha256").unlink(missing_ok=True)
    s = report["swap"]
    print(
        f"swap at 500 Hz x{s['swaps']}: call p50 {s['swap_call_p50_ms']:.1f} ms (max {s['swap_call_max_ms']:.1f}), "
        f"first new action p50 {s['swap_to_first_new_action_p50_ms']:.1f} ms, during swaps {s['during_swaps']}, "
        f"idle baseline {s['idle_baseline']}"
    )
    print(f"slow load ({cfg.big_policy_mb} MB): {s['slow_load']}")
    report_path = out / f"{cfg.name}.json"
    atomic_write_json(report_path, report, indent=2)
    plot_intervals(report, report_path.with_suffix(".png"))
    print(f"wrote {report_path} and {report_path.with_suffix('.png')}")
    if cfg.update_docs:
        command = "bench_loop " + " ".join(a for a in sys.argv[1:] if not a.startswith("update_docs"))
        heading = "Control loop over DDS (bench_loop" + (" --sync)" if cfg.sync else ")")
        update_results(pathlib.Path(cfg.docs, "results.md"), markdown(report, command.strip()), cfg.name, heading)
        print(f"updated {cfg.docs}/results.md")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool("bench_loop", __doc__, BenchLoopConfig, run, argv)


if __name__ == "__main__":
    sys.exit(main())
