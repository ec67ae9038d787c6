"""An onnxruntime session whose batch-1 inputs and outputs are bound once to fixed buffers.

``InferenceSession.run`` converts its feed dict and allocates every output on each call,
a large share of the time of a graph that computes in microseconds (docs/results.md,
measurement notes). Here the buffers are allocated and bound once (zero-copy, by pointer), so
a call is: copy the inputs in, run, copy the outputs out. Nothing in the control loop then
allocates a tensor per tick.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import onnxruntime as ort

_DTYPES = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(double)": np.float64}


def _concrete(shape: list[int | str | None], batch: int) -> tuple[int, ...]:
    """Graph shape with symbolic (batch) dimensions set to ``batch``."""
    return tuple(d if isinstance(d, int) else batch for d in shape)


class BoundSession:
    """Fixed-shape calls of ``session`` through an IOBinding; thread-safe, outputs are fresh copies."""

    def __init__(
        self,
        session: ort.InferenceSession,
        batch: int = 1,
        input_names: Sequence[str] | None = None,
        output_names: Sequence[str] | None = None,
    ) -> None:
        """Bind ``input_names``/``output_names`` (default: all, in graph order) for ``batch`` rows."""
        self.session = session
        self._binding = session.io_binding()
        self._lock = threading.Lock()
        ins = {a.name: a for a in session.get_inputs()}
        outs = {a.name: a for a in session.get_outputs()}
        self.inputs = [self._bind(ins[n], batch, self._binding.bind_input) for n in input_names or ins]
        self.outputs = [self._bind(outs[n], batch, self._binding.bind_output) for n in output_names or outs]

    @staticmethod
    def _bind(arg: ort.NodeArg, batch: int, bind: object) -> np.ndarray:
        if arg.type not in _DTYPES:
            raise TypeError(f"{arg.name}: cannot bind a {arg.type} tensor")
        buf = np.zeros(_concrete(arg.shape, batch), _DTYPES[arg.type])
        bind(arg.name, "cpu", 0, buf.dtype, list(buf.shape), buf.ctypes.data)
        return buf

    def accepts(self, *arrays: np.ndarray) -> bool:
        """Whether ``arrays`` have exactly the bound input shapes."""
        return len(arrays) == len(self.inputs) and all(
            a.shape == b.shape for a, b in zip(arrays, self.inputs, strict=True)
        )

    def __call__(self, *arrays: np.ndarray) -> list[np.ndarray]:
        """Run on ``arrays`` (the bound shapes, in input order); the outputs, in output order."""
        with self._lock:
            for buf, array in zip(self.inputs, arrays, strict=True):
                np.copyto(buf, array, casting="same_kind")
            self.session.run_with_iobinding(self._binding)
            return [out.copy() for out in self.outputs]
