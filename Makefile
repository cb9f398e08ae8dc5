# kalpc — developer entry points. `make help` lists the targets.

SHELL := /usr/bin/env bash -o pipefail
.DEFAULT_GOAL := help

GO            ?= go
BIN           := $(CURDIR)/bin
GOLANGCI_LINT_VERSION := v2.15.0
GOLANGCI_LINT := $(BIN)/golangci-lint-$(GOLANGCI_LINT_VERSION)
# FUZZTIME bounds each fuzz target in `make test` (CI); `make fuzz` runs longer.
FUZZTIME      ?= 10s
BENCHTIME     ?= 2s
# BENCH_FLAGS are extra kalpc-bench flags for bench-harness and bench-report
# (e.g. BENCH_FLAGS=-quick, or BENCH_FLAGS='-sizes 64,16MiB -cpuprofile _out/pprof').
BENCH_FLAGS   ?=
# ENVTEST_GO_TEST runs go test with -race against envtest's API server
# (kube-apiserver and etcd from hack/envtest-bins.sh, built by `make envtest`).
ENVTEST_GO_TEST = KUBEBUILDER_ASSETS="$$(hack/envtest-bins.sh)" $(GO) test -race -count=1
export GOFLAGS := -buildvcs=false

# Images: one per shipped command (kalpc-operator, kalpc-sidecar,
# kalpc-nodeprep), built from static binaries.
COMMANDS         := operator sidecar nodeprep
# The kubectl plugin: a client binary, shipped as a binary and not as an image.
PLUGIN           := kubectl-kalpc
# Example images (examples/<name>, image kalpc-<name>) for the local cluster.
EXAMPLES         := k8s-echo echo blob region grpc
ARCH             ?= amd64
VERSION          ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION         ?= $(shell git rev-parse HEAD 2>/dev/null)
# Every timestamp in the images; the last commit's time makes them reproducible.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
IMAGE_REGISTRY   ?= ghcr.io/kalpc
IMAGE_TAG        ?= $(VERSION)
IMAGE_SOURCE     ?= https://github.com/kalpc/kalpc
PLUGIN_LDFLAGS   := -X github.com/kalpc/kalpc/internal/plugin.version=$(VERSION)

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} /^[a-zA-Z0-9_-]+:.*?##/ { printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: build
build: ## Build every package and command.
	$(GO) build ./...

.PHONY: demo
demo: ## kalpc's demo: a local single-node cluster (or KUBECONFIG), the chart, and two pods talking through kalpc (root).
	hack/local-cluster/demo

.PHONY: demo-local
demo-local: ## The same model without Kubernetes: a server and two client processes talking through a kalpc port.
	$(GO) run ./examples/echo demo

.PHONY: test
test: envtest ## Run all tests with -race (uses real processes, sockets, memfds and API server), then fuzz briefly.
	$(ENVTEST_GO_TEST) -timeout 20m ./...
	$(MAKE) fuzz FUZZTIME=$(FUZZTIME)

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME each (default 10s; try FUZZTIME=10m).
	hack/fuzz.sh $(FUZZTIME)

.PHONY: chaos
chaos: ## Kill peers with SIGKILL at random points, ITERATIONS times (default 10000), checking for leaks.
	KALPC_CHAOS_ITERATIONS=$(or $(ITERATIONS),10000) $(GO) test -race -count=1 -timeout 0 -run '^TestChaos$$' -v ./pkg/alpc/

.PHONY: soak
soak: ## Random traffic (0-64 MiB), connects and kills for DURATION (default 10m); fails on growth.
	KALPC_SOAK_DURATION=$(or $(DURATION),10m) $(GO) test -race -count=1 -timeout 0 -run '^TestSoak$$' -v ./pkg/alpc/

.PHONY: bench
bench: ## Run the Go benchmarks (kalpc against its baselines, in one run).
	$(GO) test -run '^$$' -bench . -benchtime $(BENCHTIME) ./pkg/...

.PHONY: bench-harness
bench-harness: ## Run the kalpc-bench harness (two network namespaces when root) into _out/bench; add flags with BENCH_FLAGS.
	$(GO) build -o _out/kalpc-bench ./cmd/kalpc-bench
	_out/kalpc-bench -out _out/bench $(BENCH_FLAGS)

