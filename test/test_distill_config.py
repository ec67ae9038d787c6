"""One distillation configuration: code defaults == shipped YAML == docs == the node's parameters.

Regenerate the docs table after changing a setting: ``UPDATE_DOCS=1 pytest test/test_distill_config.py``.
"""

from __future__ import annotations

import os
import pathlib
import re

import pytest

from vdd_ros.pipeline.distill_config import DistillJobConfig, check_config
from vdd_ros.pipeline.distill_job import run_distillation
from vdd_ros.util.config import ConfigError, flatten, load_config, markdown_table, read_yaml, settings

YAML = pathlib.Path("config/distill_avoiding.yaml")
DOC = pathlib.Path("docs/distill.md")
BEGIN, END = "<!-- distill-settings:begin -->", "<!-- distill-settings:end -->"


def _flat_keys(mapping: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in mapping.items():
        keys |= _flat_keys(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key}
    return keys


def test_code_defaults_are_the_shipped_configuration():
    assert load_config(DistillJobConfig) == load_config(DistillJobConfig, YAML)


def test_every_yaml_key_is_a_declared_setting_and_every_setting_is_in_the_yaml():
    declared = {s.name for s in settings(DistillJobConfig)}
    assert _flat_keys(read_yaml(YAML)) == declared


def test_documented_defaults_of_the_shipped_policy():
    """The values the issue names: uniform gating, 6000 iterations, teacher's jitter and range, 1000/240 evals."""
    flat = flatten(DistillJobConfig())
    assert flat["moe.gating"] == "uniform" and flat["train.iterations"] == 6000
    assert flat["train.obs_noise"] < 0 and flat["vdd.noise_low"] < 0 and flat["vdd.noise_high"] < 0
    assert (flat["eval.every"], flat["eval.episodes"], flat["eval.final_episodes"]) == (1000, 240, 480)


def _rendered(text: str) -> str:
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    return f"{head}{BEGIN}\n{markdown_table(DistillJobConfig)}\n{END}{tail}"


def test_docs_table_is_generated_from_the_code():
    text = DOC.read_text()
    if os.environ.get("UPDATE_DOCS"):
        DOC.write_text(_rendered(text))
        text = DOC.read_text()
    assert text == _rendered(text), "docs/distill.md is stale: UPDATE_DOCS=1 pytest test/test_distill_config.py"
    assert not re.search(r"\| `(iterations|eval_every|num_experts)` \|", text)  # no flat pre-nesting names left


def test_overrides_are_dotted_and_typos_are_refused():
    cfg = load_config(DistillJobConfig, YAML, ["train.iterations=3000", "moe.num_experts=4", "eval.every=500"])
    assert (cfg.train.iterations, cfg.moe.num_experts, cfg.eval.every) == (3000, 4, 500)
    assert cfg.moe.hidden == DistillJobConfig().moe.hidden
    with pytest.raises(ConfigError, match="did you mean 'iterations'"):
        load_config(DistillJobConfig, YAML, ["train.iteration=3000"])
    with pytest.raises(ConfigError, match="iterations"):
        load_config(DistillJobConfig, overrides={"iterations": 3000})  # the old flat name


def test_node_declares_exactly_the_flattened_config():
    """Declared on a real node: every setting is a valid ROS parameter and the values build the default config."""
    rclpy = pytest.importorskip("rclpy")
    from vdd_ros.nodes.distill import PARAMS
    from vdd_ros.nodes.shared import declare_parameters

    rclpy.init(args=[])
    try:
        node = rclpy.create_node("distill_params_probe")
        values = declare_parameters(node, PARAMS)
        node.destroy_node()
    finally:
        rclpy.shutdown()
    assert values.pop("deploy_to") == ""
    assert values == flatten(DistillJobConfig())
    assert load_config(DistillJobConfig, overrides=values) == DistillJobConfig()
    assert (PARAMS["vdd.student_states"].low, PARAMS["vdd.student_states"].high) == (0.0, 1.0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-p", "train.iterations:=0"], r"train\.iterations must be >= 1"),
        (["-p", "vdd.student_states:=1.5"], r"vdd\.student_states"),
        (["-p", "eval.mode:=median"], r"eval\.mode.*expected one of"),
    ],
)
def test_node_refuses_bad_settings_at_start(tmp_path, args, message):
    rclpy = pytest.importorskip("rclpy")
    from vdd_ros.nodes.distill import DistillNode
    from vdd_ros.nodes.shared import StartupError

    out = tmp_path / "out"
    rclpy.init(args=["--ros-args", "-p", f"output:={out}", *args])
    try:
        with pytest.raises((ConfigError, StartupError), match=message):
            DistillNode()
    finally:
        rclpy.shutdown()
    assert not out.exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"train.iterations": 0}, r"train\.iterations must be >= 1"),
        ({"vdd.student_states": 1.5}, r"vdd\.student_states must be in \[0, 1\]"),
        ({"train.lr": 0.0}, r"train\.lr must be > 0"),
        ({"moe.init_std": 1e-5}, r"moe\.init_std"),
        ({"vdd.noise_low": 3.0, "vdd.noise_high": 1.0}, r"noise_low .* exceeds"),
        ({"device": "tpu-of-dreams"}, r"device"),
        ({"teacher": "/nonexistent/teacher"}, r"teacher '/nonexistent/teacher' is not a folder"),
    ],
)
def test_bad_settings_fail_before_anything_is_written(tmp_path, override, message):
    (tmp_path / "teacher").mkdir()
    (tmp_path / "demos.safetensors").write_bytes(b"")
    paths = {"teacher": str(tmp_path / "teacher"), "dataset": str(tmp_path / "demos.safetensors")}
    out = tmp_path / "out"
    cfg = load_config(DistillJobConfig, overrides={**paths, "output": str(out), **override})
    with pytest.raises(ConfigError, match=message):
        check_config(cfg)
    with pytest.raises(ConfigError, match=message):
        run_distillation(cfg)
    assert not out.exists()

