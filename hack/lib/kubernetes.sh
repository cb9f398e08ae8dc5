# Shared by hack/envtest-bins.sh and hack/local-cluster/build-bins.sh: how to
# build Kubernetes commands from the Go module proxy (no release downloads on
# our machines). Sourced, not run.

# k8s_wrapper_mod DIR MODULE VERSION writes DIR/go.mod for a scratch module
# named MODULE that requires k8s.io/kubernetes vVERSION, with every staging
# module kubernetes replaces with ./staging/... (including
# k8s.io/cri-streaming) pinned to its published v0.x tag.
k8s_wrapper_mod() {
  local dir="$1" module="$2" version="$3" gomod staging m
  gomod="$(cd "${dir}" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@v${version}" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
  if [ ! -f "${gomod}" ]; then
    echo "could not fetch the go.mod of k8s.io/kubernetes@v${version}" >&2
    return 1
  fi
  staging="$(sed -n 's#^[[:space:]]*\(k8s.io/[^ ]*\) => ./staging/.*#\1#p' "${gomod}" | sort -u)"
  if [ -z "${staging}" ]; then
    echo "no staging modules found in ${gomod}" >&2
    return 1
  fi
  {
    echo "module ${module}"
    echo "go 1.26.0"
    echo "require k8s.io/kubernetes v${version}"
    for m in ${staging}; do echo "replace ${m} => ${m} v0.${version#1.}"; done
  } > "${dir}/go.mod"
}

# k8s_build DIR VERSION OUTDIR CMD... builds k8s.io/kubernetes/cmd/CMD for
# each CMD in one `go build` (shared compilation) into OUTDIR, inside the
# scratch module in DIR. The version stamps matter: without them the binaries
# report v0.0.0-master, which breaks Helm's kubeVersion checks.
k8s_build() {
  local dir="$1" version="$2" outdir="$3" c
  shift 3
  local pkgs=()
  {
    echo "//go:build tools"; echo; echo "package tools"; echo
    for c in "$@"; do echo "import _ \"k8s.io/kubernetes/cmd/${c}\""; done
  } > "${dir}/tools.go"
  for c in "$@"; do pkgs+=("k8s.io/kubernetes/cmd/${c}"); done
  (cd "${dir}" &&
    GOFLAGS=-mod=mod go get "k8s.io/kubernetes@v${version}" >/dev/null &&
    { GOFLAGS=-mod=mod go mod tidy >/dev/null 2>&1 || true; } &&
    CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath \
      -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=v${version} -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${version#1.} -X k8s.io/component-base/version.gitTreeState=clean -X k8s.io/client-go/pkg/version.gitVersion=v${version} -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=${version#1.}" \
      -o "${outdir}/" "${pkgs[@]}")
}
