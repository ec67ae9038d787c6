# Source me: the project's venv, ROS from wheels, and the colcon install (when built).
# ROS_DISTRO picks the environment: kilted (default: .venv, install/) or jazzy (.venv-jazzy, install-jazzy/).
_here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ROS_DISTRO="${ROS_DISTRO:-kilted}"
case "$ROS_DISTRO" in
  kilted) _suffix="" ;;
  jazzy) _suffix="-jazzy" ;;
  *) echo "ros_env.sh: error: ROS_DISTRO=$ROS_DISTRO is not supported: use kilted or jazzy" >&2
     unset _here; return 1 ;;
esac
# Two distros' paths in one shell would mix their libraries: one shell, one distro.
if [ -n "${VDD_ROS_ENV_DISTRO:-}" ] && [ "$VDD_ROS_ENV_DISTRO" != "$ROS_DISTRO" ]; then
  echo "ros_env.sh: error: this shell already has the $VDD_ROS_ENV_DISTRO environment; open a new one for $ROS_DISTRO" >&2
  unset _here _suffix; return 1
fi
export VDD_ROS_ENV_DISTRO="$ROS_DISTRO"
source "$_here/.venv$_suffix/bin/activate"
export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$VIRTUAL_ENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
# Network rule: discovery never leaves loopback.
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
if [ -f "$_here/install$_suffix/setup.bash" ]; then
  # colcon's setup scripts reference unset variables; keep callers' `set -u` safe.
  set +u
  source "$_here/install$_suffix/setup.bash"
fi
unset _here _suffix
