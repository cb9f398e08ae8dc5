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

build_kube_apiserver() {
  local work; work="$(mktemp -d)"
  trap 'rm -rf "${work}"' RETURN
  log "building kube-apiserver v${K8S_VERSION} (about 3 minutes cold)"
  local gomod
  gomod="$(cd "${work}" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@v${K8S_VERSION}" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
  [ -f "${gomod}" ] || { log "could not fetch k8s.io/kubernetes@v${K8S_VERSION} go.mod"; return 1; }
  # Every staging module kubernetes replaces with ./staging/... gets pinned to
  # the matching published v0.x tag.
  local staging
  staging="$(sed -n 's#^[[:space:]]*\(k8s.io/[^ ]*\) => ./staging/.*#\1#p' "${gomod}" | sort -u)"
  [ -n "${staging}" ] || { log "no staging modules found in ${gomod}"; return 1; }
  {
    echo "module kalpc.io/envtest-apiserver"
    echo "go 1.26.0"
    echo "require k8s.io/kubernetes v${K8S_VERSION}"
    for m in ${staging}; do echo "replace ${m} => ${m} v0.${K8S_VERSION#1.}"; done
  } > "${work}/go.mod"
  (cd "${work}" && GOFLAGS=-mod=mod go mod tidy >/dev/null 2>&1 || true
   cat > tools.go <<'GO'
//go:build tools

package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
GO
   GOFLAGS=-mod=mod go get "k8s.io/kubernetes/cmd/kube-apiserver@v${K8S_VERSION}" >/dev/null
   CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath \
     -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=v${K8S_VERSION} -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${K8S_VERSION#1.} -X k8s.io/client-go/pkg/version.gitVersion=v${K8S_VERSION}" \
     -o "${out}/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver)
  mv "${out}/kube-apiserver.tmp" "${out}/kube-apiserver"
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
