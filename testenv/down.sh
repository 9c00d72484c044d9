#!/usr/bin/env bash
# Stops a control plane started by up.sh and removes its state directory.
# Idempotent: a missing or already-stopped state dir is success.
#
#   testenv/down.sh <statedir>
#
# TESTENV_KEEP_STATE=1 stops the processes but keeps the directory (logs);
# up.sh uses that when it fails.
set -euo pipefail

[[ $# -eq 1 && -n "$1" ]] || { echo "usage: $0 <statedir>" >&2; exit 2; }
[[ -d "$1" ]] || exit 0
state="$(cd "$1" && pwd)"
# Never rm -rf a directory up.sh did not create.
[[ -f "$state/.vpsie-testenv" ]] || { echo "down.sh: $state is not a testenv state dir; leaving it alone" >&2; exit 1; }

# A pid is only ours while its command line mentions this state dir (every
# component gets paths inside it): pid files outlive reboots and pids get
# recycled, and signalling a stranger would be far worse than a leftover.
# Exited-but-unreaped processes have an empty cmdline, so they count as gone.
ours() {
  local pid="$1" cmdline
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  cmdline="$( { tr '\0' '\n' <"/proc/$pid/cmdline"; } 2>/dev/null)" || return 1
  [[ "$cmdline" == *"$state/"* ]]
}

# stop_group <grace seconds> <component...>: SIGTERM together, SIGKILL what
# is left after the grace period.
stop_group() {
  local grace="$1" name pid
  shift
  local pids=()
  for name in "$@"; do
    pid="$(cat "$state/pids/$name.pid" 2>/dev/null)" || continue
    if ours "$pid"; then pids+=("$pid"); fi
  done
  ((${#pids[@]})) || return 0
  kill -TERM "${pids[@]}" 2>/dev/null || true
  local deadline=$((SECONDS + grace)) alive
  while ((SECONDS < deadline)); do
    alive=0
    for pid in "${pids[@]}"; do
      if ours "$pid"; then alive=1; fi
    done
    ((alive)) || return 0
    sleep 0.1
  done
  for pid in "${pids[@]}"; do
    if ours "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  done
}

# Clients before the API server, the API server before etcd: kube-apiserver's
# graceful shutdown waits for requests of still-connected clients and was seen
# hanging for over 30 s when signalled together with them, while alone it
# exits in about 3 s. Nothing is worth saving, so the grace periods are short.
stop_group 5 kwok kube-scheduler kube-controller-manager
stop_group 5 kube-apiserver
stop_group 5 etcd

if [[ "${TESTENV_KEEP_STATE:-0}" == 1 ]]; then
  rm -f "$state"/pids/*.pid
else
  rm -rf "${state:?}"
fi
