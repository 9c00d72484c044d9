#!/usr/bin/env bash
# Starts a real, throw-away Kubernetes control plane on 127.0.0.1 for the
# end-to-end tests: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler and kwok (the kubelet of every Node annotated
# kwok.x-k8s.io/node=fake).
#
#   testenv/up.sh <statedir>      # builds or reuses the binaries first
#   . <statedir>/env              # KUBECONFIG, TESTENV_* (see README.md)
#   testenv/down.sh <statedir>
#
# Returns only once the API server is ready, the controller-manager has
# created the `default` ServiceAccount of a fresh namespace, and the scheduler
# has bound a probe pod that kwok then ran. On failure it prints the tail of
# every component log, stops what it started and exits non-zero; the logs stay
# in <statedir>/logs/ (down.sh removes them).
#
# Knobs (environment): TESTENV_BIN_ENV (env file from build.sh; skips calling
# it), TESTENV_UP_TIMEOUT (seconds, default 120), TESTENV_NODE_MONITOR_GRACE
# (default 20s), TESTENV_LOG_V (klog verbosity, default 0).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
[[ $# -eq 1 && -n "$1" ]] || { echo "usage: $0 <statedir>" >&2; exit 2; }
mkdir -p "$1"
state="$(cd "$1" && pwd)"
marker="$state/.vpsie-testenv"
timeout_s="${TESTENV_UP_TIMEOUT:-120}"
log_v="${TESTENV_LOG_V:-0}"
attempt="${TESTENV_UP_ATTEMPT:-1}"
max_attempts=3

log() { printf 'up.sh: [%3ds] %s\n' "$SECONDS" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Refuse to clobber a directory that is not ours, or one whose control plane
# is still running (down.sh removes both the processes and the marker).
if [[ -n "$(ls -A "$state")" ]]; then
  [[ -f "$marker" ]] || die "$state is not empty and not a testenv state dir"
  for f in "$state"/pids/*.pid; do
    [[ -f "$f" ]] || continue
    # Same test as down.sh: alive and started for this state dir.
    pid="$(cat "$f")"
    cmdline="$( { tr '\0' '\n' <"/proc/$pid/cmdline"; } 2>/dev/null)" || true
    [[ "$cmdline" == *"$state/"* ]] && die "$state is in use (pid $pid from $f); run down.sh first"
  done
  # Leftovers of a failed attempt (logs, pki): start clean.
  rm -rf "${state:?}"/*
fi
mkdir -p "$state"/{pids,logs,pki,kubeconfigs,cmds}
: >"$marker"

for tool in openssl curl python3; do
  command -v "$tool" >/dev/null || die "$tool is required"
done

# --- binaries --------------------------------------------------------------
bin_env="${TESTENV_BIN_ENV:-}"
if [[ -z "$bin_env" ]]; then
  bin_env="$("$here/build.sh" | tail -n 1)"
fi
# shellcheck disable=SC1090
. "$bin_env"
for b in "$TESTENV_ETCD" "$TESTENV_KUBE_APISERVER" "$TESTENV_KUBE_CONTROLLER_MANAGER" \
  "$TESTENV_KUBE_SCHEDULER" "$TESTENV_KUBECTL" "$TESTENV_KWOK"; do
  [[ -x "$b" ]] || die "missing binary $b (run testenv/build.sh)"
done

# --- failure handling ------------------------------------------------------
ok=0
on_exit() {
  local rc=$?
  ((ok)) && return 0
  ((rc)) || rc=1
  TESTENV_KEEP_STATE=1 "$here/down.sh" "$state" || true
  # The ports are probed free but only taken when each component binds, so
  # another process can win the race; that is worth a fresh start, nothing
  # else is.
  if grep -qs 'address already in use' "$state"/logs/*.log && ((attempt < max_attempts)); then
    log "a port was taken meanwhile; retrying (attempt $((attempt + 1))/$max_attempts)"
    TESTENV_UP_ATTEMPT=$((attempt + 1)) TESTENV_BIN_ENV="$bin_env" exec "$0" "$state"
  fi
  local f
  for f in "$state"/logs/*.log; do
    [[ -f "$f" ]] || continue
    printf '\n===== %s (last 40 lines) =====\n' "$f" >&2
    tail -n 40 "$f" >&2
  done
  log "FAILED; processes stopped, logs kept in $state/logs (down.sh removes them)"
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT TERM

# --- ports -----------------------------------------------------------------
# Bind-checked ports below the usual ephemeral range (32768+), so the kernel
# does not hand them to some outgoing connection in between; the remaining
# race is handled by the retry in on_exit.
read -r etcd_port etcd_peer_port api_port kcm_port sched_port kwok_port < <(python3 - <<'EOF'
import random, socket
ports, socks = [], []
while len(ports) < 6:
    p = random.randrange(20000, 32768)
    if p in ports:
        continue
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        s.close()
        continue
    socks.append(s)
    ports.append(p)
print(*ports)
EOF
)
api_url="https://127.0.0.1:$api_port"
log "ports: etcd=$etcd_port/$etcd_peer_port apiserver=$api_port kcm=$kcm_port scheduler=$sched_port kwok=$kwok_port"

# --- certificates, keys, tokens ---------------------------------------------
pki="$state/pki"
cat >"$pki/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = vpsie-testenv-ca
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
[v3_server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
# 127.0.0.1 is what everything dials; the kubernetes.default names are what
# in-cluster clients and the token issuer use; 10.96.0.1 is the service IP.
subjectAltName = IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:10.96.0.1
EOF
# EC P-256 for TLS (instant to generate); the service-account key is RSA, the
# algorithm every token consumer supports. One key both signs (apiserver
# --service-account-signing-key-file, KCM) and verifies (--service-account-key-file).
ossl() { openssl "$@" 2>>"$state/logs/openssl.log" || die "openssl $1 failed (see logs/openssl.log)"; }
ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$pki/ca.key"
ossl req -x509 -new -key "$pki/ca.key" -config "$pki/openssl.cnf" -extensions v3_ca \
  -days 3650 -out "$pki/ca.crt"
ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$pki/apiserver.key"
ossl req -new -key "$pki/apiserver.key" -config "$pki/openssl.cnf" -subj /CN=kube-apiserver \
  -out "$pki/apiserver.csr"
ossl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
  -set_serial "0x$(openssl rand -hex 16)" -days 3650 \
  -extfile "$pki/openssl.cnf" -extensions v3_server -out "$pki/apiserver.crt"
ossl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$pki/sa.key"
chmod 600 "$pki"/*.key
# Only key-generation progress dots by now; keep the failure dump readable.
rm -f "$state/logs/openssl.log"

token() { openssl rand -hex 24; }
admin_token="$(token)"
kcm_token="$(token)"
sched_token="$(token)"
kwok_token="$(token)"
# KCM and kwok run as system:masters: KCM because without
# --use-service-account-credentials all its controllers share one identity,
# kwok because it writes node and pod status of arbitrary nodes. The scheduler
# uses its real identity, which the bootstrap RBAC policy covers.
cat >"$state/tokens.csv" <<EOF
$admin_token,testenv-admin,uid-testenv-admin,"system:masters"
$kcm_token,testenv:kube-controller-manager,uid-testenv-kcm,"system:masters"
$sched_token,system:kube-scheduler,uid-testenv-scheduler
$kwok_token,testenv:kwok,uid-testenv-kwok,"system:masters"
EOF
chmod 600 "$state/tokens.csv"

ca_data="$(base64 <"$pki/ca.crt" | tr -d '\n')"
write_kubeconfig() { # <file> <user> <token>
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: testenv
  cluster:
    server: $api_url
    certificate-authority-data: $ca_data
users:
- name: $2
  user:
    token: $3
contexts:
- name: testenv
  context:
    cluster: testenv
    user: $2
    namespace: default
current-context: testenv
EOF
  chmod 600 "$1"
}
write_kubeconfig "$state/kubeconfig" testenv-admin "$admin_token"
write_kubeconfig "$state/kubeconfigs/kube-controller-manager.kubeconfig" kube-controller-manager "$kcm_token"
write_kubeconfig "$state/kubeconfigs/kube-scheduler.kubeconfig" kube-scheduler "$sched_token"
write_kubeconfig "$state/kubeconfigs/kwok.kubeconfig" kwok "$kwok_token"

# --- processes -------------------------------------------------------------
# start <name> <binary> <args...>: detached into its own session so a Ctrl-C
# aimed at the caller's terminal does not take the control plane down with it
# (down.sh does that). Every command line contains $state, which down.sh
# checks before signalling a pid, so a recycled pid is never killed.
start() {
  local name="$1"
  shift
  setsid "$@" >"$state/logs/$name.log" 2>&1 </dev/null &
  echo "$!" >"$state/pids/$name.pid"
  # The exact command line, for restart.sh (a crash-and-restart of one component).
  printf '%q ' "$@" >"$state/cmds/$name"
}
alive_or_die() {
  local f
  for f in "$state"/pids/*.pid; do
    [[ -f "$f" ]] || continue
    kill -0 "$(cat "$f")" 2>/dev/null || die "$(basename "$f" .pid) exited early"
  done
}
deadline=$((SECONDS + timeout_s))
# wait_for <what> <command...>: polls every 0.2 s until the command succeeds,
# a component dies, or the overall deadline passes.
wait_for() {
  local what="$1"
  shift
  until "$@" >/dev/null 2>&1; do
    alive_or_die
    ((SECONDS < deadline)) || die "timed out after ${timeout_s}s waiting for $what"
    sleep 0.2
  done
  log "$what"
}

# --unsafe-no-fsync: the data is thrown away after the run, and fsync latency
# on CI disks is the main cause of slow/flaky apiserver writes.
start etcd "$TESTENV_ETCD" \
  --name=testenv \
  --data-dir="$state/etcd" \
  --listen-client-urls="http://127.0.0.1:$etcd_port" \
  --advertise-client-urls="http://127.0.0.1:$etcd_port" \
  --listen-peer-urls="http://127.0.0.1:$etcd_peer_port" \
  --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer_port" \
  --initial-cluster="testenv=http://127.0.0.1:$etcd_peer_port" \
  --unsafe-no-fsync \
  --log-level=warn

etcd_healthy() { curl -sf --max-time 2 "http://127.0.0.1:$etcd_port/health" | grep -q '"health":"true"'; }
wait_for "etcd healthy" etcd_healthy

# Started once etcd answers: it would retry on its own, but the only gain is
# under a second and the cost is a screen of gRPC dial errors at the top of
# its log, which is the log people read when something fails.
# --advertise-address keeps it from deriving an address from the default
# route; --endpoint-reconciler-type=none because Endpoints may not point at
# loopback, which would only produce error spam.
start kube-apiserver "$TESTENV_KUBE_APISERVER" \
  --etcd-servers="http://127.0.0.1:$etcd_port" \
  --bind-address=127.0.0.1 \
  --advertise-address=127.0.0.1 \
  --secure-port="$api_port" \
  --cert-dir="$pki" \
  --tls-cert-file="$pki/apiserver.crt" \
  --tls-private-key-file="$pki/apiserver.key" \
  --client-ca-file="$pki/ca.crt" \
  --token-auth-file="$state/tokens.csv" \
  --authorization-mode=Node,RBAC \
  --service-account-issuer=https://kubernetes.default.svc \
  --service-account-key-file="$pki/sa.key" \
  --service-account-signing-key-file="$pki/sa.key" \
  --service-cluster-ip-range=10.96.0.0/16 \
  --endpoint-reconciler-type=none \
  --allow-privileged=true \
  --profiling=false \
  --v="$log_v"

curl_api() { curl -sf --max-time 2 --cacert "$pki/ca.crt" -H "Authorization: Bearer $admin_token" "$api_url$1"; }
api_ready() { [[ "$(curl_api /readyz)" == ok ]]; }
wait_for "kube-apiserver ready" api_ready

# KCM and the scheduler start only after /readyz: KCM gives up if the API
# server is not healthy within a few seconds, and the scheduler's identity
# relies on the bootstrap RBAC roles, which exist once /readyz is ok.
# --authentication-skip-lookup: their delegated authn otherwise reads the
# requestheader (front-proxy) CA from kube-system, which this setup does not
# configure, and logs an error about it every few seconds forever. Requests to
# their /healthz are still authenticated with tokens via TokenReview.
kcm_kc="$state/kubeconfigs/kube-controller-manager.kubeconfig"
start kube-controller-manager "$TESTENV_KUBE_CONTROLLER_MANAGER" \
  --kubeconfig="$kcm_kc" \
  --authentication-kubeconfig="$kcm_kc" \
  --authorization-kubeconfig="$kcm_kc" \
  --authentication-skip-lookup=true \
  --bind-address=127.0.0.1 \
  --secure-port="$kcm_port" \
  --leader-elect=false \
  --controllers='*' \
  --service-account-private-key-file="$pki/sa.key" \
  --root-ca-file="$pki/ca.crt" \
  --cluster-signing-cert-file="$pki/ca.crt" \
  --cluster-signing-key-file="$pki/ca.key" \
  --node-monitor-period=2s \
  --node-monitor-grace-period="${TESTENV_NODE_MONITOR_GRACE:-20s}" \
  --kube-api-qps=100 \
  --kube-api-burst=200 \
  --profiling=false \
  --v="$log_v"

sched_kc="$state/kubeconfigs/kube-scheduler.kubeconfig"
start kube-scheduler "$TESTENV_KUBE_SCHEDULER" \
  --kubeconfig="$sched_kc" \
  --authentication-kubeconfig="$sched_kc" \
  --authorization-kubeconfig="$sched_kc" \
  --authentication-skip-lookup=true \
  --bind-address=127.0.0.1 \
  --secure-port="$sched_port" \
  --leader-elect=false \
  --profiling=false \
  --v="$log_v"

# Pod CIDR apart from the service range so pod and service IPs never collide.
start kwok "$TESTENV_KWOK" \
  --kubeconfig="$state/kubeconfigs/kwok.kubeconfig" \
  --manage-all-nodes=false \
  --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
  --config="$TESTENV_KWOK_STAGES" \
  --server-address="127.0.0.1:$kwok_port" \
  --node-lease-duration-seconds=40 \
  --cidr=10.244.0.0/16 \
  --node-ip=10.1.0.1 \
  --v="$log_v"

# --- readiness probes --------------------------------------------------------
kubectl() { "$TESTENV_KUBECTL" --kubeconfig="$state/kubeconfig" --request-timeout=5s "$@"; }
probe_ns="testenv-probe-$(openssl rand -hex 4)"
probe_node="testenv-probe-node"
# The probe node is tainted so that nothing but the probe pod ever lands on it,
# even if a test starts creating pods before this script's cleanup finished.
cat >"$state/probe.yaml" <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: $probe_ns
---
apiVersion: v1
kind: Node
metadata:
  name: $probe_node
  annotations:
    kwok.x-k8s.io/node: fake
  labels:
    kubernetes.io/hostname: $probe_node
    type: kwok
spec:
  taints:
  - key: testenv.vpsie.com/probe
    effect: NoSchedule
status:
  capacity: {cpu: "1", memory: 1Gi, pods: "10"}
  allocatable: {cpu: "1", memory: 1Gi, pods: "10"}
EOF
wait_for "probe namespace and node created" kubectl apply -f "$state/probe.yaml"

sa_exists() { kubectl -n "$probe_ns" get serviceaccount default; }
wait_for "kube-controller-manager created the default ServiceAccount" sa_exists

node_ready() {
  [[ "$(kubectl get node "$probe_node" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}')" == True ]]
}
wait_for "kwok made $probe_node Ready" node_ready

cat >"$state/probe-pod.yaml" <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: probe
  namespace: $probe_ns
spec:
  nodeSelector:
    kubernetes.io/hostname: $probe_node
  tolerations:
  - key: testenv.vpsie.com/probe
    operator: Exists
    effect: NoSchedule
  containers:
  - name: probe
    image: registry.k8s.io/pause:3.10
EOF
wait_for "probe pod created" kubectl create -f "$state/probe-pod.yaml"
pod_running() {
  [[ "$(kubectl -n "$probe_ns" get pod probe -o 'jsonpath={.spec.nodeName}/{.status.phase}')" == "$probe_node/Running" ]]
}
wait_for "kube-scheduler bound the probe pod and kwok runs it" pod_running

# The pod goes first, while kwok still manages its node and completes the
# deletion at once; deleted after its node it would wait for the pod GC's
# orphan quarantine and hold up the namespace. Node and namespace finish in
# the background; tests never see either.
kubectl -n "$probe_ns" delete pod probe --timeout=20s >/dev/null
kubectl delete node "$probe_node" --wait=false >/dev/null
kubectl delete namespace "$probe_ns" --wait=false >/dev/null

# --- results -----------------------------------------------------------------
{
  echo "# Generated by testenv/up.sh; source it (values are shell-quoted)."
  for kv in \
    "KUBECONFIG=$state/kubeconfig" \
    "TESTENV_STATE_DIR=$state" \
    "TESTENV_API_URL=$api_url" \
    "TESTENV_ADMIN_TOKEN=$admin_token" \
    "TESTENV_CA_FILE=$pki/ca.crt" \
    "TESTENV_BIN_DIR=$(dirname "$TESTENV_KUBECTL")" \
    "TESTENV_KUBECTL=$TESTENV_KUBECTL" \
    "TESTENV_HELM=$TESTENV_HELM" \
    "TESTENV_PROMTOOL=$TESTENV_PROMTOOL" \
    "TESTENV_KUBE_VERSION=$TESTENV_KUBE_VERSION" \
    "TESTENV_ETCD_URL=http://127.0.0.1:$etcd_port" \
    "TESTENV_LOG_DIR=$state/logs"; do
    printf 'export %s=%q\n' "${kv%%=*}" "${kv#*=}"
  done
} >"$state/env.tmp"
mv -f "$state/env.tmp" "$state/env"
ok=1
log "control plane up in ${SECONDS}s: . $state/env"
printf '%s\n' "$state/env"
