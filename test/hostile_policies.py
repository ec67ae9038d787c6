"""Policy files an attacker or a broken exporter could hand the controller, built from real exports.

Each starts from ``export_random_policy`` (the real export path and contract) and edits
the ONNX graph or its metadata, so the controller sees files that pass every check but
the one under test.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import onnx
from onnx import helper, numpy_helper

from vdd_ros.export.contract import METADATA_KEY
from vdd_ros.export.random_policy import export_random_policy


def _reroute(model: onnx.ModelProto, output: str) -> str:
    """Rename the tensor ``output`` to a fresh internal name, for its producer and the graph's own readers
    (the graph keeps computing as before); the caller re-produces ``output`` for the graph output only."""
    inner = f"{output}_inner"
    for node in model.graph.node:
        node.output[:] = [inner if o == output else o for o in node.output]
        node.input[:] = [inner if i == output else i for i in node.input]
    return inner


def _save(model: onnx.ModelProto, path: pathlib.Path) -> str:
    onnx.save(model, str(path))
    return str(path)


def expert_out_of_range_beyond(path: pathlib.Path, threshold: float, index: int = 100, **kw) -> str:
    """Returns expert ``index`` once any observation exceeds ``threshold``; valid below it.

    With the identity normaliser (std 1), a threshold above 3 is never reached by
    vetting's probes (mean +/- 3 std), only by real inputs.
    """
    export_random_policy(path, **kw)
    model = onnx.load(str(path))
    inner = _reroute(model, "expert")
    g = model.graph
    g.initializer.extend(
        [
            numpy_helper.from_array(np.array(threshold, np.float32), "hostile_threshold"),
            numpy_helper.from_array(np.array(index, np.int64), "hostile_index"),
        ]
    )
    g.node.extend(
        [
            helper.make_node("ReduceMax", ["obs"], ["hostile_max"], keepdims=0),
            helper.make_node("Greater", ["hostile_max", "hostile_threshold"], ["hostile_cond"]),
            helper.make_node("Where", ["hostile_cond", "hostile_index", inner], ["expert"]),
        ]
    )
    return _save(model, path)


def slow_policy(path: pathlib.Path, width: int = 400, **kw) -> str:
    """A valid policy that spends a (width x width) matrix product per inference, adding zero to the action."""
    export_random_policy(path, **kw)
    model = onnx.load(str(path))
    inner = _reroute(model, "action")
    g = model.graph
    g.initializer.extend(
        [
            numpy_helper.from_array(np.ones((width, width), np.float32), "slow_ones"),
            numpy_helper.from_array(np.zeros((), np.float32), "slow_zero"),
        ]
    )
    g.node.extend(
        [
            helper.make_node("ReduceSum", ["obs"], ["slow_s"], keepdims=0),
            helper.make_node("Mul", ["slow_ones", "slow_s"], ["slow_a"]),  # depends on the input: not folded
            helper.make_node("MatMul", ["slow_a", "slow_ones"], ["slow_b"]),
            helper.make_node("MatMul", ["slow_b", "slow_ones"], ["slow_c"]),
            helper.make_node("ReduceSum", ["slow_c"], ["slow_sum"], keepdims=0),
            helper.make_node("Mul", ["slow_sum", "slow_zero"], ["slow_nothing"]),
            helper.make_node("Add", [inner, "slow_nothing"], ["action"]),
        ]
    )
    return _save(model, path)


def with_contract(path: pathlib.Path, edit, **kw) -> str:
    """A real export whose contract JSON is passed through ``edit(dict) -> object`` (anything JSON)."""
    export_random_policy(path, **kw)
    model = onnx.load(str(path))
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            prop.value = json.dumps(edit(json.loads(prop.value)))
    return _save(model, path)
