"""The versioned I/O contract stored in every exported policy (ONNX ``metadata_props``).

The controller checks a candidate file against the running one with this contract
before a hot swap, and a human can read it with any ONNX viewer.

Graph I/O (all float32 unless noted; B = batch):
  inputs   obs     (B, T, obs_dim)  raw observation window, oldest first
           gumbel  (B, Z)           Gumbel(0,1) noise selecting the expert; zeros = greedy
           eps     (B, H*act_dim)   N(0,1) noise for a full Gaussian sample; zeros = mean
  outputs  action  (B, H, act_dim)  raw units: a chunk of H actions, of which a runtime
                                    executes the first ``act_exec``, one per observation
           expert  (B,) int64       index of the chosen expert
           gating  (B, Z)           gating probabilities q(z|s)
Noise is a graph input, not an in-graph RNG: results are reproducible from the caller's
seed on any execution provider, parity with PyTorch is exact, and static inputs suit
IOBinding / CUDA graphs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import reprlib
from collections.abc import Callable
from typing import Any, NoReturn

import numpy as np

SCHEMA_VERSION = 2  # 2 added act_exec; a version 1 contract reads as act_exec 1
SUPPORTED_SCHEMA_VERSIONS = (1, 2)
_ADDED_IN = {"act_exec": 2}
METADATA_KEY = "vdd_ros.contract"
INPUT_NAMES = ("obs", "gumbel", "eps")
OUTPUT_NAMES = ("action", "expert", "gating")


class ContractError(ValueError):
    """A policy file is missing, malformed, or incompatible with what is running."""


# Bounds on what a contract may claim. Generous next to anything the project exports (Avoiding:
# obs_dim 4, act_dim 2, window 5, chunk 1, 8 experts, 35 ms), tight enough that a crafted file
# cannot make the runtime allocate absurd noise or observation buffers before the graph is checked.
MAX_CONTRACT_CHARS = 1 << 22  # the shipped contract is ~2 KB; 4096 names and two normalisers fit easily
MAX_FEATURE_DIM = 4096  # obs_dim, act_dim
MAX_HORIZON = 1024  # obs_window, act_chunk
MAX_EXPERTS = 1024  # num_experts
MIN_CONTROL_PERIOD_S = 1e-4  # 10 kHz: the controller's timer runs at 1 / control_period_s
MAX_CONTROL_PERIOD_S = 10.0
MAX_TEXT_CHARS = 256  # ids, names, frame, task, timestamp
MAX_TRAINING_DEPTH = 32  # nesting of the free-form ``training`` record
COVARIANCES = ("diagonal", "full")  # MoEConfig.covariance
NORMALIZER_KEYS = ("mean", "std")  # Normalizer.to_dict
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_SHA256_HEX = frozenset("0123456789abcdef")
_DIM_LIMITS = {
    "obs_dim": MAX_FEATURE_DIM,
    "act_dim": MAX_FEATURE_DIM,
    "obs_window": MAX_HORIZON,
    "act_chunk": MAX_HORIZON,
    "num_experts": MAX_EXPERTS,
}
_REQUIRED = (
    *_DIM_LIMITS,
    "policy_id",
    "control_period_s",
    "obs_names",
    "act_names",
    "obs_normalizer",
    "act_normalizer",
)


def _short_repr() -> Callable[[Any], str]:
    """repr for error messages that stays short for a crafted 4 MB string or list."""
    short = reprlib.Repr()
    short.maxstring = short.maxother = 40
    return short.repr


_describe = _short_repr()


def _json_constant(name: str) -> NoReturn:
    """Strict JSON: NaN and +-Infinity are not numbers other readers of the file accept."""
    raise ContractError(f"non-finite number {name}")


def _json_float(text: str) -> float:
    """Literals such as 1e999 overflow to inf in Python; refuse them like the constants."""
    value = float(text)
    if not math.isfinite(value):
        raise ContractError(f"number {text[:40]} overflows")
    return value


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Duplicate keys are ambiguous (readers keep different ones), so a contract has none."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ContractError("duplicate key in a JSON object")
    return obj


def _parse_object(text: Any) -> dict[str, Any]:
    """The contract's JSON object; any parser failure, including RecursionError on deep nesting, is a ContractError."""
    if not isinstance(text, str):
        raise ContractError(f"contract metadata is {type(text).__name__}, not text")
    if len(text) > MAX_CONTRACT_CHARS:
        raise ContractError(f"contract metadata is {len(text)} characters, more than {MAX_CONTRACT_CHARS}")
    try:
        data = json.loads(text, parse_constant=_json_constant, parse_float=_json_float, object_pairs_hook=_json_object)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, int digit limit, hooks, nesting
        raise ContractError(f"contract metadata is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ContractError("contract metadata is not a JSON object")
    return data


def _schema_version(data: dict[str, Any]) -> int:
    version = data.get("schema_version")
    if type(version) is not int or version not in SUPPORTED_SCHEMA_VERSIONS:  # bool and 1.0 compare equal to 1
        raise ContractError(
            f"contract schema_version {_describe(version)} is not supported (expected one of "
            f"{list(SUPPORTED_SCHEMA_VERSIONS)})"
        )
    return version


def _check_keys(data: dict[str, Any], version: int) -> None:
    known = {f.name for f in dataclasses.fields(PolicyContract) if _ADDED_IN.get(f.name, 1) <= version}
    unknown = sorted(k for k in data if k not in known)
    if unknown:
        raise ContractError(f"contract has unknown field(s) {_describe(unknown)}")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise ContractError(f"contract lacks field(s) {missing}")


def _bounded_int(field: str, value: Any, upper: int) -> int:
    if type(value) is not int:  # bool is an int subclass but not a size
        raise ContractError(f"contract {field} must be an integer, got {_describe(value)}")
    if not 1 <= value <= upper:
        raise ContractError(f"contract {field} {value} is outside [1, {upper}]")
    return value


def _number(field: str, value: Any) -> float:
    """A JSON number as float (ints welcome); bool and out-of-float32 values are not numbers here."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ContractError(f"contract {field} must be a number, got {_describe(value)}")
    if not abs(value) <= _FLOAT32_MAX:  # int comparison is exact: no OverflowError in float()
        raise ContractError(f"contract {field} {_describe(value)} is not a finite float32")
    return float(value)


def _control_period(field: str, value: Any) -> float:
    period = _number(field, value)
    if not MIN_CONTROL_PERIOD_S <= period <= MAX_CONTROL_PERIOD_S:
        raise ContractError(f"contract {field} {period} s is outside [{MIN_CONTROL_PERIOD_S}, {MAX_CONTROL_PERIOD_S}]")
    return period


def _text(field: str, value: Any, required: bool = False) -> str:
    if not isinstance(value, str):
        raise ContractError(f"contract {field} must be a string, got {_describe(value)}")
    lower = 1 if required else 0
    if not lower <= len(value) <= MAX_TEXT_CHARS:
        raise ContractError(f"contract {field} must have {lower} to {MAX_TEXT_CHARS} characters, got {len(value)}")
    return value


def _list(field: str, value: Any, length: int) -> list[Any]:
    if not isinstance(value, list):
        raise ContractError(f"contract {field} must be a list, got {_describe(value)}")
    if len(value) != length:
        raise ContractError(f"contract {field} has {len(value)} entries, the contract's dimension is {length}")
    return value


def _names(field: str, value: Any, dim: int) -> tuple[str, ...]:
    names = tuple(_text(f"{field}[{i}]", v, required=True) for i, v in enumerate(_list(field, value, dim)))
    if len(set(names)) != len(names):
        raise ContractError(f"contract {field} has duplicate names")
    return names


def _normalizer(field: str, value: Any, dim: int) -> dict[str, list[float]]:
    """What Normalizer.from_dict accepts, checked in float32 as the runtime and graph use it."""
    if not isinstance(value, dict) or sorted(value) != sorted(NORMALIZER_KEYS):
        raise ContractError(f"contract {field} must be an object with exactly the keys {NORMALIZER_KEYS}")
    mean, std = (
        [_number(f"{field}.{key}[{i}]", v) for i, v in enumerate(_list(f"{field}.{key}", value[key], dim))]
        for key in NORMALIZER_KEYS
    )
    if not np.all(np.asarray(std, dtype=np.float32) > 0):  # a tiny std underflows to 0 in float32
        raise ContractError(f"contract {field}.std must be positive in float32")
    return {"mean": mean, "std": std}


def _covariance(field: str, value: Any) -> str:
    if value not in COVARIANCES:
        raise ContractError(f"contract {field} {_describe(value)} is not one of {COVARIANCES}")
    return value


def _sha256(field: str, value: Any) -> str:
    """Empty (unknown) or a lowercase hex digest, as hashlib writes it."""
    text = _text(field, value)
    if text and (len(text) != 64 or not set(text) <= _SHA256_HEX):
        raise ContractError(f"contract {field} {_describe(text)} is neither empty nor a sha256 hex digest")
    return text


def _training(field: str, value: Any) -> dict[str, Any]:
    """Free-form, but an object of bounded depth so asdict/to_json cannot hit the recursion limit."""
    if not isinstance(value, dict):
        raise ContractError(f"contract {field} must be an object, got {_describe(value)}")
    level, depth = [value], 1
    while level:
        if depth > MAX_TRAINING_DEPTH:
            raise ContractError(f"contract {field} nests deeper than {MAX_TRAINING_DEPTH}")
        level = [c for v in level for c in (v.values() if isinstance(v, dict) else v) if isinstance(c, dict | list)]
        depth += 1
    return value


_OPTIONAL: dict[str, Callable[[str, Any], Any]] = {
    "task": _text,
    "frame_id": _text,
    "covariance": _covariance,
    "teacher_sha256": _sha256,
    "dataset_sha256": _sha256,
    "training": _training,
    "created_utc": _text,
}


@dataclasses.dataclass(frozen=True)
class PolicyContract:
    """Everything a runtime must know to feed and trust a policy graph."""

    policy_id: str
    obs_dim: int
    act_dim: int
    obs_window: int
    act_chunk: int
    num_experts: int
    control_period_s: float
    obs_names: tuple[str, ...]
    act_names: tuple[str, ...]
    obs_normalizer: dict[str, list[float]]
    act_normalizer: dict[str, list[float]]
    task: str = ""
    frame_id: str = "world"
    covariance: str = "diagonal"
    teacher_sha256: str = ""
    dataset_sha256: str = ""
    training: dict[str, Any] = dataclasses.field(default_factory=dict)
    created_utc: str = ""
    act_exec: int = 1  # actions of each chunk executed before the next inference, 1..act_chunk
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if not 1 <= self.act_exec <= self.act_chunk:
            raise ContractError(f"contract act_exec {self.act_exec} must be in [1, act_chunk {self.act_chunk}]")

    def to_json(self) -> str:
        fields = dataclasses.asdict(self)  # only the fields this schema version has
        known = {k: v for k, v in fields.items() if _ADDED_IN.get(k, 1) <= self.schema_version}
        return json.dumps(known, sort_keys=True)

    @staticmethod
    def from_json(text: str) -> PolicyContract:
        """Parse and validate untrusted metadata; anything malformed raises ContractError, nothing else.

        A contract that parses is safe for the runtime to use as is: sizes are bounded
        positive ints, names match their dimensions, normalisers match what Normalizer
        holds (finite float32 mean, std > 0), and the period is a sane finite duration.
        Unknown fields are rejected, not ignored: a field this runtime does not know may
        change how the graph must be fed, schema_version is how the format grows (a new
        field comes with a new version), free additions belong in ``training``, and a
        misspelt optional field must not silently fall back to its default.
        """
        data = _parse_object(text)
        version = _schema_version(data)
        _check_keys(data, version)
        dims = {k: _bounded_int(k, data[k], upper) for k, upper in _DIM_LIMITS.items()}
        if "act_exec" in data:
            dims["act_exec"] = _bounded_int("act_exec", data["act_exec"], dims["act_chunk"])
        optional = {k: check(k, data[k]) for k, check in _OPTIONAL.items() if k in data}
        return PolicyContract(
            **dims,
            **optional,
            policy_id=_text("policy_id", data["policy_id"], required=True),
            control_period_s=_control_period("control_period_s", data["control_period_s"]),
            obs_names=_names("obs_names", data["obs_names"], dims["obs_dim"]),
            act_names=_names("act_names", data["act_names"], dims["act_dim"]),
            obs_normalizer=_normalizer("obs_normalizer", data["obs_normalizer"], dims["obs_dim"]),
            act_normalizer=_normalizer("act_normalizer", data["act_normalizer"], dims["act_dim"]),
            schema_version=version,
        )

    def incompatibilities(self, other: PolicyContract) -> list[str]:
        """Reasons ``other`` cannot replace ``self`` on a running robot (empty if it can)."""
        reasons = []
        for field in ("obs_dim", "act_dim", "obs_names", "act_names", "act_chunk", "frame_id"):
            a, b = getattr(self, field), getattr(other, field)
            if a != b:
                reasons.append(f"{field} differs: running {a!r}, candidate {b!r}")
        if abs(self.control_period_s - other.control_period_s) > 1e-9:
            reasons.append(
                f"control_period_s differs: running {self.control_period_s}, candidate {other.control_period_s}"
            )
        return reasons
