"""An onnxruntime session whose batch-1 inputs and outputs are bound once to fixed buffers.

``InferenceSession.run`` converts its feed dict and allocates every output on each call,
a large share of the time of a graph that computes in microseconds (docs/results.md,
measurement notes). Here the buffers are allocated and bound once (zero-copy, by pointer), so
a call is: copy the inputs in, run, copy the outputs out. Nothing in the control loop then
allocates a tensor per tick.

On a GPU provider the buffers are OrtValues in device memory (``device``): a call copies the
inputs host-to-device into them and the outputs back, and the graph never sees host memory,
which is also what onnxruntime's CUDA graph replay needs (fixed device addresses).
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
        device: tuple[str, int] | None = None,
    ) -> None:
        """Bind ``input_names``/``output_names`` (default: all, in graph order) for ``batch`` rows.

        ``device``: (onnxruntime device name, id) for buffers in device memory, e.g. ("cuda", 0);
        None = host buffers bound by pointer (the CPU provider).
        """
        self.session = session
        self._binding = session.io_binding()
        self._lock = threading.Lock()
        ins = {a.name: a for a in session.get_inputs()}
        outs = {a.name: a for a in session.get_outputs()}
        in_args = [ins[n] for n in input_names or ins]
        out_args = [outs[n] for n in output_names or outs]
        self.device = device
        if device is None:
            self.inputs = [self._bind(a, batch, self._binding.bind_input) for a in in_args]
            self.outputs = [self._bind(a, batch, self._binding.bind_output) for a in out_args]
        else:  # host staging buffers for the inputs (cast and made contiguous), device buffers bound
            self.inputs = [np.zeros(_concrete(a.shape, batch), _DTYPES[a.type]) for a in in_args]
            bind_in, bind_out = self._binding.bind_ortvalue_input, self._binding.bind_ortvalue_output
            self._device_inputs = [self._bind_device(a, batch, device, bind_in) for a in in_args]
            self._device_outputs = [self._bind_device(a, batch, device, bind_out) for a in out_args]

    @staticmethod
    def _bind(arg: ort.NodeArg, batch: int, bind: object) -> np.ndarray:
        if arg.type not in _DTYPES:
            raise TypeError(f"{arg.name}: cannot bind a {arg.type} tensor")
        buf = np.zeros(_concrete(arg.shape, batch), _DTYPES[arg.type])
        bind(arg.name, "cpu", 0, buf.dtype, list(buf.shape), buf.ctypes.data)
        return buf

    @staticmethod
    def _bind_device(arg: ort.NodeArg, batch: int, device: tuple[str, int], bind: object) -> ort.OrtValue:
        if arg.type not in _DTYPES:
            raise TypeError(f"{arg.name}: cannot bind a {arg.type} tensor")
        value = ort.OrtValue.ortvalue_from_shape_and_type(_concrete(arg.shape, batch), _DTYPES[arg.type], *device)
        bind(arg.name, value)
        return value

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
            if self.device is not None:
                for value, buf in zip(self._device_inputs, self.inputs, strict=True):
                    value.update_inplace(buf)  # host -> device, into the bound (fixed) address
                self.session.run_with_iobinding(self._binding)
                # device -> host; copied again because numpy() of an OrtValue in host memory is a view
                return [value.numpy().copy() for value in self._device_outputs]
            self.session.run_with_iobinding(self._binding)
            return [out.copy() for out in self.outputs]
