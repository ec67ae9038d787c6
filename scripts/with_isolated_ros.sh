#!/usr/bin/env bash
# Run a command with a ROS_DOMAIN_ID that no other run on this machine holds.
# IDs 1..101 are claimed with flock on /tmp/vdd_ros_domain_<id>.lock for the whole
# command, so two CI runs on one machine never share a domain. Discovery stays on loopback.
set -euo pipefail
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
start=$(( (RANDOM % 101) + 1 ))
for i in $(seq 0 100); do
  id=$(( ((start + i - 1) % 101) + 1 ))
  exec {fd}>"/tmp/vdd_ros_domain_${id}.lock"
  if flock -n "$fd"; then
    export ROS_DOMAIN_ID=$id
    echo "with_isolated_ros: ROS_DOMAIN_ID=$id" >&2
    "$@"
    exit $?
  fi
  exec {fd}>&-
done
echo "with_isolated_ros: no free ROS_DOMAIN_ID in 1..101" >&2
exit 1
