# Source me: the project's venv, ROS from wheels, and the colcon install (when built).
_here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$_here/.venv/bin/activate"
export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$VIRTUAL_ENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
# Network rule: discovery never leaves loopback.
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
if [ -f "$_here/install/setup.bash" ]; then
  # colcon's setup scripts reference unset variables; keep callers' `set -u` safe.
  set +u
  source "$_here/install/setup.bash"
fi
unset _here
