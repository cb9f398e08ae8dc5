#!/usr/bin/env bash
# Runs every generator whose output is committed: deepcopy functions for the
# API types, the CRD, RBAC and webhook manifests under config/ (markers in
# the Go sources are the source of truth), the chart's CRDs, the CRD field
# reference in docs/api.md, and the chart's values.schema.json and README
# values table (the comments of values.yaml are their source). `make
# generate manifests` and hack/verify.sh call it; never edit its outputs by
# hand.
set -euo pipefail
cd "$(dirname "$0")/.."

controller_gen=(go tool controller-gen)

# Deepcopy for api/.
"${controller_gen[@]}" object:headerFile=hack/boilerplate.go.txt paths=./api/...

# CRDs.
rm -rf config/crd/bases
"${controller_gen[@]}" crd paths=./api/... output:crd:artifacts:config=config/crd/bases

# The operator's own ClusterRole, from the +kubebuilder:rbac markers of the
# operator's packages. The sidecar's ClusterRole lives in its own package so
# that its rules never leak into the operator's role.
operator_pkgs="$(go list ./cmd/operator/... ./internal/operator/... | grep -v '/sidecarrole$' | sed 's#^github.com/kalpc/kalpc#.#' | paste -sd';' -)"
rm -f config/rbac/role.yaml config/rbac/sidecar_role.yaml
"${controller_gen[@]}" rbac:roleName=kalpc-operator,fileName=role.yaml "paths=${operator_pkgs}" output:rbac:artifacts:config=config/rbac
"${controller_gen[@]}" rbac:roleName=kalpc-sidecar,fileName=sidecar_role.yaml paths=./internal/operator/sidecarrbac/sidecarrole output:rbac:artifacts:config=config/rbac

# The pod injection webhook's MutatingWebhookConfiguration.
rm -rf config/webhook/manifests.yaml
"${controller_gen[@]}" webhook paths=./internal/operator/inject/... output:webhook:artifacts:config=config/webhook

# The Helm chart's CRD templates, from config/crd/bases.
hack/chart-crds.sh

# The field reference in docs/api.md (between its crd-docs markers), from the CRD.
go run ./hack/crd-docs -crd config/crd/bases/kalpc.io_connectionports.yaml -doc docs/api.md

# The chart's values.schema.json and the values table of its README, from
# the "# --" and "# @schema" comments of values.yaml.
go run ./hack/values-schema -values charts/kalpc/values.yaml -schema charts/kalpc/values.schema.json -readme charts/kalpc/README.md
