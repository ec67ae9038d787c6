"""Contract parsing is total: untrusted metadata yields a usable contract or a ContractError, nothing else."""

from __future__ import annotations

import copy
import json
import math
import pathlib
from typing import Any

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vdd_ros.export.contract import (
    MAX_EXPERTS,
    MAX_FEATURE_DIM,
    MAX_HORIZON,
    METADATA_KEY,
    ContractError,
    PolicyContract,
)
from vdd_ros.export.random_policy import export_random_policy
from vdd_ros.runtime.onnx_policy import load_policy

SHIPPED = pathlib.Path(__file__).resolve().parents[1] / "policies" / "avoiding_vdd.onnx"
DIMS = {"obs_dim": MAX_FEATURE_DIM, "act_dim": MAX_FEATURE_DIM, "obs_window": MAX_HORIZON}
DIMS |= {"act_chunk": MAX_HORIZON, "num_experts": MAX_EXPERTS}


def _metadata(path: pathlib.Path) -> str:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}[METADATA_KEY]


SHIPPED_TEXT = _metadata(SHIPPED)
BASE: dict[str, Any] = json.loads(SHIPPED_TEXT)


def _assert_usable(c: PolicyContract) -> None:
    """What the runtime and controller do with a loaded contract must not raise."""
    for field, upper in DIMS.items():
        value = getattr(c, field)
        assert type(value) is int and 1 <= value <= upper
    assert type(c.control_period_s) is float and math.isfinite(1.0 / c.control_period_s)
    for names, dim in ((c.obs_names, c.obs_dim), (c.act_names, c.act_dim)):
        assert isinstance(names, tuple) and len(names) == dim == len(set(names))
        assert all(isinstance(n, str) and n for n in names)
    for norm, dim in ((c.obs_normalizer, c.obs_dim), (c.act_normalizer, c.act_dim)):
        mean, std = (np.asarray(norm[k], dtype=np.float32) for k in ("mean", "std"))
        assert mean.shape == std.shape == (dim,) and np.all(np.isfinite(mean)) and np.all(std > 0)
    obs_mean = np.asarray(c.obs_normalizer.get("mean", [0.0] * c.obs_dim), dtype=np.float32)
    np.broadcast_to(obs_mean, (1, c.obs_window, c.obs_dim))
    assert all(isinstance(getattr(c, f), str) for f in ("policy_id", "task", "frame_id", "covariance", "created_utc"))
    assert isinstance(c.training, dict)
    assert PolicyContract.from_json(c.to_json()) == c
    assert c.incompatibilities(c) == []


def _parse_or_reject(text: Any) -> None:
    try:
        contract = PolicyContract.from_json(text)
    except ContractError:
        return
    _assert_usable(contract)