.PHONY: bench-report
bench-report: ## Run the full kalpc-bench harness (3 rounds, ~5 min) and update docs/performance.md and docs/bench/ (commit them).
	$(GO) build -o _out/kalpc-bench ./cmd/kalpc-bench
	_out/kalpc-bench -rounds 3 -out docs/bench -update-doc docs/performance.md $(BENCH_FLAGS)

.PHONY: lint
lint: $(GOLANGCI_LINT) ## Run golangci-lint (pinned, installed into bin/).
	$(GOLANGCI_LINT) run ./...

.PHONY: verify
verify: ## Fail if generated files, go.mod or formatting drift from what the tools produce, or pkg/alpc stops building for macOS or Windows.
	hack/verify.sh

.PHONY: generate
generate: ## Generate deepcopy functions, the CRD, RBAC and webhook manifests under config/, the chart's CRDs, and the chart's values schema and README table from values.yaml (hack/generate.sh).
	hack/generate.sh

.PHONY: manifests
manifests: generate ## Regenerate config/crd, config/rbac, config/webhook and charts/kalpc/templates/crds from the Go markers (same as generate).

.PHONY: test-operator
test-operator: envtest ## Run the API and operator tests against a real API server (envtest), with -race.
	$(ENVTEST_GO_TEST) -timeout 10m ./api/... ./internal/operator/... ./cmd/operator/...

.PHONY: test-sidecar
test-sidecar: envtest ## Run the sidecar tests: control protocol, node directory, and real pods in network namespaces against a real API server (root).
	$(ENVTEST_GO_TEST) -timeout 5m ./internal/ctl/... ./internal/sidecar/... ./cmd/sidecar/...

.PHONY: test-skew
test-skew: envtest ## Run the version-skew tests: the previous release's library and sidecar (internal/skew.PreviousRelease, built from git) against this tree's, both ways (root for the sidecars).
	KALPC_REQUIRE_SKEW=1 $(ENVTEST_GO_TEST) -timeout 10m -run '^TestVersionSkew' -v ./pkg/alpc/ ./cmd/sidecar/

.PHONY: run-operator
run-operator: ## Run the operator against the current kubeconfig (SIDECAR_IMAGE sets --sidecar-image).
	$(GO) run ./cmd/operator --sidecar-image=$${SIDECAR_IMAGE:-kalpc/sidecar:dev} --metrics-secure=false

.PHONY: plugin
plugin: ## Build the kubectl plugin for this machine into _out/bin/kubectl-kalpc (put it on PATH: kubectl kalpc).
	@mkdir -p _out/bin
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w $(PLUGIN_LDFLAGS)" -o _out/bin/$(PLUGIN) ./cmd/$(PLUGIN)

.PHONY: install-plugin
install-plugin: ## go install the kubectl plugin into $$GOBIN (or $$GOPATH/bin), which should be on PATH.
	CGO_ENABLED=0 $(GO) install -trimpath -ldflags "-s -w $(PLUGIN_LDFLAGS)" ./cmd/$(PLUGIN)

.PHONY: test-plugin
test-plugin: envtest ## Run the kubectl plugin tests: ports/describe against envtest, connections against real sidecars (root).
	$(ENVTEST_GO_TEST) -timeout 5m ./internal/plugin/...
	$(ENVTEST_GO_TEST) -timeout 5m -run 'TestConnectionsEndpoint|TestKubectlConnections|TestDebugEndpointAuth' ./cmd/sidecar/

.PHONY: envtest
envtest: ## Build (once) kube-apiserver and etcd for envtest into bin/envtest.
	@hack/envtest-bins.sh >/dev/null

##@ Images and chart

.PHONY: binaries
binaries: ## Build static linux binaries (ARCH, default amd64) of the shipped commands and the kubectl plugin into _out/bin/.
	@mkdir -p _out/bin/linux_$(ARCH)
	for c in $(COMMANDS); do \
	  CGO_ENABLED=0 GOOS=linux GOARCH=$(ARCH) $(GO) build -trimpath -ldflags "-s -w -buildid=" \
	    -o _out/bin/linux_$(ARCH)/kalpc-$$c ./cmd/$$c || exit 1; \
	done
	CGO_ENABLED=0 GOOS=linux GOARCH=$(ARCH) $(GO) build -trimpath -ldflags "-s -w -buildid= $(PLUGIN_LDFLAGS)" \
	  -o _out/bin/linux_$(ARCH)/$(PLUGIN) ./cmd/$(PLUGIN)

