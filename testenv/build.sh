#!/usr/bin/env bash
# Builds the control-plane binaries for the end-to-end tests (etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kwok) and
# the operability tools (helm, promtool) from
# the pinned Go modules next to this script, into a cache outside the repo:
#
#   ${VPSIE_TESTENV_CACHE:-$HOME/.cache/vpsie-testenv}/<component>-<version>/
#
# A binary already in the cache is never rebuilt, so a second run costs well
# under a second. Output: the path of an env file (last line of stdout) that
# names every binary; up.sh sources it.
#
# Needs only a Go toolchain (>= the go lines of the modules) and the module
# proxy. Safe to run concurrently with itself and with cargo builds that take
# the same lock.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${VPSIE_TESTENV_CACHE:-$HOME/.cache/vpsie-testenv}"
# Shared with the Rust side: on a 2-core machine two big links at once thrash,
# so every compiler invocation takes this lock, one binary at a time.
lock="${VPSIE_BUILD_LOCK:-/tmp/vpsie-build.lock}"

# Static binaries, no toolchain download behind our back, go.sum is the truth
# (a missing/changed sum is an error, not a silent update). -buildvcs=false
# because the wrapper modules live in the project's git tree, whose state is
# irrelevant to these binaries (and git may refuse to run in CI containers).
export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false"

log() { printf 'build.sh: %s\n' "$*" >&2; }

# The version a wrapper module pins for a dependency, read from go.mod itself
# (offline, no module graph load) so go.mod stays the single source of truth.
pinned() {
  local v
  v="$(awk -v m="$2" '
    $1 == "require" { $0 = substr($0, index($0, $2)) }  # single-line form
    $1 == m && $2 ~ /^v/ { print $2; exit }' "$here/$1/go.mod")"
  [[ -n "$v" ]] || { log "no version for $2 in $1/go.mod"; exit 1; }
  printf '%s\n' "$v"
}

kube_version="$(pinned kube k8s.io/kubernetes)"
etcd_version="$(pinned etcd go.etcd.io/etcd/server/v3)"
kwok_version="$(pinned kwok sigs.k8s.io/kwok)"
helm_version="$(pinned helm helm.sh/helm/v3)"
prometheus_version="$(pinned prometheus github.com/prometheus/prometheus)"

kube_dir="$cache/kubernetes-$kube_version"
etcd_dir="$cache/etcd-$etcd_version"
kwok_dir="$cache/kwok-$kwok_version"
helm_dir="$cache/helm-$helm_version"
prometheus_dir="$cache/prometheus-$prometheus_version"
mkdir -p "$kube_dir" "$etcd_dir" "$kwok_dir" "$helm_dir" "$prometheus_dir"

# Downloads a module's dependencies, outside the lock (network, not CPU), and
# only when something must be built: a warm run never touches the network.
declare -A downloaded=()
download() {
  [[ -n "${downloaded[$1]:-}" ]] && return 0
  (cd "$here/$1" && go mod download) || { log "go mod download failed in $1/"; exit 1; }
  downloaded[$1]=1
}

# build <module dir> <output> <package> [go build args...]
# Builds into a temp name and renames, so an interrupted build never leaves a
# truncated binary that later runs would mistake for a cached one. The
# existence check is repeated under the lock because a concurrent build.sh may
# have produced the binary while we waited.
build() {
  local mod="$1" out="$2" pkg="$3"
  shift 3
  [[ -x "$out" ]] && return 0
  download "$mod"
  log "building $(basename "$out") ($pkg)"
  local start=$SECONDS
  # Explicit && chain: errexit is off inside the left side of `||`.
  (
    cd "$here/$mod" && exec 9>"$lock" && flock 9 || exit 1
    [[ -x "$out" ]] && exit 0
    go build -trimpath "$@" -o "$out.tmp.$$" "$pkg" && mv -f "$out.tmp.$$" "$out"
  ) || { rm -f "$out.tmp.$$"; log "FAILED: go build $pkg (in $mod/)"; exit 1; }
  log "built $(basename "$out") in $((SECONDS - start))s"
}

kube_minor="${kube_version#v1.}"
kube_minor="${kube_minor%%.*}"
# The same variables upstream's hack/lib/version.sh sets; without them every
# component reports v0.0.0-master, which kubectl and kube-rs then print/parse.
kube_ldflags="-s -w
  -X k8s.io/component-base/version.gitVersion=$kube_version
  -X k8s.io/component-base/version.gitMajor=1
  -X k8s.io/component-base/version.gitMinor=$kube_minor
  -X k8s.io/component-base/version.gitTreeState=clean"
