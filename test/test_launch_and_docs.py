"""Launch file and documentation: what they reference exists and what they show runs."""

from __future__ import annotations

import ast
import pathlib
import re
import subprocess
import sys

import pytest
from conftest import REPO

LAUNCH = REPO / "launch" / "controller.launch.py"


def _launch_nodes() -> list[dict[str, str]]:
    """Keyword constants of every Node(...) action in the launch file (read statically)."""
    tree = ast.parse(LAUNCH.read_text())
    nodes = []
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "Node":
            nodes.append({k.arg: k.value.value for k in call.keywords if isinstance(k.value, ast.Constant)})
    return nodes


def test_launch_file_references_installed_executables_and_config() -> None:
    from ament_index_python.packages import get_package_prefix, get_package_share_directory

    nodes = _launch_nodes()
    assert {n["executable"] for n in nodes} == {"controller", "task_sim"}
    prefix = pathlib.Path(get_package_prefix("vdd_ros"))
    for node in nodes:
        assert node["package"] == "vdd_ros"
        assert (prefix / "lib" / "vdd_ros" / node["executable"]).is_file()
    share = pathlib.Path(get_package_share_directory("vdd_ros"))
    for name in re.findall(r'"config", "([\w.]+)"', LAUNCH.read_text()):
        assert (share / "config" / name).is_file(), name
    args = re.findall(r'DeclareLaunchArgument\(\s*"(\w+)"', LAUNCH.read_text())
    assert set(args) == {
        "policy",
        "params_file",
        "sim_params_file",
        "namespace",
        "use_sim",
        "task",
        "observation_topic",
        "command_topic",
    }


def test_launch_description_builds_when_launch_is_installed() -> None:
    pytest.importorskip("launch_ros")
    import importlib.util

    spec = importlib.util.spec_from_file_location("controller_launch", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from launch.actions import DeclareLaunchArgument
    from launch_ros.actions import Node

    entities = module.generate_launch_description().entities
    declared = {e.name for e in entities if isinstance(e, DeclareLaunchArgument)}
    assert declared == set(re.findall(r'DeclareLaunchArgument\(\s*"(\w+)"', LAUNCH.read_text()))
    executables = {e.node_executable for e in entities if isinstance(e, Node)}
    assert executables == {n["executable"] for n in _launch_nodes()}


def test_dataset_format_example_runs(tmp_path: pathlib.Path) -> None:
    text = (REPO / "docs" / "dataset_format.md").read_text()
    code = (
        re.search(r"```python\n(.*?)```", text, re.S)
        .group(1)
        .replace("runs/demos/mine.safetensors", str(tmp_path / "mine.safetensors"))
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    from vdd_ros.data.dataset import load_dataset

    assert load_dataset(tmp_path / "mine.safetensors").num_episodes == 3


@pytest.mark.parametrize("module", ["collect_demos", "train_teacher", "evaluate", "bench", "bench_loop", "demo"])
def test_cli_help(module: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", f"vdd_ros.cli.{module}", "--help"], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "usage" in out.stdout


def test_docs_name_only_existing_executables_and_files() -> None:
    from ament_index_python.packages import get_package_prefix

    lib = pathlib.Path(get_package_prefix("vdd_ros")) / "lib" / "vdd_ros"
    docs = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    for doc in docs:
        text = doc.read_text()
        for exe in re.findall(r"ros2 run vdd_ros (\w+)", text):
            assert (lib / exe).is_file(), f"{doc.name}: {exe}"
        for module in re.findall(r"python -m (vdd_ros[\w.]+)", text):
            assert (REPO / (module.replace(".", "/") + ".py")).is_file(), f"{doc.name}: {module}"
        for path in re.findall(r"\b((?:config|launch|docs)/[\w.]+\.(?:yaml|py|md))\b", text):
            assert (REPO / path).is_file(), f"{doc.name}: {path}"
