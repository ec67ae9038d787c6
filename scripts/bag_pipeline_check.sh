#!/usr/bin/env bash
# The end-to-end "your robot" check from recorded rosbag2 bags on Avoiding (docs/results.md,
# "From a recorded bag"): record K real-time controller + task_sim pairs, each in its own
# ROS_DOMAIN_ID (161.. by default: outside the tests' 1..101 and launch_pairing_check's 150..160),
# then import_bag -> train_teacher -> distill_offline -> evaluate (in process and over DDS).
#
# usage: scripts/bag_pipeline_check.sh [--out runs/bag_pipeline] [--pairs 8] [--episodes 1200]
#                                      [--keep success|all] [--teacher-args "iterations=4000"] ...
# Takes 30-40 min on a busy 2-core machine; run it in the background, e.g.
#   nohup scripts/bag_pipeline_check.sh > /tmp/bag_pipeline.out 2>&1 &
# Everything (bags, logs, datasets, teacher, student, evaluations, summary.json) goes under --out;
# a stage whose output exists is skipped, so a rerun continues after a failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/ros_env.sh
exec python scripts/bag_pipeline_check.py "$@"
