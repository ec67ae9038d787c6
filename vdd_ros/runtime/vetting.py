"""What a policy graph must show before it may drive a robot, and what every output must satisfy.

Vetting probes the graph over a spread of observations -- the normaliser's mean, each
dimension at mean +/- 3 std, and random windows inside that box -- because a graph that
is fine at the mean can still return an out-of-range expert index or a NaN elsewhere.
The same output check runs on every control tick (``output_problem``), so vetting and
serving cannot disagree about what a valid output is.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from vdd_ros.export.contract import ContractError, PolicyContract
from vdd_ros.runtime.noise import NoiseSource

RunFn = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]

PROBE_SPREAD_STD = 3.0  # probes reach mean +/- this many standard deviations per dimension
RANDOM_PROBES = 32
LATENCY_ROUNDS = 3  # a budget miss must repeat in every round (a busy moment is not the policy's fault)
_GATING_TOLERANCE = 1e-3


def output_problem(
    contract: PolicyContract, action: np.ndarray, expert: np.ndarray, gating: np.ndarray
) -> str | None:
    """Why one batch-1 graph output must not be used, or None if it may."""
    c = contract
    if action.shape != (1, c.act_chunk, c.act_dim) or expert.shape != (1,) or gating.shape != (1, c.num_experts):
        return f"output shapes {action.shape}, {expert.shape}, {gating.shape} do not match the contract"
    if not np.all(np.isfinite(action)):
        return "non-finite action"
    z = int(expert[0])
    if not 0 <= z < c.num_experts:
        return f"expert index {z} outside [0, {c.num_experts})"
    if not np.all(np.isfinite(gating)) or np.any(gating < -_GATING_TOLERANCE):
        return "gating is not a probability vector (negative or non-finite entries)"
    total = float(gating.sum())
    if abs(total - 1.0) > _GATING_TOLERANCE:
        return f"gating sums to {total:.6g}, not 1"
    return None


def probe_windows(contract: PolicyContract, rng: np.random.Generator) -> np.ndarray:
    """(P, T, obs_dim) observation windows spread over the normaliser's box."""
    d, t = contract.obs_dim, contract.obs_window
    norm = contract.obs_normalizer
    mean = np.asarray(norm.get("mean", np.zeros(d)), dtype=np.float32)
    std = np.asarray(norm.get("std", np.ones(d)), dtype=np.float32)
    reach = PROBE_SPREAD_STD * std
    points = [mean]
    for i in range(d):
        for sign in (1.0, -1.0):
            p = mean.copy()
            p[i] += sign * reach[i]
            points.append(p)
    points += list(mean + reach * rng.uniform(-1.0, 1.0, size=(RANDOM_PROBES, d)).astype(np.float32))
    windows = np.repeat(np.stack(points)[:, None, :], t, axis=1)
    # a few windows whose history moves, as on a robot (oldest entry at the far corner)
    moving = windows[-RANDOM_PROBES:].copy()
    moving[:, 0, :] = mean - reach * np.sign(moving[:, -1, :] - mean)
    return np.concatenate([windows, moving]).astype(np.float32)


def _timed_runs(run: RunFn, windows: np.ndarray, noise: Callable[[], tuple[np.ndarray, np.ndarray]], cpu: bool):
    """Run every window once; yield (output, seconds). CPU time when the caller's thread does the work."""
    clock = time.thread_time if cpu else time.perf_counter
    for w in windows:
        gumbel, eps = noise()
        start = clock()
        out = run(w[None], gumbel, eps)
        yield out, clock() - start


def vet_graph(
    contract: PolicyContract,
    run: RunFn,
    noise: Callable[[], tuple[np.ndarray, np.ndarray]],
    latency_budget_s: float | None,
    work_on_caller_thread: bool,
    seed: int = 0,
) -> float:
    """Probe ``run`` over a spread of windows; return the inference p99 [s]; raise ContractError.

    ``work_on_caller_thread``: the graph runs on the calling thread (CPU provider, one
    intra-op thread), so its CPU time is its cost and a loaded machine cannot fail it;
    otherwise wall time is measured.
    """
    windows = probe_windows(contract, np.random.default_rng(seed))
    samples: list[float] = []
    for index, ((action, expert, gating), seconds) in enumerate(
        _timed_runs(run, windows, noise, work_on_caller_thread)
    ):
        problem = output_problem(contract, action, expert, gating)
        if problem is not None:
            where = "at the normaliser mean" if index == 0 else f"on probe window {index} of {len(windows)}"
            raise ContractError(f"vetting: {problem} {where}")
        samples.append(seconds)
    p99 = float(np.percentile(samples[2:] or samples, 99))
    if latency_budget_s is None:
        return p99
    for _ in range(LATENCY_ROUNDS - 1):
        if p99 <= latency_budget_s:
            break
        again = [s for _, s in _timed_runs(run, windows, noise, work_on_caller_thread)]
        p99 = min(p99, float(np.percentile(again, 99)))
    if p99 > latency_budget_s:
        kind = "CPU time" if work_on_caller_thread else "wall time"
        raise ContractError(
            f"vetting: inference p99 {p99 * 1e3:.3f} ms ({kind}, best of {LATENCY_ROUNDS} rounds) exceeds the "
            f"budget of {latency_budget_s * 1e3:.3f} ms: too slow for this control rate"
        )
    return p99


def vet_policy(
    path: str,
    contract: PolicyContract,
    run: RunFn,
    latency_budget_fraction: float | None,
    control_period_s: float | None,
    work_on_caller_thread: bool,
) -> float:
    """The vetting every backend's loader runs on a freshly loaded ``run``; ContractError naming ``path``.

    Sampled noise (both noise inputs live) and a budget of ``latency_budget_fraction`` of
    ``control_period_s`` (None: the policy's own period; a None fraction: no limit).
    """
    noise = NoiseSource("sample", 0, contract.num_experts, contract.act_chunk * contract.act_dim)
    budget = None
    if latency_budget_fraction is not None:
        budget = latency_budget_fraction * (control_period_s or contract.control_period_s)
    try:
        return vet_graph(contract, run, lambda: noise.draw(1), budget, work_on_caller_thread)
    except ContractError as exc:
        raise ContractError(f"{path!r}: {exc}") from None
    except Exception as exc:  # the graph itself failed on a probe
        raise ContractError(f"{path!r}: vetting inference failed: {exc}") from exc