.PHONY: image
image: binaries ## Build an image tarball per command into _out/images/ without Docker (hack/image); load with docker/kind/podman.
	@mkdir -p _out/images
	for c in $(COMMANDS); do \
	  $(GO) run ./hack/image --binary _out/bin/linux_$(ARCH)/kalpc-$$c --arch $(ARCH) \
	    --description "kalpc $$c" --vendor kalpc --source $(IMAGE_SOURCE) --version $(VERSION) --revision "$(REVISION)" --epoch $(SOURCE_DATE_EPOCH) \
	    --tag $(IMAGE_REGISTRY)/kalpc-$$c:$(IMAGE_TAG) --out _out/images/kalpc-$$c.tar || exit 1; \
	done

.PHONY: docker-build
docker-build: ## Build the images with Docker (BuildKit) from the Dockerfile instead.
	for c in $(COMMANDS); do \
	  docker build --target $$c --build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) \
	    --build-arg SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) -t $(IMAGE_REGISTRY)/kalpc-$$c:$(IMAGE_TAG) . || exit 1; \
	done

.PHONY: kind-load
kind-load: image ## Load the image tarballs into a kind cluster (KIND_CLUSTER, default "kind").
	for c in $(COMMANDS); do kind load image-archive _out/images/kalpc-$$c.tar --name $${KIND_CLUSTER:-kind} || exit 1; done

.PHONY: test-chart
test-chart: envtest ## Run the chart, image and node preparation tests (real helm install into envtest), with -race.
	$(ENVTEST_GO_TEST) -timeout 20m ./test/chart/... ./hack/image/... ./cmd/nodeprep/... ./internal/nodeprep/...

.PHONY: example-images
example-images: ## Build image tarballs of the examples in EXAMPLES (examples/<name>, image kalpc-<name>) into _out/images/, like `make image`.
	@mkdir -p _out/bin/linux_$(ARCH) _out/images
	for e in $(EXAMPLES); do \
	  CGO_ENABLED=0 GOOS=linux GOARCH=$(ARCH) $(GO) build -trimpath -ldflags "-s -w -buildid=" \
	    -o _out/bin/linux_$(ARCH)/kalpc-$$e ./examples/$$e || exit 1; \
	  $(GO) run ./hack/image --binary _out/bin/linux_$(ARCH)/kalpc-$$e --arch $(ARCH) \
	    --description "kalpc example $$e" --vendor kalpc --source $(IMAGE_SOURCE) --version $(VERSION) --revision "$(REVISION)" --epoch $(SOURCE_DATE_EPOCH) \
	    --tag $(IMAGE_REGISTRY)/kalpc-$$e:$(IMAGE_TAG) --out _out/images/kalpc-$$e.tar || exit 1; \
	done

##@ Local cluster (root, Debian; see docs/local-cluster.md)

.PHONY: cluster-up
cluster-up: ## Start (or check) the single-node local cluster: etcd, control plane, containerd, kubelet, kube-proxy, CoreDNS.
	hack/local-cluster/up

.PHONY: cluster-down
cluster-down: ## Stop the local cluster and remove everything it left (state, bridge, iptables rules, mounts, cgroups).
	hack/local-cluster/down

.PHONY: demo-cluster
demo-cluster: ## The demo on a real node: local cluster (or KUBECONFIG), images, chart, a server and a client pod talking through kalpc.
	hack/local-cluster/demo

.PHONY: e2e
e2e: ## Run the end-to-end suite (test/e2e) on the local cluster (or KUBECONFIG); KEEP_CLUSTER=1 leaves it running.
	$(GO) test -tags e2e -count=1 -timeout 30m -v ./test/e2e/...

##@ Tools

$(GOLANGCI_LINT):
	@mkdir -p $(BIN)
	GOBIN=$(BIN) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	mv $(BIN)/golangci-lint $@

.PHONY: clean
clean: ## Remove build outputs (keeps cached tools and envtest binaries).
	rm -rf _out
