"""Distillation checkpoints survive damage: two are kept, each verified on load, a bad one falls back to the older."""

from __future__ import annotations

import hashlib
import itertools
import json
import pathlib
from collections.abc import Callable

import pytest
import torch
from safetensors.torch import load, save
from test_distill_run import _cfg, inputs  # noqa: F401  (inputs is a pytest fixture)
from test_vdd import ConstantScoreTeacher, _trainer

import vdd_ros.util.checkpoint as store_module
from vdd_ros.distill.vdd import VDDTrainer
from vdd_ros.pipeline.distill_job import DistillError, run_distillation
from vdd_ros.util.checkpoint import CheckpointError, NonFiniteError
from vdd_ros.util.progress import Notice, Resumed

ITERATIONS = 10
NEWEST, OLDER = "00000006", "00000004"


def _new() -> VDDTrainer:
    return _trainer(ConstantScoreTeacher((0.1, 0.2)), iterations=ITERATIONS)


def _three_saves(folder: pathlib.Path) -> None:
    """Checkpoints at iterations 2, 4 and 6 of a 10-iteration run, as a run killed after 6 leaves them."""
    _new().run(checkpoint_dir=folder, checkpoint_every=2, until=6)


def _state(folder: pathlib.Path, name: str = "state.json") -> dict:
    return json.loads((folder / name).read_text())


def _rewrite_model(folder: pathlib.Path, edit: Callable[[dict[str, torch.Tensor]], None]) -> None:
    """Replace the newest model file by an edited one *and* record its checksum: the damage is in what was saved."""
    path = folder / f"model-{NEWEST}.safetensors"
    tensors = load(path.read_bytes())
    edit(tensors)
    data = save(tensors)
    path.write_bytes(data)
    state = _state(folder)
    state["sha256"][path.name] = hashlib.sha256(data).hexdigest()
    (folder / "state.json").write_text(json.dumps(state))


def _garbage_state(folder: pathlib.Path) -> str:
    (folder / "state.json").write_text('{"iteration": 6, "model": ')
    return "state.json: not valid JSON"


def _flip_weight_bytes(folder: pathlib.Path) -> str:
    """Finite garbage of the right size: low mantissa bits flipped inside the data region, so safetensors parses."""
    path = folder / f"model-{NEWEST}.safetensors"
    data = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(data[:8], "little")
    for offset in range(start, len(data), 64):
        data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    return f"model-{NEWEST}.safetensors: sha256 mismatch"


def _truncate_weights(folder: pathlib.Path) -> str:
    path = folder / f"model-{NEWEST}.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    return f"model-{NEWEST}.safetensors: sha256 mismatch"


def _delete_optimizer_file(folder: pathlib.Path) -> str:
    (folder / f"optim-{NEWEST}.safetensors").unlink()
    return f"optim-{NEWEST}.safetensors: missing"


def _nan_weights_with_valid_checksum(folder: pathlib.Path) -> str:
    _rewrite_model(folder, lambda t: next(iter(t.values())).fill_(float("nan")))
    return f"model-{NEWEST}.safetensors: non-finite values"


def _foreign_model_with_valid_checksum(folder: pathlib.Path) -> str:
    _rewrite_model(folder, lambda t: t.pop(sorted(t)[0]))
    return f"model-{NEWEST}.safetensors: does not fit this model (missing"


@pytest.mark.parametrize(
    "damage",
    [
        _garbage_state,
        _flip_weight_bytes,
        _truncate_weights,
        _delete_optimizer_file,
        _nan_weights_with_valid_checksum,
        _foreign_model_with_valid_checksum,
    ],
)
def test_damaged_newest_checkpoint_falls_back_to_the_previous(tmp_path, damage):
    _three_saves(tmp_path)
    expected = damage(tmp_path)
    resumed = _new()
    assert resumed.load_checkpoint(tmp_path)
    assert resumed.iteration == 4
    assert len(resumed.skipped_checkpoints) == 1 and expected in resumed.skipped_checkpoints[0]
    assert all(torch.isfinite(p).all() for p in resumed.moe.parameters())


def test_two_checkpoints_kept_after_three_saves(tmp_path):
    _three_saves(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"model-{OLDER}.safetensors",
        f"model-{NEWEST}.safetensors",
        f"optim-{OLDER}.safetensors",
        f"optim-{NEWEST}.safetensors",
        "state.json",
        "state.prev.json",
    ]
    newest, older = _state(tmp_path), _state(tmp_path, "state.prev.json")
    assert (newest["iteration"], older["iteration"]) == (6, 4)
    for name, digest in newest["sha256"].items():
        assert hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() == digest


