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

K8S_CMDS="kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl"

build_kubernetes() {
  local work; work="$(mktemp -d)"
  trap 'rm -rf "${work}"' RETURN
  log "building ${K8S_CMDS} v${K8S_VERSION} in one go build (about 8 minutes, 3 GB cold)"
  local gomod
  gomod="$(cd "${work}" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@v${K8S_VERSION}" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
  [ -f "${gomod}" ] || { log "could not fetch k8s.io/kubernetes@v${K8S_VERSION} go.mod"; return 1; }
  # Every staging module (including k8s.io/cri-streaming) is pinned to its
  # published v0.x tag.
  local staging
  staging="$(sed -n 's#^[[:space:]]*\(k8s.io/[^ ]*\) => ./staging/.*#\1#p' "${gomod}" | sort -u)"
  [ -n "${staging}" ] || { log "no staging modules found in ${gomod}"; return 1; }
  {
    echo "module kalpc.io/local-cluster"
    echo "go 1.26.0"
    echo "require k8s.io/kubernetes v${K8S_VERSION}"
    for m in ${staging}; do echo "replace ${m} => ${m} v0.${K8S_VERSION#1.}"; done
  } > "${work}/go.mod"
  local pkgs=() c
  {
    echo "//go:build tools"; echo; echo "package tools"; echo
    for c in ${K8S_CMDS}; do
      if [ "$c" = kubectl ]; then echo "import _ \"k8s.io/kubernetes/cmd/kubectl\""; else echo "import _ \"k8s.io/kubernetes/cmd/${c}\""; fi
    done
  } > "${work}/tools.go"
  for c in ${K8S_CMDS}; do pkgs+=("k8s.io/kubernetes/cmd/${c}"); done
  (cd "${work}"
   GOFLAGS=-mod=mod go get "k8s.io/kubernetes@v${K8S_VERSION}" >/dev/null
   GOFLAGS=-mod=mod go mod tidy >/dev/null 2>&1 || true
   mkdir -p "${work}/out"
   # Without the version stamps the binaries report v0.0.0-master, which
   # breaks Helm's kubeVersion checks.
   CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath \
     -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=v${K8S_VERSION} -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${K8S_VERSION#1.} -X k8s.io/component-base/version.gitTreeState=clean -X k8s.io/client-go/pkg/version.gitVersion=v${K8S_VERSION} -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=${K8S_VERSION#1.}" \
     -o "${work}/out/" "${pkgs[@]}")
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