kube_ldflags="$(tr -s ' \n' ' ' <<<"$kube_ldflags")"

# Smallest first: a failure in the cheap ones shows up before the long build.
build etcd "$etcd_dir/etcd" . \
  -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$etcd_version"
build kwok "$kwok_dir/kwok" sigs.k8s.io/kwok/cmd/kwok \
  -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${kwok_version#v} -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=${kube_version#v}"
# The chart's lint/render/install tests and the alert rules' unit tests (promtool).
build helm "$helm_dir/helm" helm.sh/helm/v3/cmd/helm \
  -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version"
build prometheus "$prometheus_dir/promtool" github.com/prometheus/prometheus/cmd/promtool \
  -ldflags "-s -w -X github.com/prometheus/common/version.Version=${prometheus_version#v}"
for cmd in kube-apiserver kube-scheduler kube-controller-manager kubectl; do
  build kube "$kube_dir/$cmd" "k8s.io/kubernetes/cmd/$cmd" -ldflags "$kube_ldflags"
done

# kwok refuses to start without stages. Use the "fast" set kwokctl uses by
# default (kustomize/stage/fast = node-initialize, node-heartbeat-with-lease,
# pod-ready, pod-complete, pod-delete), read from the exact module version
# pinned in go.sum. pod-delete matters: without it nothing confirms graceful
# deletion and evicted pods stay Terminating forever.
# Plus the opt-in chaos stage node-not-ready: it only acts on nodes labelled
# node-not-ready.stage.kwok.x-k8s.io=true and is the way to fake a dead node
# (removing the kwok annotation does not work: kwok v0.8.0 keeps renewing the
# node's Lease, so the controller-manager never marks it NotReady).
stages="$kwok_dir/stages.yaml"
if [[ ! -s "$stages" ]]; then
  kwok_src="$(cd "$here/kwok" && go mod download -json "sigs.k8s.io/kwok@$kwok_version" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
  [[ -d "$kwok_src" ]] || { log "cannot locate sigs.k8s.io/kwok@$kwok_version in the module cache"; exit 1; }
  tmp="$stages.tmp.$$"
  : >"$tmp"
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
    pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml \
    node/chaos/node-not-ready.yaml; do
    printf -- '---\n# from sigs.k8s.io/kwok@%s kustomize/stage/%s\n' "$kwok_version" "$f" >>"$tmp"
    sed '/^---[[:space:]]*$/d' "$kwok_src/kustomize/stage/$f" >>"$tmp"
  done
  mv -f "$tmp" "$stages"
fi

# One env file per version triple: concurrent builds of different checkouts
# cannot overwrite each other's, and it is rewritten atomically.
env_file="$cache/testenv_kubernetes-${kube_version}_etcd-${etcd_version}_kwok-${kwok_version}.env"
tmp="$env_file.tmp.$$"
{
  echo "# Generated by testenv/build.sh; paths of the control-plane binaries."
  for kv in \
    "TESTENV_KUBE_VERSION=$kube_version" \
    "TESTENV_ETCD_VERSION=$etcd_version" \
    "TESTENV_KWOK_VERSION=$kwok_version" \
    "TESTENV_ETCD=$etcd_dir/etcd" \
    "TESTENV_KUBE_APISERVER=$kube_dir/kube-apiserver" \
    "TESTENV_KUBE_CONTROLLER_MANAGER=$kube_dir/kube-controller-manager" \
    "TESTENV_KUBE_SCHEDULER=$kube_dir/kube-scheduler" \
    "TESTENV_KUBECTL=$kube_dir/kubectl" \
    "TESTENV_KWOK=$kwok_dir/kwok" \
    "TESTENV_KWOK_STAGES=$stages" \
    "TESTENV_HELM=$helm_dir/helm" \
    "TESTENV_PROMTOOL=$prometheus_dir/promtool"; do
    printf '%s=%q\n' "${kv%%=*}" "${kv#*=}"
  done
} >"$tmp"
mv -f "$tmp" "$env_file"

log "binaries: $kube_dir $etcd_dir $kwok_dir $helm_dir $prometheus_dir"
printf '%s\n' "$env_file"
