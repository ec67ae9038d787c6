# One-command entry points. `make test` and `make demo` set up on first use.
# ROS_DISTRO=kilted (default: .venv, build/, install/, log/ from requirements.txt) or
# ROS_DISTRO=jazzy (.venv-jazzy, build-jazzy/, install-jazzy/, log-jazzy/ from requirements-jazzy.txt).
SHELL := /bin/bash
PY ?= python3
ROS_DISTRO ?= kilted
# make demo / make bench: the benchmark task (config/teacher_<task>.yaml, config/distill_<task>.yaml);
# make demo TRAIN_TEACHER=1 trains the teacher even where policies/<task>_teacher ships one
TASK ?= avoiding
ifeq ($(filter kilted jazzy,$(ROS_DISTRO)),)
$(error ROS_DISTRO=$(ROS_DISTRO) is not supported: use kilted or jazzy (docs/install.md))
endif
# scripts/ros_env.sh reads it to pick the same environment.
export ROS_DISTRO
SUFFIX := $(if $(filter kilted,$(ROS_DISTRO)),,-$(ROS_DISTRO))
REQUIREMENTS := $(if $(SUFFIX),requirements$(SUFFIX).txt,requirements.txt)
VENV := .venv$(SUFFIX)
BUILD := build$(SUFFIX)
INSTALL := install$(SUFFIX)
LOG := log$(SUFFIX)
VPY := $(VENV)/bin/python
STAMP_VENV := $(VENV)/.stamp-requirements
STAMP_BUILD := $(INSTALL)/.stamp-build
COLCON_LOG := build_colcon$(SUFFIX).log
ENV := source scripts/ros_env.sh

.PHONY: setup build test lint demo bench bench-docs clean

setup: $(STAMP_BUILD)

$(STAMP_VENV): $(REQUIREMENTS) requirements-common.txt scripts/fix_rosidl_includes.py
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --disable-pip-version-check -r $(REQUIREMENTS)
	$(VPY) scripts/fix_rosidl_includes.py $(VENV)
	touch $@

$(STAMP_BUILD): $(STAMP_VENV) setup.py setup.cfg package.xml msg/package.xml msg/CMakeLists.txt $(wildcard msg/msg/*.msg) $(wildcard launch/*.py) $(wildcard config/*.yaml) $(wildcard policies/*) $(wildcard policies/*/*)
	$(ENV) && colcon --log-base $(LOG) build --base-paths . msg --symlink-install \
		--build-base $(BUILD) --install-base $(INSTALL) \
		--cmake-args -DPython3_EXECUTABLE=$$PWD/$(VPY) -DBUILD_TESTING=OFF \
		--event-handlers console_direct- > $(COLCON_LOG) 2>&1 || (cat $(COLCON_LOG); exit 1)
	touch $@

lint: $(STAMP_VENV)
	$(VENV)/bin/ruff check vdd_ros test launch scripts setup.py

test: setup lint
	$(ENV) && scripts/with_isolated_ros.sh $(VPY) -m pytest -q test

demo: setup
	$(ENV) && scripts/with_isolated_ros.sh $(VPY) -m vdd_ros.cli.demo $(if $(FAST),fast=true,) $(if $(TRAIN_TEACHER),train_teacher=true,) task=$(TASK)

# Needs the outputs of `make demo [TASK=...]` (teacher, VDD policy); fits the EM baseline into runs/bench[_TASK]
# if missing. The controller benchmark (bench_loop) is task-independent and runs with the default task only.
# Writes under runs/ only; `make bench-docs` also rewrites the bench sections of docs/results.md and docs/img/.
TASK_SUFFIX := $(if $(filter avoiding,$(TASK)),,_$(TASK))
DEMO_ROOT := runs/demo$(TASK_SUFFIX)
BENCH_ARGS = teacher=$(DEMO_ROOT)/teacher_ddpm vdd=$(DEMO_ROOT)/distill_vdd dataset=$(DEMO_ROOT)/demos.safetensors \
	distill=config/distill_$(TASK).yaml output=runs/bench$(TASK_SUFFIX)
bench: setup
ifeq ($(TASK),avoiding)
	$(ENV) && scripts/with_isolated_ros.sh $(VPY) -m vdd_ros.cli.bench_loop realtime_priority=50 $(DOCS)
	$(ENV) && scripts/with_isolated_ros.sh $(VPY) -m vdd_ros.cli.bench_loop realtime_priority=50 sync=true $(DOCS)
endif
	$(ENV) && $(VPY) -m vdd_ros.cli.bench $(BENCH_ARGS) $(DOCS)

bench-docs:
	$(MAKE) bench DOCS=update_docs=true

clean:
	rm -rf $(BUILD) $(INSTALL) $(LOG) runs
