"""Benchmark the control loop over DDS: latency, achieved rate, overruns, hot-swap cost.

For each control rate, a controller process serves a policy while this process publishes
stamped JointState observations and times the first PolicyAction answering each one
(observation-to-action latency across two processes). Then the policy is swapped back
and forth through the parameter service while the loop runs at 500 Hz.

  python -m vdd_ros.cli.bench_loop [--policy P.onnx] [--rates 100 500 1000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time

import numpy as np
import rclpy
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from vdd_ros_msgs.msg import PolicyAction, PolicyStatus

from vdd_ros.cli.bench import machine_name, update_results
from vdd_ros.export.random_policy import export_random_policy
from vdd_ros.harness.process import NodeProcess
from vdd_ros.nodes.shared import low_overhead_executor


class _Probe:
    """Publishes observations and matches answering actions by observation stamp."""

    def __init__(self, ns: str, names: list[str]) -> None:
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
        self.params = AsyncParameterClient(self.node, f"{ns}/vdd_controller")
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
        msg = JointState(name=self.names, position=self.rng.normal(0, 0.1, len(self.names)).tolist())
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

    def wait(self, predicate, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > end:
                raise TimeoutError(f"bench_loop: no {what} within {timeout} s")
            self.publish()
            self.executor.spin_once(timeout_sec=0.01)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def _start(policy: str, rate: float, ns: str, log_dir: pathlib.Path, extra: list[str]) -> NodeProcess:
    return NodeProcess(
        "controller",
        [
            "-r",
            f"__ns:={ns}",
            "-p",
            f"policy_path:={policy}",
            "-p",
            f"control_rate_hz:={rate}",
            "-p",
            "status_rate_hz:=2.0",
            "-p",
            "stale_timeout_s:=1.0",
            *extra,
        ],
        log_dir / f"controller_{int(rate)}.log",
    )


def bench_rate(
    policy: str, names: list[str], rate: float, obs_rate: float, seconds: float, log_dir: pathlib.Path, extra: list[str]
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
    policies: list[str], big: str, names: list[str], swaps: int, log_dir: pathlib.Path, extra: list[str]
) -> dict:
    """At 500 Hz: an idle baseline, then ``swaps`` swaps over as long, then one slow (large-file) load.

    Missed ticks and overruns during the swaps are compared with the idle window of the same
    length measured just before, so a busy machine's own misses are not charged to swapping.
    """
    ns = "/bench_swap"
    proc = _start(policies[0], 500.0, ns, log_dir, extra)
    probe = _Probe(ns, names)
    call_ms, first_action_ms = [], []
    try:
        probe.wait(lambda: len(probe.status) >= 2, 30.0, "controller status")
        probe.wait(probe.params.services_are_ready, 10.0, "parameter services")
        probe.run_for(0.5)
        swaps_start = probe.status[-1]
        start = time.monotonic()
        for i in range(swaps):
            target = policies[(i + 1) % len(policies)]
            t0 = time.monotonic()
            future = probe.params.set_parameters([Parameter("policy_path", value=target)])
            probe.wait(future.done, 10.0, "parameter reply")
            t1 = time.monotonic()
            if not future.result().results[0].successful:
                raise RuntimeError(f"swap rejected: {future.result().results[0].reason}")
            call_ms.append((t1 - t0) * 1e3)
            want = pathlib.Path(target).stem
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
        future = probe.params.set_parameters([Parameter("policy_path", value=big)])
        probe.wait(future.done, 60.0, "the slow load's reply")
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
            "accepted": bool(future.result().results[0].successful),
            "call_s": load_s,
            **slow,
            "max_action_gap_periods": _max_gap_periods(during, 1.0 / 500.0),
            "observations_answered": len(answered),
        },
    }


def markdown(report: dict, argv: list[str] | None) -> str:
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
        f"Reproduce: `python -m vdd_ros.cli.bench_loop{''.join(' ' + a for a in argv or [])}`",
    ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", type=float, nargs="+", default=[100.0, 500.0, 1000.0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--obs-rate", type=float, default=0.0, help="observations per second (0: the control rate)")
    ap.add_argument("--swaps", type=int, default=20)
    ap.add_argument("--big-policy-mb", type=int, default=600, help="size of the slow-load policy (~3 s here)")
    ap.add_argument("--realtime-priority", type=int, default=0, help="SCHED_FIFO priority of the control thread")
    ap.add_argument("--sync", action="store_true", help="controller ticks on fresh observations (sync_to_observations)")
    ap.add_argument("--out", default="", help="JSON report (default runs/bench_loop[_sync].json)")
    ap.add_argument("--results", default="docs/results.md", help="markdown file to update ('' = none)")
    args = ap.parse_args(argv)
    extra = [
        "-p",
        f"realtime_priority:={args.realtime_priority}",
        "-p",
        f"sync_to_observations:={str(args.sync).lower()}",
    ]
    log_dir = pathlib.Path(tempfile.mkdtemp(prefix="vdd_bench_loop_"))
    names = [f"obs_{i}" for i in range(4)]
    policies = [str(log_dir / f"policy_{k}.onnx") for k in ("a", "b")]
    for k, path in enumerate(policies):
        export_random_policy(path, policy_id=pathlib.Path(path).stem, seed=k, num_experts=8)
    big = str(log_dir / "policy_big.onnx")
    export_random_policy(big, policy_id="policy_big", seed=2, ballast_mb=args.big_policy_mb)
    report = {
        "machine": machine_name(),
        "rates": [],
        "swap": None,
        "realtime_priority": args.realtime_priority,
        "big_policy_mb": args.big_policy_mb,
        "sync": args.sync,
    }
    for rate in args.rates:
        r = bench_rate(policies[0], names, rate, args.obs_rate or rate, args.seconds, log_dir, extra)
        report["rates"].append(r)
        print(
            f"{rate:6.0f} Hz: achieved {r['achieved_hz']:7.1f} Hz, obs->action p50 {r['obs_to_action_p50_ms']:.3f} "
            f"p99 {r['obs_to_action_p99_ms']:.3f} ms (in controller p50 {r['controller_obs_to_action_p50_ms']:.3f} "
            f"p99 {r['controller_obs_to_action_max_window_p99_ms']:.3f}), "
            f"inference p99 {r['inference_p99_ms']:.3f} ms, "
            f"overruns {r['overruns']}, missed {r['missed_ticks']}",
            flush=True,
        )
    report["swap"] = bench_swap(policies, big, names, args.swaps, log_dir, extra)
    s = report["swap"]
    print(
        f"swap at 500 Hz x{s['swaps']}: call p50 {s['swap_call_p50_ms']:.1f} ms (max {s['swap_call_max_ms']:.1f}), "
        f"first new action p50 {s['swap_to_first_new_action_p50_ms']:.1f} ms, during swaps {s['during_swaps']}, "
        f"idle baseline {s['idle_baseline']}"
    )
    print(f"slow load ({args.big_policy_mb} MB): {s['slow_load']}")
    out = pathlib.Path(args.out or f"runs/bench_loop{'_sync' if args.sync else ''}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    plot_intervals(report, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    if args.results:
        update_results(
            pathlib.Path(args.results),
            markdown(report, sys.argv[1:] if argv is None else argv),
            "bench_loop_sync" if args.sync else "bench_loop",
            "Control loop over DDS (bench_loop" + (" --sync)" if args.sync else ")"),
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
