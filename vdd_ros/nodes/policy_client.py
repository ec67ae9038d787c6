"""The one client that swaps a running controller's policy: set ``policy_path``, get the verdict.

Used by ``distill``'s ``deploy_to``, the benchmarks and the tests. The controller vets the
file before it answers (a large policy can take seconds), so the reply is the verdict: a
rejected file leaves the old policy serving and the reason says why.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

import rclpy
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient

# wait(predicate, timeout_s) -> whether predicate became true in time
Waiter = Callable[[Callable[[], bool], float], bool]

DEFAULT_REPLY_TIMEOUT_S = 300.0  # vetting a large policy (or building a TensorRT engine) takes a while


class SwapResult(NamedTuple):
    ok: bool
    reason: str


def spinning_waiter(spin_once: Callable[[float], object]) -> Waiter:
    """Wait by spinning here with ``spin_once(timeout_s)`` (the caller's executor, or ``rclpy.spin_once``)."""

    def wait(predicate: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            spin_once(min(0.01, left))
        return True

    return wait


def polling_waiter(predicate: Callable[[], bool], timeout_s: float) -> bool:
    """Wait while another thread's executor spins the node."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


class PolicyClient:
    """Parameter client of one controller node (``controller`` is its full name, e.g. ``/ns/vdd_controller``)."""

    def __init__(self, node: Node, controller: str, wait: Waiter | None = None) -> None:
        self.controller = controller
        self.client = AsyncParameterClient(node, controller)
        self._wait = wait or spinning_waiter(lambda t: rclpy.spin_once(node, timeout_sec=t))

    def wait_ready(self, timeout_s: float = 10.0) -> bool:
        return self._wait(self.client.services_are_ready, timeout_s)

    def set(self, *params: Parameter, timeout_s: float = DEFAULT_REPLY_TIMEOUT_S) -> SwapResult:
        """One atomic set of ``params``; the controller's combined verdict."""
        if not self.wait_ready():
            return SwapResult(False, f"no parameter service for {self.controller!r}")
        future = self.client.set_parameters_atomically(list(params))
        if not self._wait(future.done, timeout_s):
            return SwapResult(False, f"{self.controller!r} did not answer within {timeout_s:g} s")
        result = future.result().result
        return SwapResult(bool(result.successful), result.reason)

    def set_policy_path(self, path: str, timeout_s: float = DEFAULT_REPLY_TIMEOUT_S) -> SwapResult:
        return self.set(Parameter("policy_path", value=path), timeout_s=timeout_s)


def set_policy_path(
    node: Node, controller: str, path: str, timeout_s: float = DEFAULT_REPLY_TIMEOUT_S, wait: Waiter | None = None
) -> SwapResult:
    """Swap ``controller``'s policy to ``path``; ``wait`` defaults to spinning ``node`` here."""
    return PolicyClient(node, controller, wait).set_policy_path(path, timeout_s)
