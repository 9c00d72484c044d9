#!/usr/bin/env bash
# Crashes one component of a control plane started by up.sh and starts it again with the command line
# up.sh gave it: SIGKILL (a crash, not a graceful stop), an optional time down, then a wait until the
# component answers again. etcd keeps its data, so a restarted kube-apiserver serves the same objects.
#
#   testenv/restart.sh <statedir> <component> [seconds-down]
#
# Components: the names of up.sh's pid files (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kwok). Only kube-apiserver and etcd are waited for; the others are only started.
set -euo pipefail

[[ $# -ge 2 && $# -le 3 ]] || { echo "usage: $0 <statedir> <component> [seconds-down]" >&2; exit 2; }
state="$(cd "$1" && pwd)"
name="$2"
down="${3:-0}"
[[ -f "$state/.vpsie-testenv" ]] || { echo "restart.sh: $state is not a testenv state dir" >&2; exit 1; }
[[ -f "$state/cmds/$name" && -f "$state/pids/$name.pid" ]] || {
  echo "restart.sh: no component $name in $state (started by an older up.sh?)" >&2
  exit 1
}
[[ "$down" =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "restart.sh: seconds-down must be a number: $down" >&2; exit 2; }

# As in down.sh: a pid is ours only while its command line names this state dir.
ours() {
  local cmdline
  cmdline="$( { tr '\0' '\n' <"/proc/$1/cmdline"; } 2>/dev/null)" || return 1
  [[ "$cmdline" == *"$state/"* ]]
}

pid="$(cat "$state/pids/$name.pid")"
if [[ "$pid" =~ ^[0-9]+$ ]] && ours "$pid"; then
  kill -KILL "$pid"
  # Not our child, so no wait(1): poll until the kernel has let it go (its port with it).
  for _ in $(seq 1 100); do
    ours "$pid" || break
    sleep 0.1
  done
  ! ours "$pid" || { echo "restart.sh: $name ($pid) survived SIGKILL" >&2; exit 1; }
fi
sleep "$down"

# The component outlives this script: it must not inherit the caller's descriptors beyond stdio (a
# build lock held by a test runner's flock, say, would stay held for as long as the component runs).
for fd in /proc/$$/fd/*; do
  fd="${fd##*/}"
  if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null || true; fi
done

eval "cmd=( $(cat "$state/cmds/$name") )"
# shellcheck disable=SC2154 # cmd is set by the eval above
setsid "${cmd[@]}" >>"$state/logs/$name.log" 2>&1 </dev/null &
echo "$!" >"$state/pids/$name.pid"

# shellcheck source=/dev/null
source "$state/env"
ready() {
  case "$name" in
    kube-apiserver)
      [[ "$(curl -sf --max-time 2 --cacert "$TESTENV_CA_FILE" -H "Authorization: Bearer $TESTENV_ADMIN_TOKEN" \
        "$TESTENV_API_URL/readyz")" == ok ]]
      ;;
    etcd)
      local url
      url="$(tr '\0' '\n' <"/proc/$(cat "$state/pids/etcd.pid")/cmdline" | sed -n 's/^--advertise-client-urls=//p')"
      curl -sf --max-time 2 "$url/health" | grep -q '"health":"true"'
      ;;
    *) return 0 ;;
  esac
}
for _ in $(seq 1 600); do
  if ready; then
    echo "restart.sh: $name is back"
    exit 0
  fi
  kill -0 "$(cat "$state/pids/$name.pid")" 2>/dev/null || { echo "restart.sh: $name exited; see $state/logs/$name.log" >&2; exit 1; }
  sleep 0.1
done
echo "restart.sh: $name not ready after 60 s; see $state/logs/$name.log" >&2
exit 1
