#!/usr/bin/env bash
# Builds the envtest control-plane binaries (kube-apiserver, etcd) from the Go
# module proxy and caches them under bin/envtest/<k8s-version>/. setup-envtest
# cannot download release tarballs on our machines, so we compile them.
#
# Usage: hack/envtest-bins.sh        # prints the directory to use as KUBEBUILDER_ASSETS
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-3.7.3}"
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${root}/bin/envtest/k8s-${K8S_VERSION}-etcd-${ETCD_VERSION}"
mkdir -p "${out}"

log() { echo "envtest-bins: $*" >&2; }
# shellcheck source=lib/kubernetes.sh
. "${root}/hack/lib/kubernetes.sh"

build_kube_apiserver() {
  # The local cluster's build (hack/local-cluster/build-bins.sh) makes the same
  # kube-apiserver; reuse it when it is there (CI builds the cluster first).
  local cluster="${root}/bin/cluster/k8s-${K8S_VERSION}/kube-apiserver"
  if [ -x "${cluster}" ]; then
    log "reusing ${cluster#"${root}/"}"
    cp "${cluster}" "${out}/kube-apiserver.tmp" && mv "${out}/kube-apiserver.tmp" "${out}/kube-apiserver"
    return
  fi
  local work; work="$(mktemp -d)"
  trap 'rm -rf "${work}"' RETURN
  log "building kube-apiserver v${K8S_VERSION} (about 3 minutes cold)"
  k8s_wrapper_mod "${work}" kalpc.io/envtest-apiserver "${K8S_VERSION}"
  k8s_build "${work}" "${K8S_VERSION}" "${work}" kube-apiserver
  mv "${work}/kube-apiserver" "${out}/kube-apiserver"
}

build_etcd() {
  local work; work="$(mktemp -d)"
  trap 'rm -rf "${work}"' RETURN
  log "building etcd v${ETCD_VERSION}"
  {
    echo "module kalpc.io/envtest-etcd"
    echo "go 1.26.0"
    echo "require go.etcd.io/etcd/server/v3 v${ETCD_VERSION}"
    for m in api/v3 client/pkg/v3 client/v3 pkg/v3 server/v3; do
      echo "replace go.etcd.io/etcd/${m} => go.etcd.io/etcd/${m} v${ETCD_VERSION}"
    done
  } > "${work}/go.mod"
  (cd "${work}" && cat > tools.go <<'GO'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GO
   GOFLAGS=-mod=mod go get "go.etcd.io/etcd/server/v3@v${ETCD_VERSION}" >/dev/null
   CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "${out}/etcd.tmp" go.etcd.io/etcd/server/v3)
  mv "${out}/etcd.tmp" "${out}/etcd"
}

[ -x "${out}/etcd" ] || build_etcd
[ -x "${out}/kube-apiserver" ] || build_kube_apiserver
# envtest also looks for kubectl; it is optional for our tests.
echo "${out}"
