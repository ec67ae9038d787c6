"""The architecture's import rules (docs/architecture.md), checked on the source tree.

Packages form layers in pipeline order; each imports only from layers before it (never from a
sibling on its own layer), only the ROS layers import rclpy, the serving path never loads
torch, and no modules import each other in a cycle.
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "vdd_ros"
LAYERS = [
    {"util"},
    {"data"},
    {"tasks", "teacher", "moe"},
    {"distill", "export"},
    {"runtime"},
    {"pipeline"},
    {"nodes"},
    {"harness"},
    {"cli"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}
ROS_LAYERS = {"nodes", "harness", "cli"}
ROS_MODULES = ("rclpy", "rcl_interfaces", "ament_index_python", "vdd_ros_msgs", "sensor_msgs", "std_msgs")


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _top_level(tree: ast.Module) -> list[ast.AST]:
    """Statements that run when the module is imported (not function or class bodies)."""
    out: list[ast.AST] = []
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        out.append(node)
        todo.extend(ast.iter_child_nodes(node))
    return out


def _imports(path: pathlib.Path, import_time_only: bool = False) -> set[str]:
    """Modules named by import statements: anywhere in the file, or only those run at import time."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in _top_level(tree) if import_time_only else ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


MODULES = _modules()


def test_every_package_has_a_layer() -> None:
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == set(RANK), f"packages without a layer or layers without a package: {packages ^ set(RANK)}"
    assert [p.name for p in PACKAGE.glob("*.py")] == ["__init__.py"], "modules belong in a layer's package"


def test_layers_import_only_from_earlier_layers() -> None:
    wrong = []
    for module, path in MODULES.items():
        own = module.split(".")[1] if module != "vdd_ros" else None
        if own is None:
            continue
        for name in _imports(path):
            if not name.startswith("vdd_ros.") or name.split(".")[1] not in RANK:
                continue
            other = name.split(".")[1]
            if other != own and RANK[other] >= RANK[own]:
                wrong.append(f"{module} imports {name} ({other} is not before {own})")
    assert not wrong, "\n".join(sorted(set(wrong)))


def test_only_ros_layers_import_ros() -> None:
    wrong = [
        f"{module} imports {name}"
        for module, path in MODULES.items()
        if module.split(".")[1:2] and module.split(".")[1] not in ROS_LAYERS
        for name in _imports(path)
        if name.split(".")[0] in ROS_MODULES
    ]
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_cycles() -> None:
    """At import time (a deferred import inside a function, e.g. to keep --help fast, cannot deadlock)."""
    graph = {
        module: {n for n in _imports(path, import_time_only=True) if n in MODULES and n != module}
        for module, path in MODULES.items()
        if module != "vdd_ros"
    }
    graph = {m: {n for n in deps if not m.startswith(n + ".") and n != "vdd_ros"} for m, deps in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for dep in sorted(graph.get(module, ())):
            if state.get(dep) == 1:
                pytest.fail("import cycle: " + " -> ".join([*stack[stack.index(dep) :], dep]))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


@pytest.mark.parametrize(
    "module", ["vdd_ros.nodes.controller", *sorted(m for m in MODULES if m.startswith("vdd_ros.runtime."))]
)
def test_serving_path_loads_no_torch(module: str) -> None:
    """The robot's controller must start without the multi-GB torch install (checked transitively)."""
    code = f"import sys, {module}; bad = [m for m in ('torch', 'onnx') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", f"{module} loads {out.stdout.strip()}"