EDGE_VALUES = st.sampled_from(
    [
        *(0, -1, 1, 2, 4097, 2**63, 10**400, -(10**400), 0.0, -0.0, 1e-320, 1e-5, 0.035, 11.0, 3.5e38, 1e308),
        *(math.nan, math.inf, -math.inf, True, False, None, "", "0.035", "4", "x" * 300, [], {}, [[[]]]),
    ]
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12) | EDGE_VALUES,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=16,
)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every location in a JSON value, the root included."""
    found = [prefix]
    children = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for key, child in children:
        found += _paths(child, (*prefix, key))
    return found


def _resized(value: Any, draw: st.DrawFn) -> Any:
    """A list one shorter, longer (a duplicate or junk element) or emptied; other values unchanged."""
    if not isinstance(value, list):
        return value
    op = draw(st.sampled_from(["shorter", "duplicate", "junk", "empty"]))
    if op == "shorter" or (op == "duplicate" and not value):
        return value[:-1]
    if op == "duplicate":
        return [*value, value[0]]
    return [*value, draw(JSON_VALUES)] if op == "junk" else []


@st.composite
def mutated(draw: st.DrawFn) -> Any:
    """The shipped contract with 1-3 mutations (drop, add, replace, resize), then serialised or garbled."""
    data = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(data)))
        if not path:
            data = draw(JSON_VALUES)
            continue
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        op = draw(st.sampled_from(["drop", "add", "replace", "resize"]))
        if op == "drop":
            del parent[key]
        elif op == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=10))] = draw(JSON_VALUES)
        elif op == "resize":
            parent[key] = _resized(parent[key], draw)
        else:
            parent[key] = draw(JSON_VALUES)
    text = json.dumps(data)  # allow_nan: NaN/Infinity literals reach the parser too
    form = draw(st.sampled_from(["json", "json", "json", "truncated", "nested", "bytes"]))
    if form == "truncated":
        return text[: draw(st.integers(0, max(0, len(text) - 1)))]
    if form == "nested":
        depth = draw(st.integers(1, 5000))
        return "[" * depth + text + "]" * depth
    return text.encode() if form == "bytes" else text


@settings(max_examples=300, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(mutated())
def test_mutated_contract_parses_or_raises_contract_error(text):
    _parse_or_reject(text)


@settings(max_examples=100, deadline=None, derandomize=True, database=None)
@given(JSON_VALUES)
def test_arbitrary_json_parses_or_raises_contract_error(value):
    _parse_or_reject(json.dumps(value))


def _with(**changes: Any) -> str:
    data = copy.deepcopy(BASE)
    data.update(changes)
    return json.dumps(data)


def test_obs_names_as_integer_is_rejected():
    with pytest.raises(ContractError, match="obs_names"):
        PolicyContract.from_json(_with(obs_names=4))


def test_normalizer_mean_of_wrong_length_is_rejected():
    bad = {**BASE["obs_normalizer"], "mean": BASE["obs_normalizer"]["mean"][:-1]}
    with pytest.raises(ContractError, match=r"obs_normalizer\.mean"):
        PolicyContract.from_json(_with(obs_normalizer=bad))


def test_control_period_as_string_is_rejected():
    with pytest.raises(ContractError, match="control_period_s"):
        PolicyContract.from_json(_with(control_period_s="0.035"))


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"obs_dim": True}, "obs_dim"),
        ({"num_experts": 0}, "num_experts"),
        ({"act_chunk": 10**9}, "act_chunk"),
        ({"obs_window": 5.0}, "obs_window"),
        ({"control_period_s": -0.035}, "control_period_s"),
        ({"control_period_s": 1e6}, "control_period_s"),
        ({"control_period_s": 10**400}, "control_period_s"),
        ({"act_names": ["delta_x", "delta_x"]}, "act_names"),
        ({"act_names": ["delta_x", 7]}, r"act_names\[1\]"),
        ({"act_normalizer": {"mean": [0.0, 0.0], "std": [1.0, 0.0]}}, r"act_normalizer\.std"),
        ({"act_normalizer": {"mean": [0.0, 1e39], "std": [1.0, 1.0]}}, r"act_normalizer\.mean\[1\]"),
        ({"act_normalizer": {"mean": [0.0, 0.0], "std": [1.0, 1e-50]}}, r"act_normalizer\.std"),
        ({"act_normalizer": {"mean": [0.0, 0.0]}}, "act_normalizer"),
        ({"covariance": "spherical"}, "covariance"),
        ({"teacher_sha256": "abc"}, "teacher_sha256"),
        ({"training": [1, 2]}, "training"),
        ({"training": {"a": json.loads("[" * 100 + "]" * 100)}}, "training"),
        ({"policy_id": ""}, "policy_id"),
        ({"schema_version": True}, "schema_version"),
        ({"obs_dimension": 4}, "obs_dimension"),
    ],
)
def test_malformed_field_is_named(changes, field):
    with pytest.raises(ContractError, match=field):
        PolicyContract.from_json(_with(**changes))


def test_missing_normalizer_is_rejected():
    data = {k: v for k, v in BASE.items() if k != "act_normalizer"}
    with pytest.raises(ContractError, match="act_normalizer"):
        PolicyContract.from_json(json.dumps(data))


HOSTILE: dict[str, Any] = {
    "deep": "[" * 10_000 + "]" * 10_000,
    "deep-training": '{"training": ' + "[" * 10_000 + "]" * 10_000 + "}",
    "nan": _with(control_period_s=float("nan")),
    "overflow": _with(control_period_s=1).replace('"control_period_s": 1', '"control_period_s": 1e999'),
    "duplicate-key": _with(task="x").replace('"task": "x"', '"task": "x", "task": "y"'),
    "huge-int": '{"n": ' + "9" * 5000 + "}",
    "10MB": '{"task": "' + "x" * 10_000_000 + '"}',
    "empty": "",
    "null": "null",
    "int": 42,
    "none": None,
}


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_documents_are_rejected(text):
    with pytest.raises(ContractError):
        PolicyContract.from_json(text)


def test_unknown_field_is_rejected_not_ignored():
    with pytest.raises(ContractError, match="unknown field"):
        PolicyContract.from_json(_with(future_feature={"x": 1}))


def test_shipped_policy_contract_parses():
    contract = PolicyContract.from_json(SHIPPED_TEXT)
    assert (contract.obs_dim, contract.act_dim, contract.obs_window, contract.num_experts) == (4, 2, 5, 8)
    _assert_usable(contract)


def test_shipped_policy_records_no_machine_paths():
    """Provenance names files relative to the package, never a developer's machine (it ships to robots)."""
    strings: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str):
            strings.append(value)

    walk(json.loads(SHIPPED_TEXT))
    assert strings, "the contract holds no strings at all?"
    assert not [s for s in strings if s.startswith(("/", "~")) or "/tmp" in s or "/home" in s]


def test_ints_for_floats_are_accepted():
    norm = {"mean": [0, 1], "std": [1, 2]}
    contract = PolicyContract.from_json(_with(control_period_s=1, act_normalizer=norm))
    assert contract.control_period_s == 1.0 and contract.act_normalizer == {"mean": [0.0, 1.0], "std": [1.0, 2.0]}
    _assert_usable(contract)


@pytest.mark.parametrize("changes", [{"obs_names": 4}, {"control_period_s": "0.035"}])
def test_load_policy_refuses_crafted_contract(tmp_path, changes):
    """The reported crash, end to end: the runtime's single gate raises ContractError."""
    path = tmp_path / "p.onnx"
    export_random_policy(path)
    model = onnx.load(str(path))
    data = json.loads(_metadata(path)) | changes
    onnx.helper.set_model_props(model, {METADATA_KEY: json.dumps(data)})
    onnx.save(model, str(path))
    with pytest.raises(ContractError):
        load_policy(str(path))
