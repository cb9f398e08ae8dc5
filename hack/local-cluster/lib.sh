# Shared settings of hack/local-cluster/{up,down,load-images}. Sourced, not run.
# Every setting can be overridden from the environment.

K8S_VERSION="${K8S_VERSION:-1.37.2}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# Everything the cluster writes lives under STATE (removed by down) and RUN
# (sockets and PIDs); binaries are cached under bin/cluster/.
STATE="${KALPC_CLUSTER_STATE:-/var/lib/kalpc-local-cluster}"
RUN="${KALPC_CLUSTER_RUN:-/run/kalpc-local-cluster}"
BIN="${ROOT}/bin/cluster/k8s-${K8S_VERSION}"
# The pause and CoreDNS image tarballs (built once).
IMAGES="${ROOT}/bin/cluster/images"
NODE_NAME="${KALPC_CLUSTER_NODE:-kalpc-local}"
POD_CIDR="${KALPC_CLUSTER_POD_CIDR:-10.244.0.0/24}"
POD_GW="${POD_CIDR%.*}.1"
SERVICE_CIDR="${KALPC_CLUSTER_SERVICE_CIDR:-10.96.0.0/16}"
API_SERVICE_IP="${KALPC_CLUSTER_API_SERVICE_IP:-10.96.0.1}"
DNS_SERVICE_IP="${KALPC_CLUSTER_DNS_SERVICE_IP:-10.96.0.10}"
BRIDGE="${KALPC_CLUSTER_BRIDGE:-kalpc-br0}"
CNI_NET="kalpc-local"
ETCD_PORT="${KALPC_CLUSTER_ETCD_PORT:-23790}"
API_PORT="${KALPC_CLUSTER_API_PORT:-6443}"
CONTAINERD_SOCK="${RUN}/containerd.sock"
# The filter chain holding the rule that keeps pod traffic on this machine.
FW_CHAIN="KALPC-LOCAL-CLUSTER"
PAUSE_IMAGE="localhost/kalpc-local-cluster/pause:3.10"
COREDNS_IMAGE="localhost/kalpc-local-cluster/coredns:dev"
KUBECONFIG_OUT="${STATE}/admin.kubeconfig"
DAEMONS="etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy"

# The node's IP: the IPv4 address of the interface of the default route
# (traffic to it from pods is delivered locally, never forwarded).
node_ip() {
  if [ -n "${KALPC_CLUSTER_NODE_IP:-}" ]; then echo "${KALPC_CLUSTER_NODE_IP}"; return; fi
  local dev
  dev="$(ip -4 route show default | awk '{for (i=1;i<NF;i++) if ($i=="dev") {print $(i+1); exit}}')"
  [ -n "${dev}" ] || dev="$(ip -4 -o addr show scope global | awk '{print $2; exit}')"
  ip -4 -o addr show dev "${dev}" scope global | awk '{split($4,a,"/"); print a[1]; exit}'
}

t0="${t0:-$(date +%s)}"
log() { printf '[%4ss] %s\n' "$(( $(date +%s) - t0 ))" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

pid_of() { cat "${RUN}/$1.pid" 2>/dev/null || true; }
alive() { local p; p="$(pid_of "$1")"; [ -n "${p}" ] && kill -0 "${p}" 2>/dev/null; }

kc() { "${BIN}/kubectl" --kubeconfig "${KUBECONFIG_OUT}" "$@"; }
ctr_() { ctr --address "${CONTAINERD_SOCK}" -n k8s.io "$@"; }
