"""ament_python package vdd_ros: ROS-free core (vdd_ros.*) plus node executables."""

from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "vdd_ros"


def _files_by_folder(root: str) -> list[tuple[str, list[str]]]:
    """(install folder, files) for ``root`` and each folder below it: shipped policies and teachers."""
    folders = [Path(root), *sorted(p for p in Path(root).rglob("*") if p.is_dir())]
    return [(f"share/{PACKAGE}/{d}", sorted(str(f) for f in d.iterdir() if f.is_file())) for d in folders]


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        *_files_by_folder("policies"),
    ],
    install_requires=["setuptools"],
    extras_require={"test": ["pytest"]},
    zip_safe=True,
    maintainer="vdd_ros developers",
    maintainer_email="dev@vdd-ros.invalid",
    description="VDD distillation of diffusion policies into ONNX mixtures of experts, served by a ROS 2 controller.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "controller = vdd_ros.nodes.controller:main",
            "task_sim = vdd_ros.nodes.task_sim:main",
            "avoiding_sim = vdd_ros.nodes.task_sim:main",
            "distill = vdd_ros.nodes.distill:main",
            "collect_demos = vdd_ros.cli.collect_demos:main",
            "train_teacher = vdd_ros.cli.train_teacher:main",
            "evaluate = vdd_ros.cli.evaluate:main",
            "bench = vdd_ros.cli.bench:main",
            "bench_loop = vdd_ros.cli.bench_loop:main",
            "demo = vdd_ros.cli.demo:main",
            "distill_offline = vdd_ros.cli.distill_offline:main",
            "import_bag = vdd_ros.cli.import_bag:main",
            "import_lerobot = vdd_ros.cli.import_lerobot:main",
        ],
    },
)
