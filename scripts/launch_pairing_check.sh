#!/usr/bin/env bash
# Repeat `ros2 launch vdd_ros controller.launch.py use_sim:=true` and tabulate what the simulator
# reports: per launch episodes, successes, late actions per episode (mean/max) and a clean exit.
# A phase-locked pairing shows up as launches with hundreds of late actions per episode.
#
# usage: scripts/launch_pairing_check.sh [N] [EXTRA...]
#   N       launches, one after another (default 10)
#   EXTRA   passed to `ros2 launch`: options (give them as --opt=value) go before the package,
#           name:=value arguments after the launch file, e.g.
#           scripts/launch_pairing_check.sh 5 --launch-prefix=/tmp/wrap.sh --launch-prefix-filter=controller
# env:
#   PAIRING_SECONDS       run time of each launch before SIGINT (default 25)
#   PAIRING_DOMAIN_FIRST  ROS_DOMAIN_IDs used, claimed one per launch with the same flock files
#   PAIRING_DOMAIN_LAST   as scripts/with_isolated_ros.sh (default 150..160, outside its 1..101)
#   PAIRING_LOG_DIR       where each launch's output is kept (default: a new /tmp directory)
# Needs the reference ros2 command line (launch, launch_ros, ros2cli) built outside the repository
# at ~/ros2cli (shared/tools/ros2cli/README.md). Exit status: 0 if every launch ended cleanly and
# reported at least one episode, 1 otherwise, 2 on a usage or setup problem. A launch with no
# episode means the simulator never received an action answering its current observation.
set -uo pipefail

activate="$HOME/ros2cli/activate.sh"
if [ ! -f "$activate" ]; then
  echo "launch_pairing_check: needs the reference ros2 command line at $activate" >&2
  echo "  (build it outside the repository: see shared/tools/ros2cli/README.md)" >&2
  exit 2
fi
runs=10
if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then
  runs=$1
  shift
fi
[ "$runs" -ge 1 ] || { echo "launch_pairing_check: N must be at least 1" >&2; exit 2; }
options=()
arguments=()
for extra in "$@"; do
  if [[ $extra == -* ]]; then options+=("$extra"); else arguments+=("$extra"); fi
done
seconds=${PAIRING_SECONDS:-25}
first=${PAIRING_DOMAIN_FIRST:-150}
last=${PAIRING_DOMAIN_LAST:-160}
logs=${PAIRING_LOG_DIR:-$(mktemp -d /tmp/launch_pairing.XXXXXX)}
mkdir -p "$logs"

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
set +u
# shellcheck source=/dev/null
source "$activate" "$repo" || { echo "launch_pairing_check: sourcing $activate failed" >&2; exit 2; }
set -u
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST  # network rule: discovery never leaves loopback

# Claim a free ROS_DOMAIN_ID in first..last, starting after the previous one; holds fd 9.
next=$first
claim_domain() {
  local span=$((last - first + 1)) i id
  for ((i = 0; i < span; i++)); do
    id=$((first + (next - first + i) % span))
    exec 9>"/tmp/vdd_ros_domain_${id}.lock"
    if flock -n 9; then
      domain=$id
      next=$((id + 1))
      return 0
    fi
    exec 9>&-
  done
  return 1
}

# Episode lines: "episode N: success|failure in S steps, mode M, late actions L" (M is -1 for none).
summarise() {
  awk '
    match($0, /episode [0-9]+: (success|failure) in [0-9]+ steps, mode -?[0-9]+, late actions [0-9]+/) {
      k = split(substr($0, RSTART, RLENGTH), f, " ")  # f[3]: outcome, f[k]: late actions
      n++
      if (f[3] == "success") s++
      late = f[k] + 0
      sum += late
      if (late > max) max = late
    }
    END { printf "%d %d %d %d\n", n, s, sum, max }
  ' "$1"
}

printf '%-6s %-6s %8s %9s %9s %8s  %s\n' launch domain episodes successes late_mean late_max clean
tot_eps=0 tot_succ=0 tot_late=0 tot_max=0 clean_runs=0 silent_runs=0
for ((run = 1; run <= runs; run++)); do
  claim_domain || { echo "launch_pairing_check: no free ROS_DOMAIN_ID in $first..$last" >&2; exit 2; }
  log="$logs/launch_$run.log"
  ROS_DOMAIN_ID=$domain timeout --foreground --preserve-status -s INT -k 15 "$seconds" \
    ros2 launch "${options[@]}" vdd_ros controller.launch.py use_sim:=true "${arguments[@]}" >"$log" 2>&1 </dev/null
  rc=$?
  exec 9>&-  # release the domain
  read -r eps succ late max < <(summarise "$log")
  problems=()
  [ "$rc" -eq 0 ] || problems+=("exit $rc")
  grep -q Traceback "$log" && problems+=("traceback")
  grep -q "process has died" "$log" && problems+=("a process died")
  if [ ${#problems[@]} -eq 0 ]; then
    clean=yes
    clean_runs=$((clean_runs + 1))
  else
    clean="no ($(IFS=,; echo "${problems[*]}"))"
  fi
  mean=$(awk -v s="$late" -v n="$eps" 'BEGIN { printf "%.1f", n ? s / n : 0 }')
  printf '%-6s %-6s %8d %9d %9s %8d  %s\n' "$run" "$domain" "$eps" "$succ" "$mean" "$max" "$clean"
  tot_eps=$((tot_eps + eps)) tot_succ=$((tot_succ + succ)) tot_late=$((tot_late + late))
  [ "$max" -gt "$tot_max" ] && tot_max=$max
  [ "$eps" -gt 0 ] || silent_runs=$((silent_runs + 1))
done
mean=$(awk -v s="$tot_late" -v n="$tot_eps" 'BEGIN { printf "%.1f", n ? s / n : 0 }')
printf '%-6s %-6s %8d %9d %9s %8d  %s\n' total - "$tot_eps" "$tot_succ" "$mean" "$tot_max" "$clean_runs/$runs clean"
[ "$silent_runs" -eq 0 ] || echo "launches without an episode: $silent_runs (no action answered the current observation)"
echo "logs: $logs"
[ "$clean_runs" -eq "$runs" ] && [ "$silent_runs" -eq 0 ]
