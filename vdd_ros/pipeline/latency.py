"""Batch-1 latency of a diffusion teacher, in PyTorch and in onnxruntime, for the speed-up figures.

The onnxruntime figure unrolls the teacher's whole k-step sampler into one graph and calls it
through a ``BoundSession``, the call path the controller uses for a distilled MoE, so the
teacher-vs-student speed-up compares like with like.
"""

from __future__ import annotations

import pathlib
import tempfile
from collections.abc import Callable

import torch

from vdd_ros.runtime.bound_session import BoundSession
from vdd_ros.teacher.policy import TeacherPolicy


class _UnrolledSampler(torch.nn.Module):
    """The teacher's k-step sampler as one module, so it can be exported to a single graph."""

    def __init__(self, teacher: torch.nn.Module, steps: int) -> None:
        super().__init__()
        self.teacher, self.steps = teacher, steps

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.teacher.sample(obs, steps=self.steps)


def teacher_onnx_call(policy: TeacherPolicy, steps: int) -> Callable[[], object] | str:
    """One batch-1 action of the unrolled sampler in onnxruntime (1 thread) as a timed callable,
    or why it could not be exported."""
    import onnxruntime as ort

    from vdd_ros.runtime.onnx_policy import session_options

    obs = torch.zeros(1, policy.meta.obs_window, policy.meta.obs_dim)
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp, "teacher.onnx")
        try:
            torch.onnx.export(  # legacy tracer: the sampler loop has a fixed length
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
    return lambda: bound(feed)


def teacher_torch_call(policy: TeacherPolicy, steps: int) -> Callable[[], torch.Tensor]:
    """One batch-1 action of the teacher's sampler in PyTorch eager mode, as a timed callable."""
    obs = torch.zeros(1, policy.meta.obs_window, policy.meta.obs_dim)

    @torch.no_grad()
    def call() -> torch.Tensor:
        return policy.teacher.sample(obs, steps=steps)

    return call
