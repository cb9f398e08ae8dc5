#!/usr/bin/env bash
# Builds the binaries of a single-node Kubernetes cluster from the Go module
# proxy (no release downloads on our machines) and caches them under
# bin/cluster/k8s-<version>/: kube-apiserver, kube-controller-manager,
# kube-scheduler, kubelet, kube-proxy, kubectl (one `go build`, about 8 minutes
# and 3 GB cold), etcd (reused from hack/envtest-bins.sh), helm and coredns.
#
# Usage: hack/local-cluster/build-bins.sh [kubernetes|etcd|helm|coredns ...]
# (default: all of them); prints the directory.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-1.37.2}"
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
COREDNS_VERSION="${COREDNS_VERSION:-v1.14.2}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="${root}/bin/cluster/k8s-${K8S_VERSION}"
mkdir -p "${out}"

log() { echo "build-bins: $*" >&2; }
# shellcheck source=../lib/kubernetes.sh
. "${root}/hack/lib/kubernetes.sh"

K8S_CMDS="kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl"

build_kubernetes() {
  local work; work="$(mktemp -d)"
  trap 'rm -rf "${work}"' RETURN
  log "building ${K8S_CMDS} v${K8S_VERSION} in one go build (about 8 minutes, 3 GB cold)"
  k8s_wrapper_mod "${work}" kalpc.io/local-cluster "${K8S_VERSION}"
  mkdir -p "${work}/out"
  # shellcheck disable=SC2086 # K8S_CMDS is a word list
  k8s_build "${work}" "${K8S_VERSION}" "${work}/out" ${K8S_CMDS}
  local c
  for c in ${K8S_CMDS}; do mv "${work}/out/${c}" "${out}/${c}"; done
}

build_etcd() {
  local envtest
  envtest="$("${root}/hack/envtest-bins.sh")"
  cp "${envtest}/etcd" "${out}/etcd.tmp" && mv "${out}/etcd.tmp" "${out}/etcd"
}

build_helm() {
  log "building helm ${HELM_VERSION} (about 90 s cold)"
  local work; work="$(mktemp -d)"
  trap 'rm -rf "${work}"' RETURN
  (cd "${work}" && CGO_ENABLED=0 GOBIN="${work}" go install -trimpath -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}")
  mv "${work}/helm" "${out}/helm"
}

build_coredns() {
  log "building coredns ${COREDNS_VERSION}"
  local work; work="$(mktemp -d)"
  trap 'rm -rf "${work}"' RETURN
  (cd "${work}" && CGO_ENABLED=0 GOBIN="${work}" go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@${COREDNS_VERSION}")
  mv "${work}/coredns" "${out}/coredns"
}

parts="${*:-kubernetes etcd helm coredns}"
for part in ${parts}; do
  case "${part}" in
  kubernetes)
    need=0
    for c in ${K8S_CMDS}; do [ -x "${out}/${c}" ] || need=1; done
    [ "${need}" = 0 ] || build_kubernetes ;;
  etcd) [ -x "${out}/etcd" ] || build_etcd ;;
  helm) [ -x "${out}/helm" ] || build_helm ;;
  coredns) [ -x "${out}/coredns" ] || build_coredns || log "coredns build failed; the cluster runs without DNS" ;;
  *) log "unknown part ${part}"; exit 2 ;;
  esac
done
echo "${out}"