def test_resume_from_fallback_matches_an_uninterrupted_run(tmp_path):
    straight = _new()
    straight.run()
    _three_saves(tmp_path)
    _flip_weight_bytes(tmp_path)
    resumed = _new()
    assert resumed.load_checkpoint(tmp_path) and resumed.iteration == 4
    assert resumed.run(checkpoint_dir=tmp_path, checkpoint_every=2)
    assert resumed.iteration == ITERATIONS
    for a, b in zip(straight.moe.state_dict().values(), resumed.moe.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    again = _new()
    assert again.load_checkpoint(tmp_path) and again.iteration == ITERATIONS and not again.skipped_checkpoints
    assert _state(tmp_path, "state.prev.json")["iteration"] == 8


def test_all_checkpoints_unusable_is_an_error_naming_the_files(tmp_path):
    _three_saves(tmp_path)
    _garbage_state(tmp_path)
    (tmp_path / f"model-{OLDER}.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError) as err:
        _new().load_checkpoint(tmp_path)
    message = str(err.value)
    assert f"no usable checkpoint in {tmp_path}" in message
    assert "state.json: not valid JSON" in message and f"model-{OLDER}.safetensors: sha256 mismatch" in message
    assert f"delete {tmp_path}" in message


def test_no_checkpoint_is_a_fresh_start(tmp_path):
    trainer = _new()
    assert not trainer.load_checkpoint(tmp_path / "absent")
    assert not trainer.load_checkpoint(tmp_path) and trainer.iteration == 0


@pytest.mark.parametrize("interrupted", ["model-", "optim-", "state.prev.json", "state.json"])
def test_kill_during_save_leaves_the_last_commit_loadable(tmp_path, monkeypatch, interrupted):
    trainer = _new()
    trainer.run(checkpoint_dir=tmp_path, checkpoint_every=2, until=6)
    write = store_module.atomic_write

    def killed_at(path: pathlib.Path, data: bytes) -> None:
        if path.name.startswith(interrupted):
            raise KeyboardInterrupt
        write(path, data)

    monkeypatch.setattr(store_module, "atomic_write", killed_at)
    with pytest.raises(KeyboardInterrupt):
        trainer.run(checkpoint_dir=tmp_path, checkpoint_every=2, until=8)
    resumed = _new()
    assert resumed.load_checkpoint(tmp_path) and resumed.iteration == 6 and not resumed.skipped_checkpoints


def test_non_finite_weights_are_never_saved(tmp_path):
    trainer = _new()
    trainer.run(checkpoint_dir=tmp_path, checkpoint_every=2, until=2)
    with torch.no_grad():
        next(trainer.moe.parameters()).fill_(float("nan"))
    with pytest.raises(NonFiniteError, match="checkpoint not written"):
        trainer.save_checkpoint(tmp_path)
    assert _state(tmp_path)["iteration"] == 2


def test_single_checkpoint_layout_without_checksums_still_resumes(tmp_path):
    _three_saves(tmp_path)
    state = _state(tmp_path)
    del state["sha256"]
    (tmp_path / "state.json").write_text(json.dumps(state))
    for old in ("state.prev.json", f"model-{OLDER}.safetensors", f"optim-{OLDER}.safetensors"):
        (tmp_path / old).unlink()
    resumed = _new()
    assert resumed.load_checkpoint(tmp_path) and resumed.iteration == 6


def test_distillation_never_finishes_on_a_damaged_checkpoint(inputs):  # noqa: F811
    cfg = _cfg(inputs, name="damaged", checkpoint_every=1, **{"eval.every": 0, "eval.final_episodes": 0})
    checks = itertools.count()
    stopped = run_distillation(cfg, should_stop=lambda: next(checks) >= 3)  # polled once per iteration
    assert stopped["status"] == "stopped" and stopped["iteration"] == 3
    folder = inputs / "damaged" / "checkpoint"
    path = folder / "model-00000003.safetensors"
    data = bytearray(path.read_bytes())
    data[-4] ^= 0x01
    path.write_bytes(bytes(data))
    events: list = []
    done = run_distillation(cfg, on_progress=events.append)
    warnings = [e.message for e in events if isinstance(e, Notice)]
    assert len(warnings) == 1 and f"{path}: sha256 mismatch" in warnings[0]
    assert Resumed(2) in events
    assert done["status"] == "done" and done["iteration"] == cfg.train.iterations


def test_distillation_refuses_a_folder_of_unusable_checkpoints(inputs):  # noqa: F811
    cfg = _cfg(inputs, name="unusable", checkpoint_every=1, **{"eval.every": 0, "eval.final_episodes": 0})
    checks = itertools.count()
    run_distillation(cfg, should_stop=lambda: next(checks) >= 3)
    folder = inputs / "unusable" / "checkpoint"
    for name in ("state.json", "state.prev.json"):
        (folder / name).write_text("")
    with pytest.raises(DistillError, match=r"no usable checkpoint.*state\.prev\.json.*delete"):
        run_distillation(cfg)


def test_a_state_that_lost_its_checksums_is_not_taken_for_the_old_layout(tmp_path: pathlib.Path) -> None:
    trainer = _trainer(ConstantScoreTeacher((0.1, 0.2)))
    for until in (2, 4):
        trainer.run(checkpoint_dir=tmp_path, until=until)
    state = json.loads((tmp_path / "state.json").read_text())
    del state["sha256"]
    (tmp_path / "state.json").write_text(json.dumps(state))
    resumed = _trainer(ConstantScoreTeacher((0.1, 0.2)))
    assert resumed.load_checkpoint(tmp_path)
    assert resumed.iteration == 2 and "no checksum" in resumed.skipped_checkpoints[0]
